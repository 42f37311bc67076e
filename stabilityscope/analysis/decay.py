"""Weight decay against the edge: the J² plateau per decay and λ*, the decay whose plateau is J² = 1.

EOC-training: with weight decay the hidden layer's J² saturates at a plateau that falls as the decay
grows, and the decay whose plateau sits at the edge gives the best final test loss. The toolkit's
model (:mod:`stabilityscope.analysis.scaling`) predicts the plateau c/(2·wd), hence λ* = c/2 in PyTorch's
convention (``optim.weight_decay`` = 2 × Keras λ, so Keras λ* = c/4).

Choices, each documented in the README:

- the plateau of a run is its mean J² over the last ``plateau_fraction`` of its epochs; a run shorter
  than three relaxation times 1/(2·wd·ρ) is flagged as not saturated;
- λ* is where the mean plateau over seeds first falls through the edge as the decay grows:
  log J²∞ is interpolated linearly in log decay between the two bracketing non-zero decays (exact for
  the model's power law), linearly in decay when the bracket starts at zero decay (flagged rough);
- its uncertainty: each seed's own crossing (mean, std, t interval) and a bootstrap over whole seeds.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DecayAnalysis", "EXCLUDED_STATUSES", "crossing_decay", "decay_analysis"]

# Statuses of runs that are listed but never fitted.
EXCLUDED_STATUSES = ("failed", "diverged", "unreadable")


def crossing_decay(decays: Sequence[float], plateaus: Sequence[float], level: float = 1.0) -> tuple[float, str]:
    """The decay at which the plateau J²∞ first falls through ``level`` as the decay grows.

    Between two non-zero decays log J²∞ is interpolated linearly in log decay (exact for the model's
    J²∞ = c/(2·wd)); a bracket starting at zero decay is interpolated linearly in decay.

    Returns:
        (decay, how): NaN and the reason when the points do not bracket ``level``.
    """
    d, p = np.asarray(decays, dtype=float), np.asarray(plateaus, dtype=float)
    keep = np.isfinite(d) & np.isfinite(p) & (p > 0)
    order = np.argsort(d[keep])
    d, p = d[keep][order], p[keep][order]
    if len(d) < 2:
        return math.nan, (f"{len(d)} weight-decay value(s) with a plateau: at least two are needed to bracket "
                          f"J² = {level:g}")
    for i in range(len(d) - 1):
        (d0, d1), (p0, p1) = d[i:i + 2], p[i:i + 2]
        if p0 == level:
            return float(d0), f"the plateau at weight decay {d0:g} is J² = {level:g}"
        if p0 > level > p1 or p0 < level < p1:
            if d0 == 0:
                star = d0 + (level - p0) / (p1 - p0) * (d1 - d0)
                how = "linear in decay (the bracket starts at zero decay, whose run has no plateau: rough)"
            else:
                star = math.exp(math.log(d0) + (math.log(level) - math.log(p0)) / (math.log(p1) - math.log(p0))
                                * (math.log(d1) - math.log(d0)))
                how = "log J²∞ linear in log decay"
            return float(star), (f"between weight decay {d0:g} (J²∞ = {p0:.4g}) and {d1:g} (J²∞ = {p1:.4g}), {how}")
    if p[-1] == level:
        return float(d[-1]), f"the plateau at weight decay {d[-1]:g} is J² = {level:g}"
    if (p > level).all():
        return math.nan, (f"every plateau lies above J² = {level:g} (the largest decay, {d[-1]:g}, gives J²∞ = "
                          f"{p[-1]:.4g}): extend the sweep to larger weight decay")
    if d[0] == 0:  # not even the run without decay reached the edge: the runs are too short, not the decays too large
        return math.nan, (f"every run ends below J² = {level:g}, even without weight decay (J² = {p[0]:.4g} at its "
                          "last epochs): train longer, until the zero-decay run passes the edge")
    return math.nan, (f"every plateau lies below J² = {level:g} (the smallest decay, {d[0]:g}, gives J²∞ = "
                      f"{p[0]:.4g}): extend the sweep to smaller weight decay (and include 0)")


@dataclass
class DecayAnalysis:
    """The J² plateau against weight decay and λ*, the decay whose plateau is the edge J² = 1.

    ``weight_decay_star`` is PyTorch's coefficient; ``keras_l2_star`` = half of it. NaN, with the
    reason in ``explanation``, when the sweep does not bracket the edge.
    """

    table: "pd.DataFrame"  # one row per decay: plateau and test metrics, mean and std over runs
    edge: float  # the J² level of the edge (1 for tanh)
    weight_decay_star: float
    keras_l2_star: float
    explanation: str
    per_seed: dict[str, float]  # seed -> λ* of that seed's own curve (PyTorch convention)
    seed_mean: float
    seed_std: float
    seed_ci: tuple[float, float]  # t interval of the mean of the per-seed values
    bootstrap_ci: tuple[float, float]  # percentile interval of λ* over seeds resampled with replacement
    bootstrap_found: float  # fraction of bootstrap samples whose mean curve crosses the edge
    model_c: float  # c (per training example) behind the model's prediction
    model_c_source: str
    model_weight_decay_star: float  # c/(2·edge): c/2 for tanh
    model_keras_l2_star: float  # half of it: c/4 for tanh
    best_final_test_loss: Optional[float]  # the decay with the lowest mean final test loss
    best_min_test_loss: Optional[float]  # ... with the lowest mean minimum test loss
    notes: list[str] = field(default_factory=list)

    def model_plateau(self, weight_decay: Any) -> np.ndarray:
        """The model's plateau J²∞ = c/(2·wd) at these decays (PyTorch convention; inf at 0)."""
        wd = np.asarray(weight_decay, dtype=float)
        with np.errstate(divide="ignore"):
            return self.model_c / (2.0 * wd)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "table"}
        out["table"] = self.table.to_dict("records")
        return out


