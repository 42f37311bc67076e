"""The headline claims of EOC-training and EOC-optimality, checked against runs of this project.

``python -m stabilityscope task=reproduce runs=<dirs or globs>`` (or :func:`reproduce`) sorts the
traces it is given:

- canonical-network SGD runs (``model=fmnist_fc``; the ``calibrate_*`` presets, ``eoc_scaling_*``,
  ``eoc_weight_decay``) go through :func:`stabilityscope.analysis.calibration.calibrate`;
- runs that iterate a map (``experiment=eoc_mlp`` / ``eoc_cnn``: a layer with M1 ``s_mean`` and
  ``lambda_max``) give EOC-optimality's checks;
- ``experiment=calibrate_guideline`` runs check our own claim, the guideline's promise
  (:func:`validate_guideline`).

and :func:`stabilityscope.reports.reproduction.write_reproduction` writes ``reproduction.md`` (and
``reproduction.json``): one row per claim with the source's value where it states one, ours with its
interval, the margin, the runs it comes from and a verdict.
Each claim is judged by one rule of :data:`RULES` (printed into the report): a measured number with
its confidence interval against a margin fixed in advance, through
:mod:`stabilityscope.analysis.verdicts`:

- *reproduced*: the interval lies inside the margin; *not reproduced*: it lies outside; *inconclusive*:
  it straddles a bound, reported with the seeds (runs, checkpoints) that 80% power would need; *not
  run*: the runs given hold nothing to check the claim with.

A claim made of several parts (three exponents, several rates) is reproduced when every part is,
not reproduced when any part is, and inconclusive otherwise (:func:`~stabilityscope.analysis.verdicts.combine`).
"Chaotic" is the attractor classifier's label everywhere (λ_max above its tolerance on a bounded orbit
without a period), never λ_max > 0 alone.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np
import yaml

from stabilityscope.analysis.calibration import DEFAULT_J2_WINDOW, REFERENCE_RATE, Calibration, calibrate, within_range
from stabilityscope.analysis.collection import Source, find_traces, flatten_config
from stabilityscope.analysis.decay import EXCLUDED_STATUSES
from stabilityscope.analysis.runs_table import split_sources
from stabilityscope.analysis.stats import jsonable, ols, origin_slope, t_quantile
from stabilityscope.analysis.verdicts import (
    INCONCLUSIVE,
    NOT_RUN,
    REPRODUCED,
    Margin,
    Verdict,
    combine,
    judge,
    judge_difference,
    judge_fraction,
    judge_mean,
)
from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import open_trace

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Claim", "LOSS_MARGIN", "RULES", "Reproduction", "Rule", "at_boundary", "reproduce", "validate_guideline"]

# "Near-best" and "the best" test loss: within 2% (a log-ratio of means) of every other setting's.
LOSS_MARGIN = math.log(1.02)


@dataclass(frozen=True)
class Rule:
    """How one claim is judged: the number measured, the unit its interval counts, and the margins."""

    quantity: str
    unit: str
    margins: tuple[tuple[str, Margin], ...]  # (part, margin): every part must hold

    def text(self, confidence: float = 0.95, power: float = 0.8) -> str:
        parts = "; ".join(f"{name}: {m.describe()} ({m.reason})" if name else f"{m.describe()} ({m.reason})"
                          for name, m in self.margins)
        return (f"{self.quantity}. Reproduced when its {confidence:.0%} interval lies inside the margin, not "
                f"reproduced when it lies outside, otherwise inconclusive with the {self.unit} that {power:.0%} "
                f"power needs. Margin: {parts}")

    def margin(self, part: str = "") -> Margin:
        return dict(self.margins)[part]


_BAND = "the guideline's band |J² − 1| <= 0.15"
RULES: dict[str, Rule] = {
    "linear growth": Rule(
        "the ratio of J²'s slope over the second half of a zero-decay run's ordered checkpoints (χ < 1) from the "
        "start of the growth law's J² window on (0.3 by default; below it J² rises faster in an initial transient, "
        "reported beside the verdict) to the slope over the first half, per run with at least 6 such checkpoints; "
        "mean over runs, t interval",
        "runs", (("", Margin(0.85, 1.15, "a slope that changes by 15% keeps J² within 0.015 of one straight line "
                                         "over the path from 0.25 to 1 (the gap is ε·ΔJ²/8), a tenth of "
                                         f"{_BAND}; EOC-training gives no tolerance")),)),
    "slope law": Rule(
        "the exponent p of A ∝ x^p for x = η, 1/(1−α), 1/B, each series alone inside the growth law's validity "
        "range (least squares in log–log space, t interval)",
        "runs", (("", Margin(0.95, 1.05, "a unit exponent then mispredicts A by at most 8^0.05 − 1 = 11% up to 8× "
                                         "the reference rate, inside the calibration's 15% tolerance; EOC-training "
                                         "gives no tolerance")),)),
    "collapse": Rule(
        "per rate shared by two or more (η, α, B) settings without decay: the relative spread (std/mean across "
        "settings) of J² against τ, over ordered and over chaotic grid points, one value per seed; mean over "
        "seeds, t interval",
        "seeds", (("ordered", Margin(-math.inf, 0.05, "two settings within 10% of each other (relative std 5%), "
                                                f"a third of {_BAND}")),
                  ("chaotic", Margin(0.05, math.inf, "past the edge the curves part by more than what counts "
                                                     "as collapsed")))),
    "optimum at the edge": Rule(
        "J² of the hidden layer at the best test loss, per zero-decay run inside the growth law's validity range "
        "that crossed the edge and whose test loss rose again before its end (a best at the last checkpoint is not "
        "located); mean over runs, t interval",
        "runs", (("", Margin(0.85, 1.15, f"{_BAND}, the edge as the toolkit uses it; EOC-training says "
                                         "'close to J = 1' without a number")),)),
    "chaos hurts": Rule(
        "the final test loss over the best one, minus 1, per zero-decay run inside the growth law's validity range "
        "that ended past the edge (J² > 1); mean over runs, t interval",
        "runs", (("", Margin(0.01, math.inf, "a rise of at least 1% of the loss, the least a user would call a "
                                             "rise; EOC-training shows the rise without a number")),)),
    "plateaus": Rule(
        "the decay exponent q of the plateau law J²∞ ∝ wd^−q (saturated runs inside the growth law's range; "
        "t interval of the least-squares fit)",
        "runs", (("", Margin(0.0, math.inf, "'falls as the decay grows' is any q > 0")),)),
    "lambda star": Rule(
        "per rate, the saturated runs' plateaus at the two grid decays whose means bracket the edge: the "
        "smaller decay's mean plateau over seeds (t interval) and the larger one's; at a rate without a bracket, "
        "the slope of log J²∞ on log decay (a rising or flat plateau contradicts the claim; a falling one that "
        "stops short of the edge asks for more decays)",
        "seeds", (("above", Margin(1.0, math.inf, "the plateau at the smaller decay lies above the edge")),
                  ("below", Margin(-math.inf, 1.0, "the plateau at the next larger decay lies below it")),
                  ("falls", Margin(-math.inf, 0.0, "where no two decays bracket the edge: the plateau must fall "
                                                   "with the decay (slope of log J²∞ on log decay below 0), else no "
                                                   "decay can bring it to the edge")))),
    "best decay at the edge": Rule(
        "per rate and run length, for the grid decay nearest λ* against every other decay: the difference of "
        "mean log final test losses (Welch t interval)",
        "seeds per decay", (("", Margin(-math.inf, LOSS_MARGIN, "'the best' read as within 2% of every other "
                                                               "decay's final test loss, a difference a user "
                                                               "would still act on; EOC-training reports means "
                                                               "over 10 seeds without a test")),)),
    "guideline": Rule(
        "per budget trained to its end (experiment=calibrate_guideline): the largest |J² − 1| of the recommended "
        "run from recommend()'s reach epoch to the budget, per seed (mean, t interval); and the difference of "
        "mean log test losses at the budget, the recommended decay against every other factor (Welch)",
        "seeds", (("band", Margin(-math.inf, 0.15, "the guideline's promise itself")),
                  ("loss", Margin(-math.inf, LOSS_MARGIN, "'near-best': within 2% of every other factor's test "
                                                         "loss, the margin of 'best decay at the edge'")))),
    "optimum near s = 1": Rule(
        "s (M1) at the best test loss, per run of one model; mean over runs, t interval",
        "seeds", (("", Margin(0.85, 1.15, "the map stretches or shrinks by at most 15% per step at the optimum, "
                                          "the 15% the training side allows J² around the edge; EOC-optimality "
                                          "says 's ≈ 1' without a number")),)),
    "lambda_max = ln s": Rule(
        "the least-squares slope k of λ_max = k·ln s through the origin over a model's chaotic checkpoints "
        "(the classifier's label), t interval",
        "chaotic checkpoints", (("", Margin(0.8, 1.25, "λ_max equals ln s within a factor 1.25 either way; "
                                                       "EOC-optimality gives no tolerance")),)),
    "attractor sequence": Rule(
        "the fraction of a model's runs whose best test loss lies at the (pseudo)periodic–chaotic boundary: the "
        "best checkpoint periodic or quasi-periodic with a chaotic checkpoint within two, or chaotic with a "
        "periodic or quasi-periodic one among the two before it (Clopper–Pearson interval)",
        "runs", (("", Margin(0.5, 1.0, "most runs; EOC-optimality places the optimum at the boundary, 'where "
                                       "D∞ starts rising from 0', in every run it shows")),)),
}


@dataclass
class Claim:
    """One row of the report: the claim, our measurement, its verdict and (inconclusive) what would settle it."""

    paper: str  # EOC-training, EOC-optimality, or stabilityscope (the guideline, our own claim)
    claim: str
    rule: str  # key of RULES
    source_value: str
    ours: str
    runs: str
    verdict: str  # reproduced, not reproduced, inconclusive, not run
    note: str = ""
    parts: list[Verdict] = field(default_factory=list)  # the judged intervals behind the verdict
    needed: Optional[float] = None  # inconclusive: units for 80% power (inf: none suffice; None: unknown)

    @property
    def settle(self) -> str:
        """What would settle an inconclusive verdict, in words ('' otherwise)."""
        if self.verdict != INCONCLUSIVE:
            return ""
        unit = RULES[self.rule].unit if self.rule in RULES else "seeds"
        if self.needed is None:
            return "more runs of another design (see note)" if self.note else f"unknown (no spread per {unit})"
        return f"no number of {unit}" if math.isinf(self.needed) else f"about {int(self.needed)} {unit}"


def _claim(paper: str, claim: str, rule: str, source: str, ours: str, runs: str, parts: Sequence[Verdict],
           note: str = "") -> Claim:
    verdict, needed = combine(parts)
    return Claim(paper, claim, rule, source, ours, runs, verdict, note, list(parts), needed)


def _not_run(paper: str, claim: str, rule: str, source: str, note: str, runs: str = "none") -> Claim:
    return Claim(paper, claim, rule, source, "—", runs, NOT_RUN, note)


@dataclass
class Reproduction:
    """The claims checked on a set of runs, each with its verdict, and the calibration and map runs they came from."""

    source: str
    claims: list[Claim]
    calibration: Optional[Calibration]
    map_runs: list[str]
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.95
    power: float = 0.8

    def to_dict(self) -> dict[str, Any]:
        claims = [{**asdict(c), "settle": c.settle} for c in self.claims]
        return jsonable({"source": self.source, "confidence": self.confidence, "power": self.power,
                          "claims": claims, "rules": {k: r.text(self.confidence, self.power) for k, r in RULES.items()},
                          "map_runs": self.map_runs, "notes": self.notes})


def _fmt(v: float, digits: int = 3) -> str:
    return "—" if not (isinstance(v, (int, float)) and math.isfinite(v)) else f"{v:.{digits}g}"


def _ci(lo: float, hi: float) -> str:
    return f"({_fmt(lo)}–{_fmt(hi)})"


# ------------------------------------------------------------------------------------------ EOC-training


def _halves_ratio(curve: Any, j2_from: float, confidence: float) -> float:
    """J²'s slope over the second half of a run's ordered checkpoints with J² >= ``j2_from`` over the slope over
    the first half."""
    keep = curve.ordered & np.isfinite(curve.j2) & (curve.j2 >= j2_from)
    t, y = curve.epochs[keep], curve.j2[keep]
    if len(t) < 6:
        return math.nan
    half = len(t) // 2
    early, late = ols(t[:half], y[:half], confidence)["slope"], ols(t[half:], y[half:], confidence)["slope"]
    return late / early if early > 0 else math.nan


def _linear_growth(zero: "pd.DataFrame", curves: Mapping[str, Any], j2_from: float, confidence: float,
                   power: float) -> Claim:
    claim, rule = "J² grows linearly in epochs in the ordered phase", "linear growth"
    ratios = {r: _halves_ratio(curves[r], j2_from, confidence) for r in zero["run"] if r in curves}
    values = [v for v in ratios.values() if math.isfinite(v)]
    if not values:
        return _not_run("EOC-training", claim, rule, "linear", "no zero-decay run with 6 ordered checkpoints: run "
                        "experiment=calibrate_growth")
    v = judge_mean(values, RULES[rule].margin(), confidence=confidence, power=power, unit="runs")
    ours = f"late/early slope ratio {v.estimate:.3f} {_ci(*v.interval)}, range {min(values):.3f}–{max(values):.3f}"
    if j2_from > 0:  # the initial transient below the window: how far above J²(0) the window's line starts
        jump = [float(row.A_intercept) - float(curves[row.run].j2[0]) for row in zero.itertuples()
                if row.run in ratios and math.isfinite(ratios[row.run]) and math.isfinite(row.A_intercept)]
        if jump:
            ours += (f"; from J² >= {j2_from:g} (below it an initial transient: the line fitted over the J² window "
                     f"starts {min(jump):.3f}–{max(jump):.3f} above J² at epoch 0)")
    return _claim("EOC-training", claim, rule, "linear", ours,
                  f"{len(values)} zero-decay runs ({len(ratios) - len(values)} with < 6 ordered checkpoints left out)",
                  [v])


def _slope_law(c: Calibration, confidence: float, power: float) -> Claim:
    claim, rule = "A ≈ C·η/((1−α)B): exponents 1 for η, 1/(1−α), 1/B", "slope law"
    g = c.growth
    if not g.series_exponents:
        return _not_run("EOC-training", claim, rule, "1 each", "run experiment=calibrate_growth")
    parts, texts = [], []
    for var, (p, lo, hi, n) in g.series_exponents.items():
        parts.append(judge(p, (lo, hi), RULES[rule].margin(), n, confidence=confidence, power=power, params=2,
                           unit="runs", why=var))
        texts.append(f"{var}: p = {p:.3f} {_ci(lo, hi)}, {n} runs")
    missing = [v for v in ("lr", "momentum", "batch_size") if v not in g.series_exponents]
    for var in missing:
        parts.append(Verdict(INCONCLUSIVE, math.nan, (math.nan, math.nan), RULES[rule].margin(), 0, "runs", None,
                             power, confidence, f"{var}: no series inside the validity range"))
    lin = g.form_validity.get("linear") if getattr(g, "form_validity", None) else None
    law = f"; law: {g.law.describe()}" if g.law else ""
    lin_text = (f"; the linear law A = k·r/r_ref on its own holds within {g.law.tolerance:.0%} for "
                f"{lin[0] / REFERENCE_RATE:.3g}×–{lin[1] / REFERENCE_RATE:.3g}×" if lin and g.law else
                ("; the linear law on its own holds within tolerance on no window" if g.law else ""))
    return _claim("EOC-training", claim, rule, "1 each", "; ".join(texts) + law + lin_text,
                  f"{len(g.runs)} zero-decay runs", parts,
                  f"no series for {', '.join(missing)} inside the validity range" if missing else "")


def _collapse_claim(zero: "pd.DataFrame", curves: Mapping[str, Any], validity: Optional[tuple[float, float]],
                    confidence: float, power: float) -> Claim:
    from stabilityscope.analysis.scaling import collapse_of

    claim, rule = "equal η/((1−α)B) collapse against τ when ordered, not when chaotic", "collapse"
    groups: dict[float, dict[tuple, dict[str, Any]]] = {}
    for row in zero.itertuples():
        if row.run in curves:
            cv = curves[row.run]
            settings = groups.setdefault(round(math.log(cv.rate), 6), {})
            settings.setdefault((row.lr, row.momentum, row.batch_size), {})[str(row.seed)] = cv
    parts, texts, n_runs, chaotic_seen = [], [], 0, False
    for rk, settings in sorted(groups.items()):
        if len(settings) < 2:
            continue
        seeds = sorted(set.intersection(*(set(v) for v in settings.values())))
        ordered, chaotic = [], []
        for s in seeds:  # one curve per setting and seed: the seeds are the replicates of the spread
            cc = collapse_of([v[s] for v in settings.values()], f"rate {math.exp(rk):.3g}", math.exp(rk))
            ordered.append(cc.spread_ordered)
            chaotic.append(cc.spread_chaotic)
        n_runs += len(seeds) * len(settings)
        x = f"{math.exp(rk) / REFERENCE_RATE:.3g}×"
        vo = judge_mean(ordered, RULES[rule].margin("ordered"), confidence=confidence, power=power,
                        why=f"{x} ordered")
        parts.append(vo)
        text = f"{x} ({len(settings)} settings, {len(seeds)} seeds): ordered {_fmt(vo.estimate)} {_ci(*vo.interval)}"
        if np.isfinite(chaotic).any():
            chaotic_seen = True
            vc = judge_mean(chaotic, RULES[rule].margin("chaotic"), confidence=confidence, power=power,
                            why=f"{x} chaotic")
            parts.append(vc)
            text += f", chaotic {_fmt(vc.estimate)} {_ci(*vc.interval)}"
        else:
            text += ", never chaotic"
        texts.append(text)
    if not parts:
        return _not_run("EOC-training", claim, rule, "collapse",
                        "needs runs of one rate with different (η, α, B), e.g. calibrate_growth")
    tested = [math.exp(rk) for rk, settings in groups.items() if len(settings) >= 2]
    note = "" if not validity or any(within_range(r, validity) for r in tested) else \
        "no rate inside the growth law's validity range has two settings: the claim is tested only outside it"
    if not chaotic_seen:  # half of the claim untested: it cannot be reproduced in full
        parts.append(Verdict(INCONCLUSIVE, math.nan, (math.nan, math.nan), RULES[rule].margin("chaotic"), 0, "seeds",
                             None, power, confidence, "no equal-rate group reached the chaotic phase"))
        note = "; ".join(t for t in (note, "no equal-rate group reached the chaotic phase: the chaotic half is "
                                           "untested") if t)
    return _claim("EOC-training", claim, rule, "collapse (ordered) / none (chaotic)", "; ".join(texts),
                  f"{n_runs} runs", parts, note)


def _edge_claims(zero: "pd.DataFrame", curves: Mapping[str, Any], validity: Optional[tuple[float, float]],
                 confidence: float, power: float) -> list[Claim]:
    crossed = zero[np.isfinite(zero["J_at_optimal"].astype(float)) & (zero["j2_final"].astype(float) > 1.0)]
    crossed = crossed[crossed["run"].isin(list(curves))]
    outside = crossed[~within_range(crossed["rate"].astype(float), validity)] if validity else crossed.iloc[:0]
    crossed = crossed.drop(outside.index)
    left_out = (f"{len(outside)} runs that crossed at rates outside the growth law's validity range left out (J² runs "
                f"away there within a few checkpoints): " + ", ".join(sorted({f"{r / REFERENCE_RATE:.3g}×" for r in
                                                                             outside["rate"].astype(float)}))
                if len(outside) else "")
    if not len(crossed):
        note = "; ".join(v for v in ("no zero-decay run crossed the edge inside the growth law's validity range: run "
                                     "longer or faster (calibrate_growth)", left_out) if v)
        return [_not_run("EOC-training", "the best test loss lies close to J = 1", "optimum at the edge", "J ≈ 1",
                         note),
                _not_run("EOC-training", "without decay training continues into chaos and the test loss rises",
                         "chaos hurts", "loss rises", note)]
    located, j2_opt = [], []
    for r in crossed["run"]:
        loss = curves[r].test_loss
        if np.isfinite(loss).any():
            best = int(np.nanargmin(loss))
            if best < len(loss) - 1:  # the loss rose after its best: the optimum is located
                located.append(r)
                j2_opt.append(float(curves[r].j2[best]))
    rule = "optimum at the edge"
    v = judge_mean(j2_opt, RULES[rule].margin(), confidence=confidence, power=power, unit="runs")
    edge = _claim("EOC-training", "the best test loss lies close to J = 1", rule, "J ≈ 1",
                  f"J² = {_fmt(v.estimate)} {_ci(*v.interval)}" if located else "—",
                  f"{len(located)} zero-decay runs that crossed the edge ({len(crossed) - len(located)} more still "
                  f"improving at their end, left out)", [v],
                  "; ".join(t for t in ("" if located else "every run that crossed the edge was still improving at its "
                                                           "end", left_out) if t))
    rise = (crossed["final_test_loss"].astype(float) / crossed["test_loss_min"].astype(float) - 1).to_numpy()
    rule = "chaos hurts"
    w = judge_mean(rise, RULES[rule].margin(), confidence=confidence, power=power, unit="runs")
    hurts = _claim("EOC-training", "without decay training continues into chaos and the test loss rises", rule,
                   "loss rises", f"final / best test loss − 1 = {_fmt(w.estimate)} {_ci(*w.interval)} "
                   f"({int((rise > 0.01).sum())} of {len(rise)} runs above 1%)", f"{len(rise)} runs", [w], left_out)
    return [edge, hurts]


def _plateaus_claim(c: Calibration, confidence: float, power: float) -> Claim:
    claim, rule = "J² saturates at a plateau that falls as the decay grows", "plateaus"
    p = c.plateau
    if p.law is None:
        return _not_run("EOC-training", claim, rule, "falls with decay",
                        "run experiment=calibrate_decay (runs of >= 3 relaxation times)")
    used = int((p.runs["saturated"] & p.runs["in_growth_range"]).sum())
    params = 3 if math.isfinite(p.law.s_ci[0]) else 2
    v = judge(p.law.q, p.law.q_ci, RULES[rule].margin(), used, confidence=confidence, power=power, params=params,
              unit="runs")
    rate = (f"rate exponent s = {p.law.s:.3f} {_ci(*p.law.s_ci)}" if math.isfinite(p.law.s_ci[0])
            else "rate exponent not fitted (saturated runs at one rate)")
    return _claim("EOC-training", claim, rule, "falls with decay",
                  f"J²∞ ∝ wd^−q, q = {p.law.q:.3f} {_ci(*p.law.q_ci)}; {rate}",
                  f"{used} saturated runs inside the growth law's range", [v])


def _lambda_star_claim(c: Calibration, confidence: float, power: float) -> Claim:
    claim, rule = "a decay puts the plateau at the edge (λ*)", "lambda star"
    p = c.plateau
    if not len(p.runs):
        return _not_run("EOC-training", claim, rule, "exists (value not given)", "run experiment=calibrate_decay")
    parts, texts = [], []
    inside = set(p.runs.loc[p.runs["in_growth_range"].astype(bool), "rate_key"])
    outside = sorted(set(p.runs["rate_key"]) - inside)
    for r in p.lambda_star.itertuples():
        if r.rate not in inside:  # J² runs away there: no balance of growth and decay to place (the plateau law's rule)
            continue
        x = f"{r.rate_x:.3g}×"
        sat = p.runs[(p.runs["rate_key"] == r.rate) & p.runs["saturated"]]
        by_wd = {float(wd): g["j2_plateau"].astype(float).to_numpy() for wd, g in sat.groupby("weight_decay")}
        decays = sorted(by_wd)
        means = [float(np.nanmean(by_wd[d])) for d in decays]
        pair = next(((a, b) for a, b, ma, mb in zip(decays, decays[1:], means, means[1:]) if ma > 1.0 >= mb), None)
        star = f"λ* = {_fmt(r.lambda_star, 4)} {_ci(r.seed_ci_low, r.seed_ci_high)}"
        if pair is None:
            unsaturated = sorted(set(p.runs.loc[(p.runs["rate_key"] == r.rate) & ~p.runs["saturated"],
                                                "weight_decay"].astype(float)))
            parts.append(_no_bracket(sat, decays, means, unsaturated, x, confidence, power))
            texts.append(f"{x}: not bracketed by saturated runs")
            continue
        above = judge_mean(by_wd[pair[0]], RULES[rule].margin("above"), confidence=confidence, power=power,
                           why=f"{x} plateau at {pair[0]:g}")
        below = judge_mean(by_wd[pair[1]], RULES[rule].margin("below"), confidence=confidence, power=power,
                           why=f"{x} plateau at {pair[1]:g}")
        parts += [above, below]
        texts.append(f"{x}: {star}; plateau {_fmt(above.estimate)} {_ci(*above.interval)} at {pair[0]:g}, "
                     f"{_fmt(below.estimate)} {_ci(*below.interval)} at {pair[1]:g}")
    if not parts:
        return _not_run("EOC-training", claim, rule, "exists (value not given)", "no decay sweep at any rate")
    bracketless = [pt.why for pt in parts if pt.margin is RULES[rule].margin("falls")]
    if outside:
        bracketless.append(_outside_text(outside))
    return _claim("EOC-training", claim, rule, "exists (value not given)", "; ".join(texts),
                  f"{int(p.lambda_star['n_saturated'].sum())} saturated decay runs", parts, "; ".join(bracketless))


def _outside_text(rate_keys: Sequence[float]) -> str:
    return ("rates outside the growth law's validity range left out (J² is not a balance of growth and decay "
            "there): " + ", ".join(f"{rk / REFERENCE_RATE:.3g}×" for rk in rate_keys))


def _no_bracket(sat: "pd.DataFrame", decays: list[float], means: list[float], unsaturated: list[float], x: str,
                confidence: float, power: float) -> Verdict:
    """A rate whose saturated plateaus do not bracket the edge. λ* cannot exist there when the plateau does not
    fall with the decay (the slope of log J²∞ on log decay has an interval at or above 0): not reproduced. When it
    falls, the decays tried simply stop short of the edge: inconclusive, and more decays (not seeds) settle it."""
    margin = RULES["lambda star"].margin("falls")
    listed = ", ".join(f"{d:g}: {m:.3g}" for d, m in zip(decays, means)) or "none"
    if len(decays) < 2 or len(sat) < 3:
        return Verdict(INCONCLUSIVE, math.nan, (math.nan, math.nan), margin, len(sat), "runs", None, power,
                       confidence, f"{x}: {len(decays)} saturated decay(s) ({listed}): too few to bracket the edge")
    fit = ols(np.log(sat["weight_decay"].to_numpy(float)), np.log(sat["j2_plateau"].to_numpy(float)), confidence)
    v = judge(fit["slope"], (fit["lo"], fit["hi"]), margin, len(sat), confidence=confidence, power=power, params=2,
              unit="runs", why=f"{x}: slope of log J²∞ on log decay, plateaus {listed}")
    if v.verdict == REPRODUCED:  # the plateau falls, the grid does not reach the edge
        above = all(m > 1 for m in means)
        short = [d for d in unsaturated if (d > max(decays) if above else d < min(decays))]
        fix = (f"the runs at {', '.join(f'{d:g}' for d in short)} did not saturate: run them longer" if short else
               f"extend the decays {'upwards' if above else 'downwards'}")
        return Verdict(INCONCLUSIVE, v.estimate, v.interval, margin, v.n, "runs", None, power, confidence,
                       f"{x}: the saturated plateaus ({listed}) fall with the decay but lie all "
                       f"{'above' if above else 'below'} the edge: {fix}")
    return v


def _best_decay_claim(c: Calibration, confidence: float, power: float) -> Claim:
    claim, rule = "the decay whose plateau is the edge gives the best final test loss", "best decay at the edge"
    p = c.plateau
    if not len(p.runs) or not len(p.lambda_star):
        return _not_run("EOC-training", claim, rule, "best at λ*", "run experiment=calibrate_decay")
    stars = {float(r.rate): float(r.lambda_star) for r in p.lambda_star.itertuples()}  # keyed by rate_key
    parts, texts = [], []
    inside = set(p.runs.loc[p.runs["in_growth_range"].astype(bool), "rate_key"])
    for (rk, epochs), g in p.runs.groupby(["rate_key", "last_epoch"]):
        star = stars.get(float(rk), math.nan) if rk in inside else math.nan
        if not math.isfinite(star) or g["weight_decay"].nunique() < 2:
            continue
        logs = {float(wd): np.log(gg["final_test_loss"].astype(float).to_numpy())
                for wd, gg in g.groupby("weight_decay")}
        grid = np.array(sorted(logs))
        edge = float(grid[np.argmin(np.abs(np.log(grid / star)))])
        x = f"{rk / REFERENCE_RATE:.3g}× ({epochs:g} epochs)"
        row = [judge_difference(logs[edge], logs[d], RULES[rule].margin(), confidence=confidence, power=power,
                                why=f"{x}: {edge:g} against {d:g}") for d in grid if d != edge]
        parts += row
        verdict, _ = combine(row)
        means = "; ".join(f"{d:g}: {math.exp(float(np.mean(logs[d]))):.4f}" for d in grid)
        worst = max(row, key=lambda v: v.interval[1] if math.isfinite(v.interval[1]) else math.inf)
        texts.append(f"{x}: nearest λ* {edge:g}; geometric-mean losses {means}; largest log-ratio edge − other "
                     f"{_fmt(worst.estimate)} {_ci(*worst.interval)} → {verdict}")
    if not parts:
        return _not_run("EOC-training", claim, rule, "best at λ*",
                        "no rate's plateaus bracket the edge, so no decay puts the plateau there",
                        f"{len(p.runs)} decay runs")
    return _claim("EOC-training", claim, rule, "best at λ*", "; ".join(texts), f"{len(p.runs)} decay runs", parts)


def _training_claims(c: Calibration, confidence: float, power: float) -> list[Claim]:
    runs = c.sweep.runs
    curves = c.sweep.curves
    # every SGD run without decay that has a curve: the claims about the path do not need its slope A (the fastest
    # and slowest rates have none inside the growth law's J² window, and the fastest are the ones that cross the edge)
    zero = runs[(runs["weight_decay"] == 0) & ~runs["status"].isin(EXCLUDED_STATUSES) & (runs["optimizer"] == "sgd")
                & runs["run"].isin(list(curves))]
    window = c.sweep.settings.j2_window
    validity = c.growth.law.validity if c.growth.law is not None else None
    return [_linear_growth(zero, curves, window[0] if window else 0.0, confidence, power),
            _slope_law(c, confidence, power),
            _collapse_claim(zero, curves, validity, confidence, power),
            *_edge_claims(zero, curves, validity, confidence, power),
            _plateaus_claim(c, confidence, power), _lambda_star_claim(c, confidence, power),
            _best_decay_claim(c, confidence, power)]


# --------------------------------------------------------------------------------------- the guideline


def validate_guideline(source: Source, *, band: float = 0.15, layer: str = "hidden", laws: Any = None,
                       budgets: Sequence[int] = (50, 100, 200)) -> "pd.DataFrame":
    """The guideline's promise checked on ``experiment=calibrate_guideline`` runs: one row per budget.

    A run belongs to budget E when its config has ``guideline.budget`` = E; the recommended run is the
    one with ``guideline.decay_factor`` = 1. A budget E (each of ``budgets`` and every budget trained) is
    also read from longer runs whose settings are ``recommend(E)``'s (lr, momentum, batch, decay × factor):
    every budget past the laws' slowest calibrated rate gets the same settings, and the learning rate and
    decay are constant, so a 200-epoch run passes through the very state a 100-epoch run ends in. Such
    runs are used, truncated at epoch E, when no run trained for E matches ``recommend(E)`` now; runs
    trained for E on settings that ``recommend(E)`` no longer gives are set aside when matching ones exist.
    Columns: the predicted reach epoch (``recommend(E)`` now), the runs' trained length (``trained_epochs``),
    whether the runs reached epoch E, per seed whether |J² − 1| <= ``band`` held from the reach epoch to E
    (and the largest deviation there: ``max_deviation_after_reach``, and per seed ``deviations``), the test
    losses at epoch E of every factor (mean, std; per run in ``factor_losses``), the descriptive flags
    ``holds_band`` (every seed inside the band) and ``loss_within_spread`` (the recommended factor's mean
    within the seed spread of the best), and the runs used (``paths``). The verdict of the claim is
    :func:`reproduce`'s rule "guideline", made on ``deviations`` and ``factor_losses``. ``laws``: as
    :func:`recommend` takes them.
    """
    import pandas as pd

    from stabilityscope.analysis.guideline import recommend

    runs = _guideline_runs(source, layer)
    out: list[dict[str, Any]] = []
    for budget in sorted(set(runs["budget"]) | {int(b) for b in budgets}) if len(runs) else []:
        try:
            with warnings.catch_warnings():  # an extrapolated budget is reported in the row (inside_laws)
                warnings.simplefilter("ignore", UserWarning)
                r = recommend(int(budget), laws=laws, extrapolate=True)
            reach = r.reach_epoch
        except ValueError:
            r, reach = None, math.nan
        matching = runs.apply(lambda x: _trained_recommended(x, r), axis=1).astype(bool)
        own = runs[runs["budget"] == budget]
        own_now = own[matching[own.index]]  # a sweep trained on older laws may sit beside one on today's
        longer = runs[(runs["budget"] > budget) & matching]
        if (own_now["factor"] == 1.0).any():
            g = own_now.copy()
        elif (longer["factor"] == 1.0).any():
            g = longer.copy()
        else:  # only runs of other settings: judged as they are, and flagged (settings_match False)
            g = own.copy()
        if not len(g):
            continue
        # every run read up to epoch E: (t, J², test loss) at the checkpoints t <= E
        kept = [t <= budget + 1e-9 for t in g["t"]]
        g["t"] = [t[k] for t, k in zip(g["t"], kept)]
        g["j2"] = [j2[k] for j2, k in zip(g["j2"], kept)]
        g["final_test_loss"] = [float(v[k][-1]) if k.any() else math.nan for v, k in zip(g["test_loss"], kept)]
        rec = g[g["factor"] == 1.0]
        complete = bool(len(rec)) and all(len(t) and float(t[-1]) >= budget for t in rec["t"])
        held, worst = [], []
        for t, j2 in zip(rec["t"], rec["j2"]):
            after = t >= reach
            dev = float(np.max(np.abs(j2[after] - 1))) if after.any() else math.nan
            worst.append(dev)
            held.append(bool(after.any()) and dev <= band)
        losses = g.groupby("factor")["final_test_loss"].agg(["mean", "std", "count"])
        per_factor = {float(f): tuple(float(v) for v in gg["final_test_loss"]) for f, gg in g.groupby("factor")}
        best = float(losses["mean"].idxmin())
        stds = [losses.loc[best, "std"], losses.loc[1.0, "std"] if 1.0 in losses.index else math.nan]
        spread = max((float(v) for v in stds if math.isfinite(v)), default=math.nan)  # NaN: one seed, no spread
        rec_loss = float(losses.loc[1.0, "mean"]) if 1.0 in losses.index else math.nan
        inside = bool(r is not None and not r.extrapolated)
        out.append({"budget": int(budget), "trained_epochs": int(g["budget"].max()), "complete": complete,
                    "inside_laws": inside, "runs": len(g), "seeds": int(rec["seed"].nunique()),
                    "reach_epoch": reach, "settings_match": bool(len(rec)) and bool(matching[rec.index].all()),
                    "holds_band": bool(held) and all(held),
                    "max_deviation_after_reach": float(np.nanmax(worst)) if worst else math.nan,
                    "recommended_loss": rec_loss, "best_factor": best, "best_loss": float(losses.loc[best, "mean"]),
                    "spread": spread,
                    "loss_within_spread": bool(math.isfinite(rec_loss)
                                               and rec_loss - losses.loc[best, "mean"] <= spread),
                    "losses": "; ".join(f"×{f:g}: {m:.4f} ± {sd:.4f}"
                                        for f, (m, sd) in losses[["mean", "std"]].iterrows()),
                    "deviations": tuple(worst), "factor_losses": per_factor,
                    "paths": tuple(g["path"])})
    return pd.DataFrame(out)


def _guideline_runs(source: Source, layer: str) -> "pd.DataFrame":
    """One row per validation run: its budget, decay factor, seed, settings and per-checkpoint t, J², test loss."""
    import pandas as pd

    rows = []
    for path in find_traces(source):
        with open_trace(path) as tr:
            flat = flatten_config(tr.config or {})
            if not _is_guideline_run(flat, Path(path)) or len(tr) == 0 or layer not in tr.layers:
                continue
            rows.append({"path": str(path), "budget": int(flat["guideline.budget"]),
                         "factor": float(flat.get("guideline.decay_factor", 1.0)), "seed": flat.get("train.seed"),
                         "lr": float(flat.get("optim.lr", math.nan)),
                         "momentum": float(flat.get("optim.momentum", math.nan)),
                         "weight_decay": float(flat.get("optim.weight_decay", math.nan)),
                         "batch_size": int(flat.get("train.batch_size", 0)),
                         "t": tr.epoch_fraction.astype(float), "j2": tr.stat(layer, "J").astype(float) ** 2,
                         "test_loss": tr.metric("test_loss").astype(float)})
    return pd.DataFrame(rows, columns=["path", "budget", "factor", "seed", "lr", "momentum", "weight_decay",
                                       "batch_size", "t", "j2", "test_loss"])


def _trained_recommended(run: Any, r: Any) -> bool:
    """Whether one run trained ``recommend()``'s settings (lr, momentum, batch) with its decay × the run's factor."""
    return bool(r is not None and math.isclose(run["lr"], r.lr, rel_tol=1e-3)
                and math.isclose(run["momentum"], r.momentum, rel_tol=1e-6) and run["batch_size"] == r.batch_size
                and math.isclose(run["weight_decay"], r.weight_decay * run["factor"], rel_tol=1e-3))


def _is_guideline_run(flat: Mapping[str, Any], trace_path: Path) -> bool:
    """A validation run of ``experiment=calibrate_guideline``: ``guideline.validate`` in its config. Every run's
    config holds ``guideline.budget`` (a default), so that alone says nothing. Runs trained before the key
    existed count when their launch overrides (Hydra's ``.hydra/overrides.yaml``) name the preset."""
    if "guideline.validate" in flat:
        return bool(flat["guideline.validate"])
    overrides = trace_path.parent / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(overrides.read_text(encoding="utf-8")) if overrides.is_file() else []
    except (OSError, yaml.YAMLError):
        return False
    return any(str(item).startswith("experiment=calibrate_guideline") for item in items or [])


def _distinct_runs(table: "pd.DataFrame") -> int:
    """How many runs a validate_guideline table rests on: a run read at two budgets counts once."""
    return len(set().union(*table["paths"])) if len(table) else 0


def _guideline_claim(source: Source, confidence: float, power: float) -> Claim:
    table = validate_guideline(source)
    claim = "recommend(E) holds J² within 0.15 of 1 from its reach epoch, at a near-best final test loss"
    rule = "guideline"
    done = table[table["complete"]] if len(table) else table
    if not len(done):
        note = ("no experiment=calibrate_guideline runs trained to their budget" if not len(table) else
                f"runs for budgets {', '.join(str(b) for b in table['budget'])} did not train the whole budget (a "
                f"quick variant)")
        return _not_run("stabilityscope", claim, rule, "(ours)", note, f"{_distinct_runs(table)} runs")
    parts, texts = [], []
    for r in done.itertuples():
        x = f"E = {r.budget}"
        band = judge_mean(r.deviations, RULES[rule].margin("band"), confidence=confidence, power=power,
                          why=f"{x}: band")
        logs = {f: np.log(np.asarray(v, dtype=float)) for f, v in r.factor_losses.items()}
        loss = [judge_difference(logs[1.0], logs[f], RULES[rule].margin("loss"), confidence=confidence, power=power,
                                 why=f"{x}: ×1 against ×{f:g}") for f in sorted(logs) if f != 1.0 and 1.0 in logs]
        parts += [band, *loss]
        worst = max(loss, key=lambda v: v.interval[1] if math.isfinite(v.interval[1]) else math.inf) if loss else None
        read_at = f" (read at epoch {r.budget} of {r.trained_epochs}-epoch runs)" if r.trained_epochs > r.budget else ""
        texts.append(f"{x}{'' if r.inside_laws else ' (extrapolated)'}{read_at}"
                     f": max |J² − 1| after epoch {r.reach_epoch:.1f} = {_fmt(band.estimate)} {_ci(*band.interval)}; "
                     f"test loss ×1 {_fmt(r.recommended_loss, 4)} vs best ×{r.best_factor:g} {_fmt(r.best_loss, 4)}"
                     + (f", largest log-ratio ×1 − other {_fmt(worst.estimate)} {_ci(*worst.interval)}"
                        if worst else ""))
    note = ("" if done["settings_match"].all() else
            "the laws changed since these runs: their settings differ from recommend() now")
    return _claim("stabilityscope", claim, rule, "(ours)", "; ".join(texts), f"{_distinct_runs(done)} runs", parts,
                  note)


# ---------------------------------------------------------------------------------------- EOC-optimality


def _map_layer(tr: Any) -> Optional[str]:
    """The iterated map of a run: the model map (``map:<module>``, EOC-optimality's input → layer) when
    recorded, else the first layer with map measures (a square FC layer)."""
    layers = [layer for layer in tr.layers if {"s_mean", "lambda_max", "attractor"} <= set(tr.stats(layer))]
    model_maps = [layer for layer in layers if layer.startswith("map:")]
    return (model_maps or layers or [None])[0]


ORDERED_CYCLES = ("periodic", "quasi_periodic")  # the (pseudo)periodic side of EOC-optimality's edge


def at_boundary(attractors: Sequence[str], best: int, reach: int = 2) -> bool:
    """Whether checkpoint ``best`` lies at the (pseudo)periodic–chaotic boundary of an attractor sequence:
    periodic or quasi-periodic with a chaotic checkpoint within ``reach``, or chaotic with a periodic or
    quasi-periodic one among the ``reach`` before it ('where D∞ starts rising from 0')."""
    a = list(attractors)
    if a[best] in ORDERED_CYCLES:
        return "chaotic" in a[max(0, best - reach): best + reach + 1]
    if a[best] == "chaotic":
        return any(x in ORDERED_CYCLES for x in a[max(0, best - reach): best])
    return False


def _line(x: np.ndarray, y: np.ndarray, confidence: float) -> str:
    """λ_max = a·ln s + b with t intervals of a and b, and the correlation: the regression line the docs quote."""
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return "too few points for a line"
    X = np.column_stack([x, np.ones(n)])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    res = y - X @ beta
    se = np.sqrt(np.diag(float(res @ res) / (n - 2) * np.linalg.inv(X.T @ X)))
    t = t_quantile(confidence, n - 2)
    r = float(np.corrcoef(x, y)[0, 1])
    return (f"λ_max = {beta[0]:.3f} {_ci(beta[0] - t * se[0], beta[0] + t * se[0])}·ln s "
            f"{'+' if beta[1] >= 0 else '−'} {abs(beta[1]):.3f} {_ci(beta[1] - t * se[1], beta[1] + t * se[1])}, "
            f"correlation {r:.3f}")


def _optimality_claims(paths: Sequence[Path], confidence: float, power: float) -> tuple[list[Claim], list[str]]:
    """EOC-optimality's claims, one set per model (an MLP's and a CNN's maps are different maps: their s at
    the optimum is not one population), from every trace that iterated a map."""
    per_model: dict[str, dict[str, list]] = {}
    used: list[str] = []
    for path in paths:
        with open_trace(path) as tr:
            layer = _map_layer(tr)
            if layer is None or len(tr) == 0:
                continue
            loss = tr.metric("test_loss").astype(float)
            s = tr.stat(layer, "s_mean").astype(float)
            lam = tr.stat(layer, "lambda_max").astype(float)
            att = [str(a) for a in tr.stat(layer, "attractor")]
            name = str((tr.config or {}).get("model", {}).get("name", path.parent.name))
        used.append(f"{path.parent.name} ({name}, layer {layer})")
        g = per_model.setdefault(name, {"s_opt": [], "pairs": [], "positive_other": 0, "sequences": [], "boundary": []})
        best = int(np.nanargmin(loss)) if np.isfinite(loss).any() else None
        if best is not None:
            g["s_opt"].append(s[best])
            g["boundary"].append(at_boundary(att, best))
        chaotic = np.array([a == "chaotic" for a in att]) & (s > 0) & np.isfinite(lam)
        g["pairs"] += list(zip(lam[chaotic], np.log(s[chaotic])))
        g["positive_other"] += int(((lam > 0) & ~chaotic).sum())  # λ_max > 0 but not chaotic (divergent, ...)
        runs_of = [att[0]] + [a for prev, a in zip(att, att[1:]) if a != prev]
        g["sequences"].append(" → ".join(runs_of))
    out: list[Claim] = []
    if not used:
        for claim, rule in (("the best test loss lies near s = 1", "optimum near s = 1"),
                            ("λ_max ≈ ln s in the chaotic regime", "lambda_max = ln s"),
                            ("the edge is the boundary of the (pseudo)periodic and chaotic phases",
                             "attractor sequence")):
            out.append(_not_run("EOC-optimality", claim, rule, "—", "run experiment=eoc_mlp (or eoc_cnn) and pass its "
                                                                     "run directory"))
        return out, used
    for name, g in per_model.items():
        out += _optimality_claims_of(g, f"{len(g['sequences'])} run(s) of {name}", confidence, power)
    return out, used


def _optimality_claims_of(g: Mapping[str, Any], runs_text: str, confidence: float, power: float) -> list[Claim]:
    """The three claims for one model's runs: s at the optimum, λ_max against ln s, the attractor sequence."""
    rule = "optimum near s = 1"
    v = judge_mean(g["s_opt"], RULES[rule].margin(), confidence=confidence, power=power, unit="runs")
    out = [_claim("EOC-optimality", "the best test loss lies near s = 1", rule, "s ≈ 1",
                  f"s = {_fmt(v.estimate)}" + (f" {_ci(*v.interval)}" if math.isfinite(v.interval[0]) else ""),
                  runs_text, [v])]
    rule = "lambda_max = ln s"
    other = (f"; {g['positive_other']} more checkpoints with λ_max > 0 are not chaotic (divergent or within the "
             f"classifier's tolerance) and are left out" if g["positive_other"] else "")
    if g["pairs"]:
        lam, ln_s = (np.asarray(v, dtype=float) for v in zip(*g["pairs"]))
        k, lo, hi = origin_slope(ln_s, lam, confidence)
        w = judge(k, (lo, hi), RULES[rule].margin(), len(lam), confidence=confidence, power=power, params=1,
                  unit="chaotic checkpoints")
        dev, scale = float(np.median(np.abs(lam - ln_s))), float(np.median(np.abs(ln_s)))
        out.append(_claim("EOC-optimality", "λ_max ≈ ln s in the chaotic regime", rule, "λ_max = ln s",
                          f"k = {k:.3f} {_ci(lo, hi)} over {len(lam)} chaotic checkpoints; "
                          f"{_line(ln_s, lam, confidence)}; median |λ_max − ln s| = {dev:.3g} against median "
                          f"|ln s| = {scale:.3g}{other}", runs_text, [w]))
    else:
        out.append(_not_run("EOC-optimality", "λ_max ≈ ln s in the chaotic regime", rule, "λ_max = ln s",
                            "no checkpoint the classifier labels chaotic" + other, runs_text))
    rule = "attractor sequence"
    hits = int(sum(g["boundary"]))
    f = judge_fraction(hits, len(g["boundary"]), RULES[rule].margin(), confidence=confidence, power=power)
    out.append(_claim("EOC-optimality", "the edge is the boundary of the (pseudo)periodic and chaotic phases", rule,
                      "periodic/quasi-periodic → chaotic, optimum at the boundary",
                      f"{hits} of {len(g['boundary'])} runs with the optimum at the boundary {_ci(*f.interval)}; "
                      + " | ".join(g["sequences"]), runs_text, [f]))
    return out


# -------------------------------------------------------------------------------------------- the report


def reproduce(source: Source, *, layer: str = "hidden", tolerance: float = 0.15, confidence: float = 0.95,
              power: float = 0.8, n_boot: int = 1000, seed: int = 0,
              j2_window: Optional[Sequence[float]] = DEFAULT_J2_WINDOW) -> Reproduction:
    """Check the claims (module docstring) on the traces of ``source`` (dirs, globs, runs tables, or a list).

    A runs table (:mod:`stabilityscope.analysis.runs_table`; a packaged one such as the canonical laws') gives the
    training claims without its traces; EOC-optimality's and the guideline's claims need the traces.

    Args:
        confidence: level of every interval a verdict is made on.
        power: the probability of a decision that an inconclusive verdict's seed count plans for.
        layer, tolerance, n_boot, seed, j2_window: as :func:`stabilityscope.analysis.calibration.calibrate`.

    Raises:
        TraceError: ``source`` matches no trace.
    """
    items = [source] if isinstance(source, (str, Path)) or hasattr(source, "path") else list(source)
    traces, tables = split_sources(items)
    paths = find_traces(traces) if traces else []
    canonical: list[Any] = []
    maps, notes = [], []
    for path in paths:
        try:
            with open_trace(path) as tr:
                flat = flatten_config(tr.config or {})
                is_map = _map_layer(tr) is not None  # any trace that iterated a map, the canonical network's too
        except TraceError as exc:
            notes.append(f"{path}: unreadable ({exc})")
            continue
        if flat.get("model.name") == "fmnist_fc" and flat.get("optim.name") == "sgd":
            canonical.append(path)
        if is_map:
            maps.append(path)
    # runs tables hold canonical-network runs (their series, not their maps or guideline settings)
    cal = calibrate(canonical + tables, layer=layer, tolerance=tolerance, confidence=confidence, n_boot=n_boot,
                    seed=seed, j2_window=j2_window) if canonical or tables else None
    claims = _training_claims(cal, confidence, power) if cal is not None else [
        _not_run("EOC-training", "the training path and its scaling laws", "slope law", "—",
                 "no canonical-network SGD runs among the traces: run experiment=calibrate_growth and calibrate_decay")]
    opt, used = _optimality_claims(maps, confidence, power)
    claims.append(_guideline_claim(canonical, confidence, power) if canonical else _not_run(
        "stabilityscope", "recommend(E) holds J² near 1 at a near-best test loss", "guideline", "(ours)",
        "run experiment=calibrate_guideline"))
    return Reproduction(str(source) if isinstance(source, (str, Path)) else ", ".join(map(str, source)),
                        claims + opt, cal, used, notes, confidence, power)
