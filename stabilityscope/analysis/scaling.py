"""Scaling laws of training over a sweep of runs (EOC-training, docs/science/mean-field.md).

EOC-training trains the canonical 784-784(tanh)-10 network by SGD with momentum and finds that the
squared coupling J² of the hidden layer grows linearly in epochs while the layer is ordered, with a
slope A that scales as

    A ≈ C·η/((1−α)·B)        (η = optim.lr, α = optim.momentum, B = train.batch_size),

so that runs with equal η/((1−α)B) collapse onto one curve against the rescaled time
τ = epoch·η/((1−α)B) in the ordered phase (not in the chaotic phase), and that weight decay makes
J² saturate at a plateau that falls as the decay grows. This module measures all of it on a sweep::

    import stabilityscope as ss

    a = ss.analyze_sweep("checkpoints/multirun/2026-11-22_12-00-00")    # a sweep dir, a glob, a list
    a.runs[["lr", "momentum", "batch_size", "A", "c"]]                 # one row per run
    a.combined.C, a.combined.C_ci                                      # A = C·η/((1−α)B)
    [(f.variable, f.exponent, f.exponent_ci) for f in a.power_laws]    # each ≈ 1
    a.collapse.spread_ordered, a.collapse.spread_chaotic               # small, larger
    a.decay.weight_decay_star, a.decay.keras_l2_star                   # the decay whose plateau is J² = 1

**The toolkit's model** (our own derivation, not EOC-training's; :mod:`stabilityscope.analysis.guideline`
builds on it). Per step, SGD adds a diffusive increment c·η/(1−α) to J² (c is a property of the
data and the network) and, with momentum, weight decay shrinks W at the rate η·wd/(1−α), i.e. J²
at 2η·wd/(1−α). With n/B steps per epoch::

    dJ²/d(epoch) = ρ·(c − 2·wd·J²),      ρ = η·n/((1−α)·B).

Without decay A = ρc = C·η/((1−α)B) with C = c·n, so A per epoch grows with the number of training
examples n and c = C/n is what compares runs on data subsets with full runs. With decay, J² relaxes
exponentially (rate 2·wd·ρ per epoch) to the plateau J²∞ = c/(2·wd): the plateau is J² = 1 at
wd* = c/2 (Keras λ* = c/4). The analysis compares the measured plateaus and λ* with this.

Conventions: ``optim.weight_decay`` is PyTorch's coefficient on the weight matrices (= 2 × Keras' L2
λ, ``keras_l2 = weight_decay/2``); n is ``dataset.train_subset`` or the dataset's full size.

Choices, each a caveat:

- *Ordered phase* (the fit of A): checkpoints with epoch <= ``window`` whose mean-field stability
  χ (the trace's ``chi``) is below 1; traces without ``chi`` use J < J_c (1 for tanh).
- *Fits* use the finished (or still running) SGD runs without weight decay (decay bends J² below the
  line); failed and diverged runs are listed with their status and left out. Confidence intervals
  are t intervals of least squares in log–log space (exponents) or of the mean of log c (C, c).
- *Plateau*: the mean J² over the checkpoints in the last ``plateau_fraction`` of a run's epochs.
  A run shorter than a few relaxation times 1/(2·wd·ρ) has not reached its plateau (flagged).
- *λ\\**: where the mean plateau over seeds first falls through J² = 1 with growing decay,
  interpolating log J²∞ linearly in log decay between the two bracketing decays (exact for the
  model's power law J²∞ = c/(2·wd); near J² = 1 it equals interpolating J²∞ itself to second
  order); a bracket that starts at zero decay is interpolated linearly in decay (the zero-decay
  run has no plateau, only its final J², so such a λ* is rough). Its uncertainty: λ* of each
  seed's own curve (mean, std, t interval) and a bootstrap over seeds.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from stabilityscope.analysis.canonical import CANONICAL_C
from stabilityscope.analysis.collection import Source, find_traces, flatten_config, natural_key
from stabilityscope.analysis.decay import EXCLUDED_STATUSES, DecayAnalysis, crossing_decay, decay_analysis
from stabilityscope.analysis.runs_table import CONFIG_KEYS, RunRecord, read_runs_table, split_sources, trace_sha256
from stabilityscope.analysis.stats import jsonable, ols
from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import config_section, open_trace
from stabilityscope.theory.meanfield import critical_coupling

if TYPE_CHECKING:  # pandas and scipy are imported when an analysis is made
    import pandas as pd

__all__ = ["CollapseAnalysis", "CollapseCurves", "CombinedFit", "DecayAnalysis", "FULL_TRAIN_SIZE", "JointFit",
           "PowerLawFit", "RunCurve", "ScalingSettings", "SweepAnalysis", "analyze_sweep", "crossing_decay",
           "n_train_of", "record_from_trace"]

# Training-set sizes of the registered datasets (stabilityscope.training.data.DATASETS), for runs without a subset.
FULL_TRAIN_SIZE = {"fashion_mnist": 60000, "mnist": 60000, "cifar10": 50000, "abalone": 3133}
# The scaling variables: column name -> the x of the power law A ∝ x^p (expected p = 1 for each).
VARIABLES = ("lr", "momentum", "batch_size", "n_train")
VARIABLE_LABELS = {"lr": "η", "momentum": "1/(1−α)", "batch_size": "1/B", "n_train": "n"}
COLLAPSE_GRID = 200  # points of the common τ grid


def power_law_x(variable: str, values: np.ndarray) -> np.ndarray:
    """The power-law variable x of a column: η, 1/(1−α), 1/B or n."""
    v = np.asarray(values, dtype=float)
    if variable == "momentum":
        return 1.0 / (1.0 - v)
    if variable == "batch_size":
        return 1.0 / v
    return v


def n_train_of(config: Mapping[str, Any]) -> float:
    """Training examples of a run: ``dataset.train_subset``, else the dataset's full size (NaN if unknown)."""
    data = config_section(config, "dataset")
    full = FULL_TRAIN_SIZE.get(str(data.get("name", "")))
    subset = data.get("train_subset")
    if subset:
        return float(min(int(subset), full) if full else int(subset))
    return float(full) if full else math.nan


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class ScalingSettings:
    """What is fitted (the ``scaling`` config section; see :class:`stabilityscope.config.ScalingConfig`)."""

    layer: str = "hidden"  # the layer whose J² is fitted
    window: float = 50  # fit A over checkpoints with epoch <= window ...
    ordered_only: bool = True  # ... in the ordered phase only (χ < 1)
    plateau_fraction: float = 0.2  # plateau: mean J² over the last fraction of a run's epochs
    confidence: float = 0.95  # level of the confidence intervals
    j2_window: Optional[tuple[float, float]] = None  # ... and with J² in this range (None: any); >= 3 checkpoints

    def __post_init__(self) -> None:
        if not self.layer:
            raise ValueError("layer must name a recorded layer (the canonical network's is 'hidden').")
        if not (self.window > 0):
            raise ValueError(f"window={self.window!r}: the fit window must be a positive number of epochs.")
        if not (0 < self.plateau_fraction <= 1):
            raise ValueError(f"plateau_fraction={self.plateau_fraction!r}: must lie in (0, 1] "
                             f"(0.2 = the last fifth of the epochs).")
        if not (0 < self.confidence < 1):
            raise ValueError(f"confidence={self.confidence!r}: a confidence level lies in (0, 1), e.g. 0.95.")
        if self.j2_window is not None and not (0 <= self.j2_window[0] < self.j2_window[1]):
            raise ValueError(f"j2_window={self.j2_window!r}: a range (low, high) of J² with 0 <= low < high, "
                             f"e.g. (0.3, 0.9).")


