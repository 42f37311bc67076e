"""Spline-FC's question over a set of runs: does a MARS initialisation reach a test target sooner than a random one?

Runs that differ in ``model.init`` (random, mars) and seeds, and perhaps in other settings (width,
optimiser), are grouped by everything else that varies. For each group, init and target this module
counts how many runs reach the target and how many epochs and seconds of wall time they need (the first
checkpoint at or past it), and gives the final test numbers with their spread over seeds::

    import stabilityscope as ss

    table = ss.init_comparison.compare_inits("checkpoints/multirun/<stamp>", targets=("mars", 4.7))
    figures.plot_init_comparison("checkpoints/multirun/<stamp>")

**Targets.** ``"mars"`` is the MARS model's own test score, read from the spline-initialised runs'
trace attrs (``mars_test_mse`` for a regression, ``mars_test_acc`` for a classification; the fit is
deterministic, so every such run of a group holds the same value): the random runs must reach what the
spline fit gives at step 0. A number is a fixed target in the compared metric's units.

**Metric.** Regression runs compare the test MSE (``test_loss``; reached at or below the target);
classification runs the test accuracy (``test_acc``; at or above), since the MARS fit's own score on
one-hot targets is an accuracy, not a cross-entropy.

**Wall time.** A spline-initialised run's checkpoint 0 sits at the fit's seconds (the trainer starts
its clock before the fit), so wall times include the MARS fit. Both inits pay the same per-checkpoint
measuring cost (identical models), and wall time depends on the machine's load: compare runs made
together. Spread is the sample standard deviation over the runs that reached the target (epochs and
seconds) or over all runs (final numbers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from stabilityscope.analysis.collection import Source, find_traces, flatten_config, varying_config
from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import Trace, config_section, open_trace

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["InitCurve", "compare_inits", "comparison_groups", "init_curves", "markdown_table", "time_to_target"]

Target = Union[str, float]
SEPARATE = ("model.init", "train.seed")  # what a group's runs may differ in


@dataclass(frozen=True)
class InitCurve:
    """One run's test numbers over checkpoints and what identifies it."""

    path: str
    init: str  # random or mars
    seed: int
    config: dict[str, Any]  # the flattened config
    epoch: np.ndarray  # (n,) fractional epochs
    wall_time: np.ndarray  # (n,) seconds (a MARS run's start at its fit's seconds)
    test_loss: np.ndarray  # (n,) MSE (regression) or cross-entropy
    score: np.ndarray  # (n,) test R² (regression) or test accuracy
    regression: bool
    mars: dict[str, float]  # the mars_* trace attrs (empty for a random init)

    @property
    def metric(self) -> str:
        """The compared metric: ``test_loss`` (MSE, lower is better) or ``test_acc`` (higher is better)."""
        return "test_loss" if self.regression else "test_acc"

    def values(self) -> np.ndarray:
        return self.test_loss if self.regression else self.score

    def mars_target(self) -> float:
        """The MARS model's own test score in the compared metric (NaN for a random init)."""
        return float(self.mars.get("mars_test_mse" if self.regression else "mars_test_acc", math.nan))


def _curve(tr: Trace) -> InitCurve:
    cfg = tr.config or {}
    regression = tr.is_regression
    init = str(config_section(cfg, "model").get("init", "random"))
    seed = int(config_section(cfg, "train").get("seed", tr.attrs.get("seed", -1)))
    mars = {k: float(v) for k, v in tr.attrs.items() if k.startswith("mars_")}
    return InitCurve(str(tr.path), init, seed, flatten_config(cfg), tr.epoch_fraction.astype(float),
                     tr.wall_time.astype(float), tr.metric("test_loss").astype(float),
                     tr.metric("test_r2" if regression else "test_acc").astype(float), regression, mars)


def init_curves(source: Union[Source, Sequence[InitCurve]]) -> list[InitCurve]:
    """The curves of every run ``source`` names (a sweep directory, a glob, traces; see ``find_traces``).

    Raises:
        TraceError: no trace, a trace without checkpoints, or a mix of regression and classification runs.
    """
    if isinstance(source, (list, tuple)) and source and all(isinstance(c, InitCurve) for c in source):
        return list(source)
    curves = []
    for path in find_traces(source):
        with open_trace(path) as tr:
            if len(tr) == 0:
                raise TraceError(f"{path} has no checkpoint; an init comparison needs every run's test curve.")
            curves.append(_curve(tr))
    if len({c.regression for c in curves}) > 1:
        raise TraceError("The runs mix regression (MSE) and classification (cross-entropy) traces; compare one kind.")
    return curves


def comparison_groups(curves: Sequence[InitCurve]) -> dict[tuple, list[InitCurve]]:
    """Curves keyed by the values of the config keys that vary between runs, other than init and seed.

    The key is a tuple of (key, value) pairs, () when only init and seed vary.
    """
    keys = [k for k in varying_config([c.config for c in curves]) if k not in SEPARATE]
    groups: dict[tuple, list[InitCurve]] = {}
    for c in curves:
        groups.setdefault(tuple((k, c.config.get(k)) for k in keys), []).append(c)
    return dict(sorted(groups.items(), key=lambda kv: repr(kv[0])))


