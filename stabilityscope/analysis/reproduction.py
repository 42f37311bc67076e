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
``reproduction.json``): one row per claim with the source's
value where it states one, ours with its interval, the runs it comes from and a verdict. The
verdict rules are ours and fixed in :data:`RULES` (written into the report), so that a verdict is a
function of the measurements, never of the wish to agree:

- *reproduced*: the measurement meets the rule; *partly*: it meets the weaker rule; *not
  reproduced*: neither; *not run*: the runs given hold nothing to check the claim with.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np
import yaml

from stabilityscope.analysis.calibration import REFERENCE_RATE, Calibration, calibrate
from stabilityscope.analysis.collection import Source, find_traces, flatten_config
from stabilityscope.analysis.stats import ols, t_interval
from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import open_trace

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Claim", "RULES", "Reproduction", "reproduce", "validate_guideline"]

RULES = {
    "linear growth": "reproduced: median R² of the linear fit of J² over each zero-decay run's ordered part >= 0.98; "
                     "partly: >= 0.9",
    "slope law": "reproduced: the exponent's interval contains 1 for each of η, 1/(1−α), 1/B (inside the growth law's "
                 "validity range); partly: for at least one",
    "collapse": "reproduced: runs of equal η/((1−α)B) but different (η, α, B) spread by < 5% (relative std of J²) "
                "in the ordered phase and by more than twice that in the chaotic phase; partly: ordered < chaotic",
    "optimum at the edge": "reproduced: mean J at the best test loss (zero-decay runs that cross the edge) within 0.15 "
                           "of 1; partly: within 0.3",
    "chaos hurts": "reproduced: every zero-decay run that crossed the edge ends with a test loss > 1% above its best; "
                   "partly: at least half",
    "plateaus": "reproduced: the plateau law's decay exponent q has an interval above 0 (plateaus fall with decay); "
                "partly: q > 0",
    "lambda star": "reproduced: a decay with plateau J² = 1 is bracketed at every decay-sweep rate; partly: at one",
    "best decay at the edge": "reproduced: at every rate the best final test loss is at the grid decay nearest λ* or "
                              "not distinguishable from it (Welch p > 0.05); partly: at some rates",
    "guideline": "reproduced: at every budget trained to its end (experiment=calibrate_guideline), every seed of the "
                 "recommended run holds |J² − 1| <= 0.15 from recommend()'s reach epoch to the end, and its mean final "
                 "test loss is within the seed spread (the larger std) of the best decay factor's; partly: one of the two",
    "optimum near s = 1": "reproduced: mean s (M1) at the best test loss within 0.15 of 1; partly: within 0.3",
    "lambda_max = ln s": "reproduced: median |λ_max − ln s| <= 0.25·median |ln s| over chaotic checkpoints "
                         "(λ_max > 0); partly: <= 0.5",
    "attractor sequence": "reproduced: the attractor at the best test loss is periodic or quasi-periodic within two "
                          "checkpoints of a chaotic one; partly: a chaotic or quasi-periodic attractor occurs",
}


@dataclass
class Claim:
    """One row of the report."""

    paper: str  # EOC-training, EOC-optimality, or stabilityscope (the guideline, our own claim)
    claim: str
    rule: str  # key of RULES
    source_value: str
    ours: str
    runs: str
    verdict: str  # reproduced, partly, not reproduced, not run
    note: str = ""


@dataclass
class Reproduction:
    source: str
    claims: list[Claim]
    calibration: Optional[Calibration]
    map_runs: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "claims": [asdict(c) for c in self.claims], "rules": RULES,
                "map_runs": self.map_runs, "notes": self.notes}


def _verdict(strong: bool, weak: bool) -> str:
    return "reproduced" if strong else ("partly" if weak else "not reproduced")


def _fmt(v: float, digits: int = 3) -> str:
    return "—" if not (isinstance(v, (int, float)) and math.isfinite(v)) else f"{v:.{digits}g}"