# ------------------------------------------------------------------------------------- per-run reading


@dataclass
class RunCurve:
    """One run's J² and test metrics over checkpoints, with its rescaled time τ = epoch·η/((1−α)B)."""

    run: str
    epochs: np.ndarray
    j2: np.ndarray
    chi: Optional[np.ndarray]  # mean-field stability of the layer (None: not recorded)
    test_loss: np.ndarray
    test_acc: np.ndarray
    rate: float  # η/((1−α)B)
    weight_decay: float
    n_train: float
    edge: float  # J_c² of the layer's activation (1 for tanh)

    @property
    def tau(self) -> np.ndarray:
        return self.epochs * self.rate

    @property
    def ordered(self) -> np.ndarray:
        """Checkpoints in the ordered phase: χ < 1, else J² < J_c²."""
        return (self.chi < 1.0) if self.chi is not None else (self.j2 < self.edge)


def _plateau(epochs: np.ndarray, j2: np.ndarray, fraction: float) -> tuple[float, float]:
    """Mean and std of J² over the checkpoints in the last ``fraction`` of the epochs (at least the last)."""
    finite = np.isfinite(j2)
    if not finite.any():
        return math.nan, math.nan
    e, v = epochs[finite], j2[finite]
    keep = e >= e[-1] - fraction * (e[-1] - e[0])
    return float(v[keep].mean()), float(v[keep].std())