def _empty_decay(edge: float, why: str, c: float, c_source: str) -> DecayAnalysis:
    import pandas as pd

    nan2 = (math.nan, math.nan)
    return DecayAnalysis(pd.DataFrame(), edge, math.nan, math.nan, why, {}, math.nan, math.nan, nan2, nan2, math.nan,
                         c, c_source, c / (2 * edge), c / (4 * edge), None, None, [])


def decay_analysis(runs: "pd.DataFrame", edge: float, confidence: float, c: float, c_source: str,
                    n_boot: int, seed: int) -> DecayAnalysis:
    """The plateau table, λ* with its seed and bootstrap uncertainty, and the model's c/2 over ``runs``.

    Args:
        runs: the run table of :func:`stabilityscope.analysis.scaling.analyze_sweep` (``weight_decay``,
            ``seed``, ``status``, ``j2_plateau``, test metrics, ``relaxation_epochs``, ...).
        edge: the J² level of the edge (1 for tanh).
        confidence: level of the intervals.
        c, c_source: the growth constant per training example behind the model's λ* = c/(2·edge), and
            where it came from.
        n_boot, seed: bootstrap samples over seeds (0: none) and their random seed.
    """
    from scipy import stats

    ok = runs[~runs["status"].isin(EXCLUDED_STATUSES) & np.isfinite(runs["j2_plateau"].astype(float))]
    if ok.empty or ok["weight_decay"].nunique() < 2:
        values = sorted(ok["weight_decay"].unique().tolist())
        return _empty_decay(edge, f"no weight-decay sweep: the runs have {len(values)} weight-decay value(s) "
                                  f"({', '.join(f'{v:g}' for v in values) or 'none'}); λ* needs runs over several "
                                  f"optim.weight_decay values that bracket the edge", c, c_source)
    metrics = ["j2_plateau", "final_test_loss", "test_loss_min", "final_test_acc", "best_test_acc"]
    g = ok.groupby("weight_decay")
    table = g[metrics].agg(["mean", "std"])
    table.columns = [f"{m}_{s}" for m, s in table.columns]
    table.insert(0, "n_runs", g.size())
    table.insert(1, "n_seeds", g["seed"].nunique())
    table["relaxation_epochs"] = g["relaxation_epochs"].mean()
    table["last_epoch"] = g["last_epoch"].min()
    table["saturated"] = table["last_epoch"] >= 3 * table["relaxation_epochs"]  # within e⁻³ ≈ 5 % of the plateau
    table = table.reset_index()
    table.insert(1, "keras_l2", table["weight_decay"] / 2)
    with np.errstate(divide="ignore"):
        table["model_plateau"] = c / (2 * table["weight_decay"].to_numpy(dtype=float))  # inf at zero decay
    star, how = crossing_decay(table["weight_decay"], table["j2_plateau_mean"], edge)
    notes = []
    short = table[(table["weight_decay"] > 0) & ~table["saturated"]]
    if len(short):
        notes.append("runs shorter than 3 relaxation times 1/(2·wd·ρ) (their J² may still be falling toward the "
                     "plateau): "
                     + ", ".join(f"wd {r.weight_decay:g} ({r.relaxation_epochs:.0f} epochs per relaxation time)"
                                 for r in short.itertuples()))
    others = [v for v in ("lr", "momentum", "batch_size", "n_train") if ok[v].nunique() > 1]
    if others:
        notes.append(f"the decay runs also differ in {', '.join(others)}: plateaus are pooled over them (the model's "
                     f"plateau c/(2·wd) does not depend on them, the time to reach it does)")
    # per seed: each seed's own plateau curve
    per_seed: dict[str, float] = {}
    pivot = ok.assign(seed=ok["seed"].astype(str)).pivot_table(index="seed", columns="weight_decay",
                                                               values="j2_plateau", aggfunc="mean")
    for s, row in pivot.iterrows():
        per_seed[str(s)] = crossing_decay(row.index.to_numpy(dtype=float), row.to_numpy(dtype=float), edge)[0]
    vals = np.array([v for v in per_seed.values() if math.isfinite(v)])
    seed_mean = float(vals.mean()) if len(vals) else math.nan
    seed_std = float(vals.std(ddof=1)) if len(vals) >= 2 else math.nan
    seed_ci = (math.nan, math.nan)
    if len(vals) >= 2:
        half = float(stats.t.ppf(0.5 + confidence / 2, len(vals) - 1)) * seed_std / math.sqrt(len(vals))
        seed_ci = (seed_mean - half, seed_mean + half)
    missing = [s for s, v in per_seed.items() if not math.isfinite(v)]
    if missing and len(per_seed) > 1:
        notes.append(f"seed(s) {', '.join(missing)}: the seed's own plateau curve does not cross the edge")
    # bootstrap over seeds: resample whole seeds, recompute the mean curve and its crossing
    boot_ci, found = (math.nan, math.nan), math.nan
    if len(pivot) >= 2 and n_boot > 0:
        rng = np.random.default_rng(seed)
        P, D = pivot.to_numpy(dtype=float), pivot.columns.to_numpy(dtype=float)
        stars = np.empty(n_boot)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for b in range(n_boot):
                stars[b] = crossing_decay(D, np.nanmean(P[rng.integers(0, len(P), len(P))], 0), edge)[0]
        good = stars[np.isfinite(stars)]
        found = len(good) / n_boot
        if len(good):
            lo, hi = np.quantile(good, [0.5 - confidence / 2, 0.5 + confidence / 2])
            boot_ci = (float(lo), float(hi))
    def lowest(column: str) -> Any:  # the decay with the lowest mean of ``column``, if any is finite
        return table.loc[table[column].idxmin(), "weight_decay"] if table[column].notna().any() else None

    loss_best, min_best = lowest("final_test_loss_mean"), lowest("test_loss_min_mean")
    return DecayAnalysis(table, edge, star, star / 2, how, per_seed, seed_mean, seed_std, seed_ci, boot_ci, found,
                         c, c_source, c / (2 * edge), c / (4 * edge), None if loss_best is None else float(loss_best),
                         None if min_best is None else float(min_best), notes)