def time_to_target(curve: InitCurve, target: float) -> tuple[float, float]:
    """(epoch, seconds) of the first checkpoint whose metric reaches ``target`` (≤ for MSE, ≥ for accuracy);
    (NaN, NaN) when no checkpoint does."""
    v = curve.values()
    hit = v <= target if curve.regression else v >= target
    hit &= np.isfinite(v)
    if not hit.any():
        return math.nan, math.nan
    i = int(np.argmax(hit))
    return float(curve.epoch[i]), float(curve.wall_time[i])


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if not len(v):
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _target_value(target: Target, group: Sequence[InitCurve]) -> float:
    if isinstance(target, str):
        if target != "mars":
            raise ValueError(f"target {target!r}: use 'mars' (the MARS model's own test score) or a number")
        values = [c.mars_target() for c in group if c.init == "mars"]
        values = [v for v in values if math.isfinite(v)]
        if not values:
            raise TraceError("target 'mars' needs spline-initialised runs (model.init=mars) with the MARS fit's test "
                             "score in their trace attrs; this group has none.")
        return float(np.median(values))
    return float(target)


def compare_inits(source: Union[Source, Sequence[InitCurve]], targets: Sequence[Target] = ("mars",)) -> "pd.DataFrame":
    """One row per (group, init, target): runs, how many reach the target, epochs and seconds to it, final numbers.

    Args:
        source: the runs (see :func:`init_curves`).
        targets: ``"mars"`` (the MARS model's own test score) and/or fixed values of the compared metric.

    Returns:
        A DataFrame with the group's varying config values, then ``init``, ``target`` (its name),
        ``target_value``, ``metric``, ``runs``, ``reached``, ``epochs_mean``, ``epochs_std``,
        ``seconds_mean``, ``seconds_std`` (over the runs that reached it), ``final_test_loss_mean``,
        ``final_test_loss_std``, ``final_score_mean``, ``final_score_std`` (R² or accuracy, over all
        runs), ``best_test_loss_mean``, ``best_test_loss_std`` and ``mars_fit_seconds`` (mean; 0 for random).
    """
    import pandas as pd

    curves = init_curves(source)
    rows = []
    for key, group in comparison_groups(curves).items():
        values = {t: _target_value(t, group) for t in targets}
        for init in sorted({c.init for c in group}, key=lambda s: (s != "random", s)):
            runs = [c for c in group if c.init == init]
            final_loss = _mean_std([float(c.test_loss[-1]) for c in runs])
            final_score = _mean_std([float(c.score[-1]) for c in runs])
            best_loss = _mean_std([float(np.nanmin(c.test_loss)) for c in runs])
            fit_s = float(np.mean([c.mars.get("mars_fit_seconds", 0.0) for c in runs]))
            for t, value in values.items():
                hits = [time_to_target(c, value) for c in runs]
                epochs = _mean_std([h[0] for h in hits])
                seconds = _mean_std([h[1] for h in hits])
                rows.append({**dict(key), "init": init, "target": str(t), "target_value": value,
                             "metric": runs[0].metric, "runs": len(runs),
                             "reached": sum(math.isfinite(h[0]) for h in hits),
                             "epochs_mean": epochs[0], "epochs_std": epochs[1], "seconds_mean": seconds[0],
                             "seconds_std": seconds[1], "final_test_loss_mean": final_loss[0],
                             "final_test_loss_std": final_loss[1], "final_score_mean": final_score[0],
                             "final_score_std": final_score[1], "best_test_loss_mean": best_loss[0],
                             "best_test_loss_std": best_loss[1], "mars_fit_seconds": fit_s})
    return pd.DataFrame(rows)


def markdown_table(table: "pd.DataFrame", digits: int = 3) -> str:
    """``table`` (from :func:`compare_inits`) as a Markdown table: mean ± std, reached counts as k/n."""

    def pm(m: float, s: float) -> str:
        return "—" if not math.isfinite(m) else f"{m:.{digits}g} ± {s:.2g}"

    group_keys = [c for c in table.columns if c not in _COLUMNS]
    head = [*group_keys, "init", "target", "reached", "epochs to target", "seconds to target",
            "final test loss", "best test loss", "final score", "MARS fit s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        cells = [str(r[k]) for k in group_keys] + [
            r["init"], f"{r['target']} ({r['target_value']:.4g})", f"{r['reached']}/{r['runs']}",
            pm(r["epochs_mean"], r["epochs_std"]), pm(r["seconds_mean"], r["seconds_std"]),
            pm(r["final_test_loss_mean"], r["final_test_loss_std"]),
            pm(r["best_test_loss_mean"], r["best_test_loss_std"]),
            pm(r["final_score_mean"], r["final_score_std"]),
            f"{r['mars_fit_seconds']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_COLUMNS = ("init", "target", "target_value", "metric", "runs", "reached", "epochs_mean", "epochs_std", "seconds_mean",
            "seconds_std", "final_test_loss_mean", "final_test_loss_std", "final_score_mean", "final_score_std",
            "best_test_loss_mean", "best_test_loss_std", "mars_fit_seconds")