def record_from_trace(path: "str | Path", run: str, layer: str = "hidden", *, commit: str = "",
                      hash_trace: bool = True) -> RunRecord:
    """The record of one trace (the trace's own ``commit`` attribute, when it has one, wins over ``commit``).

    Raises:
        TraceError, OSError: the trace cannot be read.
    """
    path = Path(path)
    with open_trace(path) as tr:
        try:
            cfg = tr.config or {}
        except (KeyError, ValueError, TypeError):  # no or unparsable config attribute
            cfg = {}
        flat = flatten_config(cfg)
        n = len(tr)
        has_j = n > 0 and layer in tr.layers and "J" in tr.stats(layer)
        regression = bool(tr.is_regression) if n else False
        loss = tr.metric("test_loss").astype(float) if n else np.zeros(0)
        score = "r2" if regression else "acc"
        record = RunRecord(
            run, str(tr.status), {k: flat[k] for k in CONFIG_KEYS if k in flat}, n_train_of(cfg), layer,
            tuple(tr.layers), str(tr.layer_info(layer).get("meanfield_activation") or "tanh") if has_j else "tanh",
            tr.checkpoints.astype(np.int64) if n else np.zeros(0, np.int64),
            tr.epoch_fraction.astype(float) if n else np.zeros(0),
            tr.stat(layer, "J").astype(float) if has_j else None,
            tr.stat(layer, "chi").astype(float) if has_j and "chi" in tr.stats(layer) else None,
            loss,
            np.full(len(loss), np.nan) if regression else (tr.metric("test_acc").astype(float) if n else np.zeros(0)),
            float(tr.metric(f"train_{score}")[-1]) if n else math.nan,
            str(tr.attrs.get("error", "") or ""), str(path), str(tr.attrs.get("commit", "") or commit))
    if hash_trace:
        record.trace_sha256 = trace_sha256(path)
    return record


def _read_run(path: Path, label: str, s: ScalingSettings) -> tuple[dict[str, Any], Optional[RunCurve],
                                                                     Optional[RunRecord]]:
    """One row of the run table, the run's curve (None when the trace lacks the layer or checkpoints) and
    its record (None when unreadable)."""
    try:
        record = record_from_trace(path, label, s.layer, hash_trace=False)
    except (TraceError, OSError) as exc:
        return _unreadable_row(label, str(path), str(exc)), None, None
    return (*_row_and_curve(record, s), record)


def _unreadable_row(label: str, path: str, note: str) -> dict[str, Any]:
    nan = math.nan
    return {"run": label, "path": path, "status": "unreadable", "optimizer": "", "lr": nan, "momentum": nan,
            "batch_size": nan, "weight_decay": nan, "keras_l2": nan, "seed": None, "dataset": "", "n_train": nan,
            "note": note}


def _summary(rec: RunRecord) -> dict[str, Any]:
    """The run-summary numbers the fits use (as :func:`stabilityscope.analysis.collection.run_summary`)."""
    loss, acc, epochs = rec.test_loss, rec.test_acc, rec.epoch
    finite = np.isfinite(loss)
    best = int(np.nanargmin(np.where(finite, loss, np.nan))) if finite.any() else None
    return {"last_epoch": int(epochs[-1]), "optimal_epoch": int(epochs[best]) if best is not None else None,
            "test_loss_min": float(loss[best]) if best is not None else math.nan, "final_test_loss": float(loss[-1]),
            "final_test_acc": float(acc[-1]),
            "best_test_acc": float(np.nanmax(acc)) if np.isfinite(acc).any() else math.nan}


def _row_and_curve(rec: RunRecord, s: ScalingSettings) -> tuple[dict[str, Any], Optional[RunCurve]]:
    """One row of the run table and the run's curve from a :class:`RunRecord` (a trace's or a runs table's)."""
    nan = math.nan
    row = _unreadable_row(rec.run, rec.path, "")
    flat = rec.config
    lr, mom = float(flat.get("optim.lr", nan)), float(flat.get("optim.momentum", 0.0) or 0.0)
    batch, wd = float(flat.get("train.batch_size", nan)), float(flat.get("optim.weight_decay", 0.0) or 0.0)
    n = rec.n_train
    rate = lr / ((1.0 - mom) * batch)
    row.update(status=rec.status, optimizer=str(flat.get("optim.name", "")), lr=lr, momentum=mom,
               batch_size=int(batch) if batch == batch else batch,
               weight_decay=wd, keras_l2=wd / 2, seed=flat.get("train.seed"), dataset=str(flat.get("dataset.name", "")),
               n_train=n, rate=rate, rho=rate * n)
    notes = [rec.note] if rec.note else []
    if math.isnan(n):
        notes.append(f"unknown training-set size (dataset {row['dataset']!r} without dataset.train_subset): "
                     f"c cannot be computed")
    row["note"] = "; ".join(notes)
    if len(rec.epoch) == 0:
        row["note"] = "; ".join(notes or ["no checkpoint yet"])
        return row, None
    row.update(_summary(rec))
    if rec.J is None:
        row["note"] = "; ".join(notes + [f"no coupling J recorded for layer {s.layer!r} (this trace records: "
                                         f"{', '.join(rec.layers) or 'no layer'}); set scaling.layer"])
        return row, None
    epochs = rec.epoch_fraction  # fractional under step checkpoints (whole epochs otherwise)
    j, chi, loss = rec.J, rec.chi, rec.test_loss
    activation = rec.activation
    edge = critical_coupling(activation if activation in ("tanh", "relu") else "tanh") ** 2
    curve = RunCurve(rec.run, epochs, j ** 2, chi, loss, rec.test_acc, rate, wd, n, edge)
    keep = (epochs <= s.window) & np.isfinite(curve.j2)
    if s.ordered_only:
        keep &= curve.ordered
    if s.j2_window is not None:  # a common J² window: every run's slope over the same stretch of the path
        keep &= (curve.j2 >= s.j2_window[0]) & (curve.j2 <= s.j2_window[1])
    fit = ols(epochs[keep], curve.j2[keep], s.confidence) if s.j2_window is None or keep.sum() >= 3 else \
        ols(epochs[:0], epochs[:0], s.confidence)
    best = int(np.nanargmin(np.where(np.isfinite(loss), loss, np.nan))) if np.isfinite(loss).any() else None
    plateau, plateau_std = _plateau(epochs, curve.j2, s.plateau_fraction)
    row.update(
        A=fit["slope"], A_se=fit["slope_se"], A_intercept=fit["intercept"], n_fit=int(keep.sum()),
        A_j2_from=float(curve.j2[keep].min()) if keep.any() else nan,  # the stretch of J² the slope was fitted on
        A_j2_to=float(curve.j2[keep].max()) if keep.any() else nan,
        C=fit["slope"] / rate if rate > 0 else nan,  # A·(1−α)B/η
        c=fit["slope"] / (rate * n) if rate > 0 and n > 0 else nan,  # A·(1−α)B/(η·n)
        J_at_optimal=float(j[best]) if best is not None else nan,
        J2_at_optimal=float(j[best] ** 2) if best is not None else nan,
        j2_final=float(curve.j2[-1]), j2_plateau=plateau, j2_plateau_std=plateau_std,
        relaxation_epochs=1.0 / (2 * wd * rate * n) if wd > 0 and rate * n > 0 else math.inf,
    )
    return row, curve