def _training_claims(c: Calibration, confidence: float) -> list[Claim]:
    from stabilityscope.analysis.scaling import collapse_of

    out: list[Claim] = []
    runs = c.sweep.runs
    zero = runs[(runs["weight_decay"] == 0) & runs["used_in_fits"]]
    curves = [c.sweep.curves[r] for r in zero["run"] if r in c.sweep.curves]
    not_run = "run experiment=calibrate_growth"
    # 1. linear growth in the ordered phase
    r2 = [ols(cv.epochs[cv.ordered], cv.j2[cv.ordered], confidence)["r2"] for cv in curves if cv.ordered.sum() >= 3]
    r2 = [v for v in r2 if math.isfinite(v)]
    if r2:
        med = float(np.median(r2))
        out.append(Claim("EOC-training", "J² grows linearly in epochs in the ordered phase", "linear growth", "linear",
                         f"median R² {med:.4f} (min {min(r2):.4f})", f"{len(r2)} zero-decay runs",
                         _verdict(med >= 0.98, med >= 0.9)))
    else:
        out.append(Claim("EOC-training", "J² grows linearly in epochs in the ordered phase", "linear growth", "linear",
                         "—", "none", "not run", not_run))
    # 2. the slope law
    g = c.growth
    if g.series_exponents:
        parts, hits = [], 0
        for var, (p, lo, hi, n) in g.series_exponents.items():
            hits += bool(lo <= 1 <= hi)
            parts.append(f"{var}: p = {p:.3f} ({_fmt(lo)}–{_fmt(hi)}, {n} runs)")
        law = f"; law: {g.law.describe()}" if g.law else ""
        out.append(Claim("EOC-training", "A ≈ C·η/((1−α)B): exponents 1 for η, 1/(1−α), 1/B", "slope law", "1 each",
                         "; ".join(parts) + law, f"{len(g.runs)} zero-decay runs",
                         _verdict(hits == len(g.series_exponents) == 3, hits >= 1)))
    else:
        out.append(Claim("EOC-training", "A ≈ C·η/((1−α)B)", "slope law", "1 each", "—", "none", "not run", not_run))
    # 3. collapse against τ among runs of one rate with different (η, α, B)
    groups = {}
    for cv, row in zip(curves, [zero[zero["run"] == cv.run].iloc[0] for cv in curves]):
        groups.setdefault(round(math.log(cv.rate), 6), {}).setdefault((row["lr"], row["momentum"], row["batch_size"]),
                                                                       []).append(cv)
    spreads = []
    for rk, settings in groups.items():
        if len(settings) >= 2:
            members = [v[0] for v in settings.values()]  # one seed per setting: the seeds' own spread is not the claim
            cc = collapse_of(members, f"rate {math.exp(rk):.3g}", math.exp(rk))
            spreads.append((math.exp(rk), cc.spread_ordered, cc.spread_chaotic, len(members)))
    if spreads:
        o = [s[1] for s in spreads if math.isfinite(s[1])]
        ch = [s[2] for s in spreads if math.isfinite(s[2])]
        mo, mc = (float(np.mean(o)) if o else math.nan), (float(np.mean(ch)) if ch else math.nan)
        text = "; ".join(f"{r / REFERENCE_RATE:.3g}×: ordered {_fmt(so)}, chaotic {_fmt(sc)} ({n} settings)"
                         for r, so, sc, n in spreads)
        strong = math.isfinite(mo) and mo < 0.05 and math.isfinite(mc) and mc > 2 * mo
        weak = math.isfinite(mo) and math.isfinite(mc) and mo < mc
        out.append(Claim("EOC-training", "equal η/((1−α)B) collapse against τ when ordered, not when chaotic", "collapse",
                         "collapse (ordered) / none (chaotic)", text, f"{sum(s[3] for s in spreads)} runs",
                         _verdict(strong, weak), "" if ch else "no equal-rate group reached the chaotic phase"))
    else:
        out.append(Claim("EOC-training", "equal η/((1−α)B) collapse against τ", "collapse", "collapse", "—", "none",
                         "not run", "needs runs of one rate with different (η, α, B), e.g. calibrate_growth"))
    # 4. the optimum at the edge, and 5. chaos hurts: zero-decay runs that crossed the edge
    crossed = zero[np.isfinite(zero["J_at_optimal"].astype(float)) & (zero["j2_final"].astype(float) > 1.0)]
    if len(crossed):
        m, lo, hi = t_interval(crossed["J_at_optimal"].to_numpy(float), confidence)
        out.append(Claim("EOC-training", "the best test loss lies close to J = 1", "optimum at the edge", "J ≈ 1",
                         f"J = {m:.3f} ({_fmt(lo)}–{_fmt(hi)})", f"{len(crossed)} zero-decay runs that crossed the edge",
                         _verdict(abs(m - 1) <= 0.15, abs(m - 1) <= 0.3)))
        worse = (crossed["final_test_loss"].astype(float) > 1.01 * crossed["test_loss_min"].astype(float)).mean()
        out.append(Claim("EOC-training", "without decay training continues into chaos and the test loss rises",
                         "chaos hurts", "loss rises", f"{worse:.0%} of the runs end > 1% above their best test loss",
                         f"{len(crossed)} runs", _verdict(worse == 1.0, worse >= 0.5)))
    else:
        for claim, rule in (("the best test loss lies close to J = 1", "optimum at the edge"),
                            ("test loss rises in the chaotic phase", "chaos hurts")):
            out.append(Claim("EOC-training", claim, rule, "—", "—", "none", "not run",
                             "no zero-decay run crossed the edge: run longer or faster (calibrate_growth)"))
    # 6.–8. weight decay
    p = c.plateau
    if p.law is not None:
        q_lo = p.law.q_ci[0]
        out.append(Claim("EOC-training", "J² saturates at a plateau that falls as the decay grows", "plateaus",
                         "falls with decay", f"J²∞ ∝ wd^−q, q = {p.law.q:.3f} ({_fmt(q_lo)}–{_fmt(p.law.q_ci[1])}); " + (
                             f"rate exponent s = {p.law.s:.3f} ({_fmt(p.law.s_ci[0])}–{_fmt(p.law.s_ci[1])})"
                             if math.isfinite(p.law.s_ci[0]) else "rate exponent not fitted (saturated runs at one rate)"),
                         f"{int((p.runs['saturated'] & p.runs['in_growth_range']).sum())} saturated runs inside the growth "
                         f"law's range",
                         _verdict(math.isfinite(q_lo) and q_lo > 0, p.law.q > 0)))
    else:
        out.append(Claim("EOC-training", "J² plateau falls as the decay grows", "plateaus", "falls", "—", "none",
                         "not run", "run experiment=calibrate_decay (runs of >= 3 relaxation times)"))
    if len(p.lambda_star):
        found = p.lambda_star["lambda_star"].apply(lambda v: math.isfinite(v))
        text = "; ".join(f"{r.rate_x:.3g}×: {_fmt(r.lambda_star, 4)} ({_fmt(r.seed_ci_low)}–{_fmt(r.seed_ci_high)})"
                         for r in p.lambda_star.itertuples())
        out.append(Claim("EOC-training", "a decay puts the plateau at the edge (λ*)", "lambda star",
                         "exists (value not given)", text, f"{int(p.lambda_star['n_runs'].sum())} decay runs",
                         _verdict(bool(found.all()), bool(found.any()))))
    bracketed = p.eoc_claim[np.isfinite(p.eoc_claim["edge_decay"].astype(float))] if len(p.eoc_claim) else p.eoc_claim
    if len(p.eoc_claim) and not len(bracketed):
        out.append(Claim("EOC-training", "the decay whose plateau is the edge gives the best final test loss",
                         "best decay at the edge", "best at λ*", "—", f"{len(p.runs)} decay runs", "not run",
                         "no rate's plateaus bracket the edge, so no decay puts the plateau there"))
    elif len(bracketed):
        ok = [(r.best_decay == r.edge_decay) or (math.isfinite(r.welch_p) and r.welch_p > 0.05)
              for r in bracketed.itertuples()]
        text = "; ".join(f"{r.rate_x:.3g}× ({r.epochs:g} epochs): best {r.best_decay:g} ({_fmt(r.best_loss, 4)}), nearest λ* "
                         f"{r.edge_decay:g} ({_fmt(r.edge_loss, 4)}), p = {_fmt(r.welch_p, 2)}" for r in bracketed.itertuples())
        out.append(Claim("EOC-training", "the decay whose plateau is the edge gives the best final test loss",
                         "best decay at the edge", "best at λ*", text, f"{len(p.runs)} decay runs",
                         _verdict(all(ok), any(ok))))
    return out


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
    (and the largest deviation there), the test losses at epoch E of every factor (mean, std), the
    verdicts ``holds_band`` and ``loss_within_spread`` and the runs used (``paths``). ``laws``: as
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
        best = float(losses["mean"].idxmin())
        stds = [losses.loc[best, "std"], losses.loc[1.0, "std"] if 1.0 in losses.index else math.nan]
        spread = max((float(v) for v in stds if math.isfinite(v)), default=math.nan)  # NaN: one seed, no spread
        rec_loss = float(losses.loc[1.0, "mean"]) if 1.0 in losses.index else math.nan
        inside = bool(r is not None and not r.extrapolated)
        out.append({"budget": int(budget), "trained_epochs": int(g["budget"].max()), "complete": complete,
                    "inside_laws": inside, "runs": len(g), "seeds": int(rec["seed"].nunique()),
                    "reach_epoch": reach, "settings_match": bool(len(rec)) and bool(matching[rec.index].all()),
                    "holds_band": bool(held) and all(held), "max_deviation_after_reach": float(np.nanmax(worst)) if worst else math.nan,
                    "recommended_loss": rec_loss, "best_factor": best, "best_loss": float(losses.loc[best, "mean"]),
                    "spread": spread, "loss_within_spread": bool(math.isfinite(rec_loss) and rec_loss - losses.loc[best, "mean"] <= spread),
                    "losses": "; ".join(f"×{f:g}: {m:.4f} ± {sd:.4f}" for f, (m, sd) in losses[["mean", "std"]].iterrows()),
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
    return pd.DataFrame(rows, columns=["path", "budget", "factor", "seed", "lr", "momentum", "weight_decay", "batch_size",
                                       "t", "j2", "test_loss"])


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


def _guideline_claim(source: Source) -> Claim:
    table = validate_guideline(source)
    claim = "recommend(E) holds J² within 0.15 of 1 from its reach epoch, at a near-best final test loss"
    done = table[table["complete"]] if len(table) else table
    if not len(done):
        note = ("no experiment=calibrate_guideline runs trained to their budget" if not len(table) else
                f"runs for budgets {', '.join(str(b) for b in table['budget'])} did not train the whole budget (a quick variant)")
        return Claim("stabilityscope", claim, "guideline", "(ours)", "—", f"{_distinct_runs(table)} runs",
                     "not run", note)
    text = "; ".join(f"E = {r.budget}{'' if r.inside_laws else ' (extrapolated)'}"
                     f"{f' (read at epoch {r.budget} of {r.trained_epochs}-epoch runs)' if r.trained_epochs > r.budget else ''}"
                     f": max |J² − 1| after epoch "
                     f"{r.reach_epoch:.1f} = {_fmt(r.max_deviation_after_reach)}, "
                     f"final loss {_fmt(r.recommended_loss, 4)} vs best ×{r.best_factor:g} {_fmt(r.best_loss, 4)} "
                     f"(spread {_fmt(r.spread, 2)})" for r in done.itertuples())
    band_ok, loss_ok = bool(done["holds_band"].all()), bool(done["loss_within_spread"].all())
    note = "" if done["settings_match"].all() else "the laws changed since these runs: their settings differ from recommend() now"
    return Claim("stabilityscope", claim, "guideline", "(ours)", text, f"{_distinct_runs(done)} runs",
                 _verdict(band_ok and loss_ok, band_ok or loss_ok), note)


def _map_layer(tr: Any) -> Optional[str]:
    """The iterated map of a run: the model map (``map:<module>``, EOC-optimality's input → layer) when
    recorded, else the first layer with map measures (a square FC layer)."""
    layers = [layer for layer in tr.layers if {"s_mean", "lambda_max", "attractor"} <= set(tr.stats(layer))]
    model_maps = [layer for layer in layers if layer.startswith("map:")]
    return (model_maps or layers or [None])[0]


def _optimality_claims(paths: Sequence[Path], confidence: float) -> tuple[list[Claim], list[str]]:
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
        g = per_model.setdefault(name, {"s_opt": [], "pairs": [], "sequences": [], "verdicts_seq": []})
        best = int(np.nanargmin(loss)) if np.isfinite(loss).any() else None
        if best is not None:
            g["s_opt"].append(s[best])
        chaotic = (lam > 0) & (s > 0) & np.isfinite(lam)
        g["pairs"] += list(zip(lam[chaotic], np.log(s[chaotic])))
        runs_of = [att[0]] + [a for prev, a in zip(att, att[1:]) if a != prev]
        g["sequences"].append(" → ".join(runs_of))
        if best is not None:
            near = att[max(0, best - 2): best + 3]
            strong = att[best] in ("periodic", "quasi_periodic") and "chaotic" in near
            g["verdicts_seq"].append((strong, any(a in ("chaotic", "quasi_periodic") for a in att)))
    out: list[Claim] = []
    if not used:
        for claim, rule in (("the best test loss lies near s = 1", "optimum near s = 1"),
                            ("λ_max ≈ ln s in the chaotic regime", "lambda_max = ln s"),
                            ("training drives the map from (pseudo)periodic to the chaotic boundary", "attractor sequence")):
            out.append(Claim("EOC-optimality", claim, rule, "—", "—", "none", "not run",
                             "run experiment=eoc_mlp (or eoc_cnn) and pass its run directory"))
        return out, used
    for name, g in per_model.items():
        out += _optimality_claims_of(g, f"{len(g['sequences'])} run(s) of {name}", confidence)
    return out, used


def _optimality_claims_of(g: Mapping[str, list], runs_text: str, confidence: float) -> list[Claim]:
    """The three claims for one model's runs: s at the optimum, λ_max against ln s, the attractor sequence."""
    out: list[Claim] = []
    m, lo, hi = t_interval(np.asarray(g["s_opt"], float), confidence)
    out.append(Claim("EOC-optimality", "the best test loss lies near s = 1", "optimum near s = 1", "s ≈ 1",
                     f"s = {m:.3f}" + (f" ({_fmt(lo)}–{_fmt(hi)})" if math.isfinite(lo) else ""), runs_text,
                     _verdict(abs(m - 1) <= 0.15, abs(m - 1) <= 0.3)))
    if g["pairs"]:
        lam, ln_s = np.array(g["pairs"]).T
        dev, scale = float(np.median(np.abs(lam - ln_s))), float(np.median(np.abs(ln_s)))
        out.append(Claim("EOC-optimality", "λ_max ≈ ln s in the chaotic regime", "lambda_max = ln s", "λ_max = ln s",
                         f"median |λ_max − ln s| = {dev:.3g} against median |ln s| = {scale:.3g} over {len(g['pairs'])} "
                         f"chaotic checkpoints", runs_text, _verdict(dev <= 0.25 * scale, dev <= 0.5 * scale)))
    else:
        out.append(Claim("EOC-optimality", "λ_max ≈ ln s in the chaotic regime", "lambda_max = ln s", "λ_max = ln s",
                         "no checkpoint with λ_max > 0", runs_text, "not run", "the maps never became chaotic"))
    seq = g["verdicts_seq"]
    out.append(Claim("EOC-optimality", "the edge is the boundary of the (pseudo)periodic and chaotic phases",
                     "attractor sequence", "periodic/quasi-periodic → chaotic", " | ".join(g["sequences"]), runs_text,
                     _verdict(all(v[0] for v in seq) and bool(seq), any(v[1] for v in seq))))
    return out


def reproduce(source: Source, *, layer: str = "hidden", tolerance: float = 0.15, confidence: float = 0.95,
              n_boot: int = 1000, seed: int = 0) -> Reproduction:
    """Check the claims (module docstring) on the traces of ``source`` (dirs, globs, or a list).

    Raises:
        TraceError: ``source`` matches no trace.
    """
    paths = find_traces(source)
    canonical, maps, notes = [], [], []
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
    cal = calibrate(canonical, layer=layer, tolerance=tolerance, confidence=confidence, n_boot=n_boot, seed=seed) \
        if canonical else None
    claims = _training_claims(cal, confidence) if cal is not None else [
        Claim("EOC-training", "the training path and its scaling laws", "slope law", "—", "—", "none", "not run",
              "no canonical-network SGD runs among the traces: run experiment=calibrate_growth and calibrate_decay")]
    opt, used = _optimality_claims(maps, confidence)
    claims.append(_guideline_claim(canonical) if canonical else Claim(
        "stabilityscope", "recommend(E) holds J² near 1 at a near-best test loss", "guideline", "(ours)", "—", "none",
        "not run", "run experiment=calibrate_guideline"))
    return Reproduction(str(source) if isinstance(source, (str, Path)) else ", ".join(map(str, source)),
                        claims + opt, cal, used, notes)