# ------------------------------------------------------------------------------------------- the fits


@dataclass
class PowerLawFit:
    """A = k·x^p over runs that hold the other scaling variables at common values (EOC-training: p = 1)."""

    variable: str  # lr, momentum (x = 1/(1−α)), batch_size (x = 1/B), n_train (x = n)
    label: str  # η, 1/(1−α), 1/B, n
    fixed: dict[str, float]  # the values the group holds in common
    n_runs: int
    exponent: float
    exponent_se: float
    exponent_ci: tuple[float, float]
    prefactor: float  # k
    r2: float
    x: list[float]
    A: list[float]


@dataclass
class JointFit:
    """log A = log k + Σ p_v·log x_v over all fitted runs, for every scaling variable that varies."""

    variables: list[str]
    exponents: dict[str, float]
    exponent_se: dict[str, float]
    exponent_ci: dict[str, tuple[float, float]]
    prefactor: float
    r2: float
    n_runs: int


@dataclass
class CombinedFit:
    """The combined form A = C·η/((1−α)B) = c·ρ (ρ = η·n/((1−α)B)): geometric means over runs.

    The intervals are t intervals of the mean of log C (log c) over runs, mapped back by exp.
    ``r2`` is the R² of log A against log(c·ρ) (1 − residual / total sum of squares of log A).
    """

    n_runs: int
    C: float  # per epoch, at the runs' n (C = c·n)
    C_ci: tuple[float, float]
    c: float  # per training example
    c_ci: tuple[float, float]
    n_train: Optional[float]  # the runs' common n (None when they differ: then compare c, not C)
    r2: float
    log_scatter: float  # std of log c over runs (relative scatter of the law)
    confidence: float


def _power_laws(fitted: "pd.DataFrame", confidence: float) -> list[PowerLawFit]:
    out = []
    for var in VARIABLES:
        others = [v for v in VARIABLES if v != var] + ["weight_decay"]
        for key, g in fitted.groupby(others, dropna=False, sort=True):
            if g[var].nunique() < 2:
                continue
            x = power_law_x(var, g[var].to_numpy())
            A = g["A"].to_numpy(dtype=float)
            fit = ols(np.log(x), np.log(A), confidence)
            fixed = {k: (float(v) if v == v else None)
                     for k, v in zip(others, key if isinstance(key, tuple) else (key,))}
            out.append(PowerLawFit(var, VARIABLE_LABELS[var], fixed, len(g), fit["slope"], fit["slope_se"],
                                   (fit["lo"], fit["hi"]), math.exp(fit["intercept"]), fit["r2"],
                                   [float(v) for v in x], [float(v) for v in A]))
    return out


def _joint_fit(fitted: "pd.DataFrame", confidence: float) -> Optional[JointFit]:
    from scipy import stats

    varying = [v for v in VARIABLES if fitted[v].nunique() >= 2]
    if not varying:
        return None
    X = np.column_stack([np.ones(len(fitted))] + [np.log(power_law_x(v, fitted[v].to_numpy())) for v in varying])
    y = np.log(fitted["A"].to_numpy(dtype=float))
    beta, _, rank, _ = np.linalg.lstsq(X, y, rcond=None)
    res = y - X @ beta
    sst = float(np.sum((y - y.mean()) ** 2))
    dof = len(y) - rank
    nan2 = (math.nan, math.nan)
    se = np.full(len(beta), math.nan)
    if dof > 0 and rank == X.shape[1]:  # collinear variables (they vary together) have no separate exponents
        se = np.sqrt(np.diag(float(np.sum(res ** 2)) / dof * np.linalg.inv(X.T @ X)))
    t = float(stats.t.ppf(0.5 + confidence / 2, dof)) if dof > 0 else math.nan
    return JointFit(varying, {v: float(b) for v, b in zip(varying, beta[1:])},
                    {v: float(e) for v, e in zip(varying, se[1:])},
                    {v: ((float(b - t * e), float(b + t * e)) if math.isfinite(e) else nan2)
                     for v, b, e in zip(varying, beta[1:], se[1:])},
                    math.exp(float(beta[0])), 1.0 - float(np.sum(res ** 2)) / sst if sst > 0 else math.nan, len(y))


def _geometric_mean(values: np.ndarray, confidence: float) -> tuple[float, tuple[float, float], float]:
    """exp(mean log v), its t interval, and the std of log v."""
    from scipy import stats

    logs = np.log(values)
    m = float(logs.mean())
    if len(logs) < 2:
        return math.exp(m), (math.nan, math.nan), math.nan
    s = float(logs.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(logs) - 1)) * s / math.sqrt(len(logs))
    return math.exp(m), (math.exp(m - half), math.exp(m + half)), s


def _combined_fit(fitted: "pd.DataFrame", confidence: float) -> Optional[CombinedFit]:
    ok = fitted[np.isfinite(fitted["c"]) & (fitted["c"] > 0)]
    if ok.empty:
        return None
    C, C_ci, _ = _geometric_mean(ok["C"].to_numpy(dtype=float), confidence)
    c, c_ci, scatter = _geometric_mean(ok["c"].to_numpy(dtype=float), confidence)
    logA = np.log(ok["A"].to_numpy(dtype=float))
    res = logA - np.log(c * ok["rho"].to_numpy(dtype=float))
    sst = float(np.sum((logA - logA.mean()) ** 2))
    ns = ok["n_train"].unique()
    # R² tests the form only when the runs differ in ρ; at one ρ all of log A's spread is noise
    r2 = 1.0 - float(np.sum(res ** 2)) / sst if sst > 0 and ok["rho"].nunique() > 1 else math.nan
    return CombinedFit(len(ok), C, C_ci, c, c_ci, float(ns[0]) if len(ns) == 1 else None, r2, scatter, confidence)


# -------------------------------------------------------------------------------------------- collapse


@dataclass
class CollapseCurves:
    """Runs interpolated on a common τ grid; their relative spread (std/mean across runs) per grid point,
    averaged over the ordered and over the chaotic grid points separately."""

    label: str
    rate: Optional[float]  # the common η/((1−α)B) of a group; None for the whole sweep
    weight_decay: float
    n_train: float
    runs: list[str]
    tau: np.ndarray  # (grid,)
    j2: np.ndarray  # (runs, grid), NaN beyond a run's last checkpoint
    test_loss: np.ndarray  # (runs, grid)
    ordered: np.ndarray  # (grid,) bool: the mean χ (else J²/J_c²) across runs below 1
    spread_ordered: float
    spread_chaotic: float
    loss_spread_ordered: float
    loss_spread_chaotic: float

    def summary(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("label", "rate", "weight_decay", "n_train", "runs", "spread_ordered",
                                              "spread_chaotic", "loss_spread_ordered", "loss_spread_chaotic")}


@dataclass
class CollapseAnalysis:
    """J² and test loss against τ: within groups of equal η/((1−α)B) and over the whole sweep.

    ``spread_ordered`` / ``spread_chaotic`` are the whole sweep's (EOC-training: small / larger);
    ``sweep`` is None when fewer than two runs share a weight decay and a training-set size.
    """

    sweep: Optional[CollapseCurves]
    groups: list[CollapseCurves]

    @property
    def spread_ordered(self) -> float:
        return self.sweep.spread_ordered if self.sweep else math.nan

    @property
    def spread_chaotic(self) -> float:
        return self.sweep.spread_chaotic if self.sweep else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"spread_ordered": self.spread_ordered, "spread_chaotic": self.spread_chaotic,
                "sweep": self.sweep.summary() if self.sweep else None, "groups": [g.summary() for g in self.groups]}


def _spread(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean over the masked grid points (covered by >= 2 runs) of std/mean across runs."""
    count = np.isfinite(values).sum(0)
    use = mask & (count >= 2)
    if not use.any():
        return math.nan
    v = values[:, use]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rel = np.nanstd(v, 0) / np.abs(np.nanmean(v, 0))
    return float(np.nanmean(rel)) if np.isfinite(rel).any() else math.nan


def collapse_of(curves: Sequence[RunCurve], label: str, rate: Optional[float]) -> CollapseCurves:
    """The runs' J², test loss and stability interpolated on one τ grid, with their spreads (ordered, chaotic)."""
    tau = np.linspace(0.0, max(float(c.tau[-1]) for c in curves), COLLAPSE_GRID)
    j2, loss, stab = (np.full((len(curves), len(tau)), np.nan) for _ in range(3))
    for i, c in enumerate(curves):
        inside = (tau >= c.tau[0]) & (tau <= c.tau[-1])
        j2[i, inside] = np.interp(tau[inside], c.tau, c.j2)
        loss[i, inside] = np.interp(tau[inside], c.tau, c.test_loss)
        stab[i, inside] = np.interp(tau[inside], c.tau, c.chi if c.chi is not None else c.j2 / c.edge)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # grid points no run reaches
        ordered = np.nanmean(stab, 0) < 1.0
    return CollapseCurves(label, rate, curves[0].weight_decay, curves[0].n_train, [c.run for c in curves], tau, j2,
                          loss, ordered, _spread(j2, ordered), _spread(j2, ~ordered), _spread(loss, ordered),
                          _spread(loss, ~ordered))


def _collapse_analysis(curves: Sequence[RunCurve]) -> CollapseAnalysis:
    usable = [c for c in curves if len(c.epochs) >= 2 and c.rate > 0 and np.isfinite(c.j2).all()]
    sets: dict[tuple[float, float], list[RunCurve]] = {}
    for c in usable:  # τ collapses runs with the same decay and data size (the model's other two parameters)
        sets.setdefault((c.weight_decay, c.n_train), []).append(c)
    # the whole sweep: the largest such set, zero decay first on a tie
    candidates = sorted((v for v in sets.values() if len(v) >= 2), key=lambda v: (-len(v), v[0].weight_decay))
    sweep = collapse_of(candidates[0], "all runs", None) if candidates else None
    groups = []
    for (wd, n), members in sorted(sets.items(), key=lambda kv: (kv[0][0], kv[0][1] if kv[0][1] == kv[0][1] else 0)):
        by_rate: dict[float, list[RunCurve]] = {}
        for c in members:
            by_rate.setdefault(float(f"{c.rate:.10g}"), []).append(c)
        for r, runs in sorted(by_rate.items()):
            if len(runs) >= 2:
                label = f"η/((1−α)B) = {r:.4g}" + (f", weight decay {wd:g}" if wd else "")
                groups.append(collapse_of(runs, label, r))
    return CollapseAnalysis(sweep, groups)


# ---------------------------------------------------------------------------------------- the analysis


@dataclass
class SweepAnalysis:
    """Everything :func:`analyze_sweep` measures on a sweep (see the module docstring)."""

    source: str
    settings: ScalingSettings
    runs: "pd.DataFrame"  # one row per run, fitted or not (status, config, A, c, plateau, ...)
    curves: dict[str, RunCurve]  # run label -> its J² and test curves
    power_laws: list[PowerLawFit]
    joint: Optional[JointFit]
    combined: Optional[CombinedFit]
    collapse: CollapseAnalysis
    decay: DecayAnalysis
    notes: list[str] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)  # what the fits read, as a runs table writes it

    @property
    def fitted(self) -> "pd.DataFrame":
        """The runs the scaling fits use."""
        return self.runs[self.runs["used_in_fits"]]

    def exponent(self, variable: str) -> float:
        """The exponent of one scaling variable (lr, momentum, batch_size, n_train): the joint fit's,
        else the group fit with the most runs; NaN if the sweep does not vary it."""
        if self.joint and variable in self.joint.exponents:
            return self.joint.exponents[variable]
        fits = [f for f in self.power_laws if f.variable == variable]
        return max(fits, key=lambda f: f.n_runs).exponent if fits else math.nan

    def summary(self) -> list[str]:
        """The key numbers, one line each (what ``task=scaling`` logs)."""
        lines = [f"{len(self.runs)} runs ({int(self.runs['used_in_fits'].sum())} in the scaling fits) from "
                 f"{self.source}"]
        cf = self.combined
        if cf:
            pct = f"{cf.confidence:.0%}"
            lines.append(f"A = C·η/((1−α)B): C = {cf.C:.4g} per epoch ({pct} CI {cf.C_ci[0]:.4g}–{cf.C_ci[1]:.4g}), "
                         f"c = C/n = {cf.c:.4g} per training example ({pct} CI {cf.c_ci[0]:.4g}–{cf.c_ci[1]:.4g}), "
                         f"R² = {cf.r2:.4g}, {cf.n_runs} runs")
        for var in VARIABLES:
            fits = [f for f in self.power_laws if f.variable == var]
            if fits:
                p = [f.exponent for f in fits]
                lines.append(f"A ∝ ({VARIABLE_LABELS[var]})^p within {len(fits)} group(s) holding the rest fixed: "
                             f"p = {min(p):.3f}" + (f" to {max(p):.3f}" if len(p) > 1 else ""))
        if self.joint:
            j = self.joint
            lines.append("joint fit log A = log k + Σ p·log x: " + ", ".join(
                f"p({VARIABLE_LABELS[v]}) = {p:.3f} (CI {j.exponent_ci[v][0]:.3f}–{j.exponent_ci[v][1]:.3f})"
                for v, p in j.exponents.items()) + f", R² = {j.r2:.4g}, {j.n_runs} runs")
        if self.collapse.sweep:
            lines.append(f"collapse against τ: relative spread of J² {self.collapse.spread_ordered:.3g} (ordered), "
                         f"{self.collapse.spread_chaotic:.3g} (chaotic)")
        d = self.decay
        if math.isfinite(d.weight_decay_star):
            lines.append(f"λ* (plateau J² = {d.edge:g}): weight_decay = {d.weight_decay_star:.4g} (Keras λ = "
                         f"{d.keras_l2_star:.4g}); bootstrap CI {d.bootstrap_ci[0]:.3g}–{d.bootstrap_ci[1]:.3g}; "
                         f"model c/2 = {d.model_weight_decay_star:.4g}")
        else:
            lines.append(f"λ*: not determined ({d.explanation})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN and infinities as None)."""
        return jsonable({
            "source": self.source, "settings": asdict(self.settings), "runs": self.runs.to_dict("records"),
            "power_laws": [asdict(f) for f in self.power_laws], "joint": asdict(self.joint) if self.joint else None,
            "combined": asdict(self.combined) if self.combined else None, "collapse": self.collapse.to_dict(),
            "decay": self.decay.to_dict(), "notes": self.notes,
        })


def _labels(paths: Sequence[Path]) -> list[str]:
    """Run names: each run folder relative to the folder all of them share (``0``, ``1``, ... in a sweep)."""
    dirs = [p.parent.resolve() for p in paths]
    if len(dirs) == 1:
        return [dirs[0].name]
    root = Path(os.path.commonpath([str(d) for d in dirs]))
    return [d.relative_to(root).as_posix() or d.name for d in dirs]


def _read_source(source: Source, settings: ScalingSettings) -> list[tuple[dict[str, Any], Optional[RunCurve],
                                                                         Optional[RunRecord]]]:
    """Rows, curves and records of every run ``source`` names: traces (sweep or run directories, globs) and runs tables
    (:mod:`stabilityscope.analysis.runs_table`), in the order given.

    Raises:
        TraceError: ``source`` names neither a trace nor a runs table.
    """
    items = [source] if isinstance(source, (str, Path)) or hasattr(source, "path") else list(source)
    traces, tables = split_sources(items)
    out = []
    if traces or not tables:
        paths = find_traces(traces)
        out += [_read_run(path, label, settings) for path, label in zip(paths, _labels(paths))]
    for table in tables:
        out += [(*_row_and_curve(record, settings), record) for record in read_runs_table(table)]
    return out


def analyze_sweep(source: Source, *, layer: str = "hidden", window: float = 50, ordered_only: bool = True,
                  plateau_fraction: float = 0.2, confidence: float = 0.95, c: Optional[float] = None,
                  n_boot: int = 1000, seed: int = 0, j2_window: Optional[Sequence[float]] = None) -> SweepAnalysis:
    """Measure EOC-training's scaling laws and the weight decay λ* on a sweep of runs.

    Args:
        source: the runs, as :func:`stabilityscope.analysis.collection.find_traces` takes them: a sweep
            directory (``checkpoints/multirun/<stamp>``), a glob, a run directory, a list; or a runs table
            (:mod:`stabilityscope.analysis.runs_table`), alone or in the list.
        layer: the layer whose J² is analysed (the canonical network's square ``hidden`` layer).
        window: the slope A is fitted over checkpoints with epoch <= ``window`` ...
        ordered_only: ... that are in the ordered phase (χ < 1; J < J_c without ``chi``).
        plateau_fraction: a run's plateau is its mean J² over this last fraction of its epochs.
        confidence: level of every confidence interval.
        c: the growth constant per training example behind the model's λ* = c/2 when the sweep has
            no zero-decay runs to measure it (default: the canonical
            :data:`stabilityscope.analysis.canonical.CANONICAL_C`); a sweep's own measurement wins.
        n_boot: bootstrap samples over seeds for λ*'s interval (0: none).
        seed: of the bootstrap's random numbers.
        j2_window: (low, high): fit A only over checkpoints with J² in this range, and only when at least
            3 fall in it (the calibration's common window); None: any J².

    Returns:
        A :class:`SweepAnalysis`; ``.to_dict()`` gives JSON-ready values.

    Raises:
        TraceError: ``source`` matches no trace.
        ValueError: a setting out of range.
    """
    import pandas as pd

    settings = ScalingSettings(layer, window, ordered_only, plateau_fraction, confidence,
                               None if j2_window is None else (float(j2_window[0]), float(j2_window[1])))
    if c is not None and not (math.isfinite(c) and c > 0):
        raise ValueError(f"c={c!r}: the growth constant per training example must be a positive number "
                         f"(the canonical one is {CANONICAL_C:.4g}).")
    rows, curves, records = [], {}, []
    for row, curve, record in _read_source(source, settings):
        rows.append(row)
        if curve is not None:
            curves[row["run"]] = curve
        if record is not None:
            records.append(record)
    paths = rows  # counted by _describe
    runs = pd.DataFrame(rows)
    # natural order of the run names (0, 1, 2, ..., 10), not the string order of their paths
    runs = runs.iloc[sorted(range(len(runs)), key=lambda i: natural_key(runs["run"].iloc[i]))].reset_index(drop=True)
    for col in ("A", "A_se", "c", "C", "rho", "rate", "j2_plateau", "relaxation_epochs", "last_epoch"):
        if col not in runs.columns:
            runs[col] = math.nan
    notes: list[str] = []
    eligible = (~runs["status"].isin(EXCLUDED_STATUSES) & (runs["optimizer"] == "sgd")
                & np.isfinite(runs["A"].astype(float)) & (runs["A"].astype(float) > 0)
                & np.isfinite(runs["n_train"].astype(float)))
    excluded = runs[runs["status"].isin(EXCLUDED_STATUSES)]
    if len(excluded):
        notes.append("left out of every fit: " + ", ".join(
            f"{r.run} ({r.status}" + (f": {r.note}" if r.note else "") + ")" for r in excluded.itertuples()))
    other_opt = runs[~runs["status"].isin(EXCLUDED_STATUSES) & (runs["optimizer"] != "sgd")]
    if len(other_opt):
        notes.append("not SGD (the scaling law is SGD's), left out of the fits: "
                     + ", ".join(f"{r.run} ({r.optimizer})" for r in other_opt.itertuples()))
    if (runs["status"] == "running").any():
        notes.append(f"{int((runs['status'] == 'running').sum())} run(s) still running: their plateaus are provisional")
    if eligible.any() and (runs.loc[eligible, "weight_decay"] == 0).any():
        used = eligible & (runs["weight_decay"] == 0)  # decay bends J² below the line: the law is the decay-free one
    else:
        used = eligible
        if eligible.any():
            notes.append("no run without weight decay: the scaling fits use decay runs, whose J² bends below the "
                         "linear growth (A underestimated)")
    runs["used_in_fits"] = used
    for r in runs[~np.isfinite(runs["A"].astype(float)) & ~runs["status"].isin(EXCLUDED_STATUSES)].itertuples():
        notes.append(f"{r.run}: no slope A ({r.note or 'too few ordered checkpoints in the fit window'})")
    fitted = runs[used]
    power_laws = _power_laws(fitted, confidence)
    joint = _joint_fit(fitted, confidence)
    combined = _combined_fit(fitted, confidence)
    if combined and combined.n_train is None:
        notes.append("the fitted runs differ in training-set size n: C = A(1−α)B/η mixes them; compare c = C/n")
    # the model's λ* = c/2 from the sweep's own zero-decay runs when it has them
    zero = fitted[(fitted["weight_decay"] == 0) & np.isfinite(fitted["c"].astype(float))]
    if len(zero):
        model_c, c_source = _geometric_mean(zero["c"].to_numpy(dtype=float), confidence)[0], \
            f"measured: the geometric mean over the sweep's {len(zero)} zero-decay run(s)"
    elif c is not None:
        model_c, c_source = float(c), "given"
    else:
        model_c, c_source = CANONICAL_C, "the canonical constant (stabilityscope.analysis.canonical.CANONICAL_C)"
    edges = {cv.edge for cv in curves.values()}
    edge = edges.pop() if len(edges) == 1 else 1.0
    decay = decay_analysis(runs, edge, confidence, model_c, c_source, n_boot, seed)
    if edge != 1.0:
        notes.append(f"the layer's edge is J² = {edge:g} (not 1): λ* is where the plateau reaches it, "
                     f"and the model's λ* is c/(2·{edge:g}), not c/2")
    fitted = ~runs["status"].isin(EXCLUDED_STATUSES) & (runs["optimizer"] == "sgd")
    fit_curves = [curves[r] for r in runs.loc[fitted, "run"] if r in curves]
    collapse = _collapse_analysis(fit_curves)
    return SweepAnalysis(_describe(source, len(paths)), settings, runs, curves, power_laws, joint, combined, collapse,
                         decay, notes + decay.notes, records)


def _describe(source: Source, n: int) -> str:
    """The source as given (a folder, a glob, a short list of them), else the number of traces."""
    if isinstance(source, (str, Path)):
        return str(source)
    items = list(source) if not hasattr(source, "path") else [source]
    if items and len(items) <= 4 and all(isinstance(i, (str, Path)) for i in items):
        return ", ".join(str(i) for i in items)
    return f"{n} traces"
