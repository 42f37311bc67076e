"""The calibration on one page (``python -m stabilityscope task=calibrate runs=<dirs or globs>``).

:func:`write_calibration_report` writes into a folder (``checkpoints/calibrate/<timestamp>/``):

- ``calibration.md``: the growth law (every candidate form, its validity range, the per-series
  exponents, the slope past the edge), the plateau law with measured relaxation times, λ* per rate
  (interpolated, with seed and bootstrap intervals, beside the law's and the model's) and EOC-training's
  claim that the best final test loss sits at the decay whose plateau is the edge;
- ``calibration.json``: the same numbers (:meth:`Calibration.to_dict`; NaN as null);
- ``laws.json``: the fitted laws with their provenance, what ``recommend(laws=...)`` reads (when a
  growth law was fitted; without a plateau law the guideline needs a measured λ*);
- ``runs.json``: the runs table (:mod:`stabilityscope.analysis.runs_table`) the laws were fitted on, from
  which ``task=calibrate runs=<folder>/runs.json`` rebuilds them without the traces;
- ``growth_runs.csv`` and ``decay_runs.csv``;
- ``figures/``: the growth law and the plateau law (PNG and PDF; :mod:`stabilityscope.plots.calibration`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from stabilityscope.analysis.calibration import REFERENCE_RATE, Calibration
from stabilityscope.analysis.runs_table import write_runs_table
from stabilityscope.errors import TraceError
from stabilityscope.plots.calibration import plot_growth_law, plot_plateau_law
from stabilityscope.plots.style import save_figure
from stabilityscope.reports.markdown import ci_text, figure_section, fmt_number, markdown_table

__all__ = ["calibration_markdown", "write_calibration_report"]

CAPTIONS = {
    "growth_law": ("The growth law",
                   "Left: the slope A of J² per epoch over each run's ordered part against η/((1−α)B) in units of the "
                   "reference 1.25e-3, one marker per run (colour: which of η, α, B differs from the reference), with "
                   "every candidate form (the chosen one solid) and its validity range (shaded). Open markers: the "
                   "slope past the edge (χ ≥ 1) of runs that crossed it. Right: each run's A over the law's "
                   "prediction; the band is the tolerance."),
    "plateau_law": ("The plateau law",
                    "J² plateau against weight decay, one colour per rate (mean ± std over seeds; crosses: runs "
                    "shorter than three measured relaxation times, left out of the fit), the fitted law (lines) and "
                    "the edge J² = 1. Right: final test loss against decay at each rate (mean ± t interval over "
                    "seeds)."),
}


def calibration_markdown(c: Calibration, figures: dict[str, Path], skipped: dict[str, str], base: Path) -> str:
    """The one-page report; figure links relative to ``base``."""
    num, ci = fmt_number, ci_text
    g, p = c.growth, c.plateau
    lines = ["# Calibration of the guideline's laws", "", f"Runs: `{c.source}` ({len(c.sweep.runs)} traces). "
             f"Intervals: {c.confidence:.0%}. Every number below is measured on these runs; the law columns are "
             f"the fitted laws' predictions, shown next to the measurements they are checked against.", "",
             "## Growth of J² in the ordered part", ""]
    if g.law:
        lines += [f"**Law ({g.law.form}, lowest AIC):** {g.law.describe()}.", ""]
    lines += [f"- {n}" for n in g.notes]
    if g.fits_all:
        lines += ["", "Candidate forms (A per epoch at the runs' n; x = rate / 1.25e-3):", ""]
        rows = []
        for label, fits in (("validity range", g.fits), ("all runs", g.fits_all)):
            for form, f in fits.items():
                rows.append([form, label, str(f.n_runs), f"{f.k:.4g} ({ci(*f.k_ci)})",
                             f"{f.exponent:.3f} ({ci(*f.exponent_ci)})" if form == "power" else "1",
                             f"{f.intercept:.4g} ({ci(*f.intercept_ci)})" if form == "affine" else "0",
                             f"{f.rms_log:.3f}", f"{f.aic:.1f}"])
        lines += markdown_table(["form", "fitted on", "runs", "k", "p", "a₀", "RMS log residual", "AIC"], rows)
    if g.fits_all:
        tol = g.law.tolerance if g.law else math.nan
        own = [f"{form} {g.form_validity[form][0] / REFERENCE_RATE:.3g}×–"
               f"{g.form_validity[form][1] / REFERENCE_RATE:.3g}×" if form in g.form_validity else f"{form} none"
               for form in g.fits_all]
        lines += ["", f"Each form's own validity range (the widest window of rates around the reference on which that "
                      f"form alone, fitted there, puts every run within {tol:.0%}): " + "; ".join(own) + "."]
    if g.series_exponents:
        lines += ["", "Exponents within each series (the other two at the reference; inside the validity range): " +
                  "; ".join(f"{v}: p = {e[0]:.3f} ({ci(e[1], e[2])}, {e[3]} runs)"
                            for v, e in g.series_exponents.items()),
                  ]
    if not g.runs.empty:
        lines += ["", "Runs (A and the slope past the edge, per epoch):", ""]
        rows = []
        for r in g.runs.sort_values("rate").itertuples():
            rows.append([str(r.run), getattr(r, "series", "—"), f"{r.lr:g}", f"{r.momentum:g}", f"{int(r.batch_size)}",
                         f"{r.rate / REFERENCE_RATE:.3g}×", str(r.seed), num(r.A_at_n),
                         f"{num(getattr(r, 'A_j2_from', None), 3)}–{num(getattr(r, 'A_j2_to', None), 3)}",
                         num(getattr(r, "A_chaotic", None)), num(getattr(r, "ratio_to_law", None), 3)])
        lines += markdown_table(["run", "series", "η", "α", "B", "rate", "seed", "A", "J² fitted over",
                                 "A past the edge", "A / law"], rows)
    lines += ["", "## Weight decay: plateaus and λ*", ""]
    if p.law:
        lines += [f"**Law:** {p.law.describe()}; R² = {num(p.r2, 3)}; q {ci(*p.law.q_ci)}, s {ci(*p.law.s_ci)}. "
                  f"The toolkit's model predicts q = 1 and s = 0 (a rate-independent plateau c/(2·wd)).", ""]
    lines += [f"- {n}" for n in p.notes]
    if len(p.lambda_star):
        lines += ["", "λ* (PyTorch weight decay whose plateau is J² = 1) per rate:", ""]
        rows = [[f"{r.rate_x:.3g}×", f"{r.n_saturated}/{r.n_runs}", num(r.lambda_star),
                 ci(r.seed_ci_low, r.seed_ci_high), ci(r.boot_ci_low, r.boot_ci_high),
                 f"{num(r.law_lambda_star)} ({ci(r.law_ci_low, r.law_ci_high)})", num(r.model_lambda_star)]
                for r in p.lambda_star.itertuples()]
        lines += markdown_table(["rate", "saturated runs", "λ* measured", "seed CI", "bootstrap CI",
                                 "law (prediction, its CI)", "model c/2 (prediction)"], rows)
    measured_at_reference = bool(len(p.lambda_star)) and bool(np.isclose(p.lambda_star["rate"], REFERENCE_RATE).any())
    if p.law and not measured_at_reference:
        lo, hi = p.law.decay_interval(REFERENCE_RATE)
        where = "inside" if p.law.within(REFERENCE_RATE) else "outside"
        lines += ["", f"No decay run at the reference rate 1× ({REFERENCE_RATE:g}): there the law gives λ* = "
                      f"{num(p.law.decay_for(REFERENCE_RATE))} ({ci(lo, hi)}, 95% from the fit's covariance), a "
                      f"prediction {where} the rates it was fitted on, not a measurement."]
    if not p.runs.empty:
        lines += ["", "Decay runs grouped (mean over seeds; τ in epochs):", ""]
        agg = p.runs.groupby(["rate_key", "weight_decay"]).agg(
            n=("run", "size"), plateau=("j2_plateau", "mean"), plateau_sd=("j2_plateau", "std"),
            law=("plateau_law", "mean"), tau=("tau_measured", "mean"), tau_model=("tau_model", "mean"),
            tau_guideline=("tau_guideline", "mean") if "tau_guideline" in p.runs else ("tau_model", lambda v: math.nan),
            epochs=("last_epoch", "max"), sat=("saturated", "sum"), loss=("final_test_loss", "mean"))
        rows = [[f"{rk / REFERENCE_RATE:.3g}×", f"{wd:g}", str(r.n), f"{num(r.plateau)} ± {num(r.plateau_sd, 2)}",
                 num(r.law), num(r.tau, 3), num(r.tau_guideline, 3), num(r.tau_model, 3), f"{r.epochs:g}",
                 f"{int(r.sat)}/{r.n}", num(r.loss)]
                for (rk, wd), r in zip(agg.index, agg.itertuples())]
        lines += markdown_table(["rate", "weight decay", "runs", "J² plateau", "law (prediction)", "τ measured",
                                 "τ = J²∞/A (guideline's assumption)", "τ = 1/(2·wd·ρ) (original model)", "epochs",
                                 "saturated", "final test loss"], rows)
    if len(p.eoc_claim):
        lines += ["", "## EOC-training's claim: the best final test loss at the decay whose plateau is the edge", ""]
        rows = [[f"{r.rate_x:.3g}×", f"{r.epochs:g}", f"{r.best_decay:g}",
                 f"{num(r.best_loss)} ({ci(r.best_loss_low, r.best_loss_high, 4)})",
                 f"{num(r.edge_decay)} (J²∞ {num(r.edge_plateau, 3)})",
                 f"{num(r.edge_loss)} ({ci(r.edge_loss_low, r.edge_loss_high, 4)})", num(r.welch_p, 2),
                 "yes" if r.best_decay == r.edge_decay else ("no" if math.isfinite(r.edge_decay) else "no λ*")]
                for r in p.eoc_claim.itertuples()]
        lines += markdown_table(["rate", "epochs", "best decay", "its final test loss", "grid decay nearest λ*",
                                 "its loss", "Welch p", "same decay"], rows)
    lines += [f"- {n}" for n in c.notes]
    lines += figure_section(figures, skipped, base, CAPTIONS)
    return "\n".join(lines) + "\n"


def write_calibration_report(c: Calibration, out_dir: Union[str, Path], *, figures: bool = True,
                             formats: Sequence[str] = ("png", "pdf")) -> Path:
    """Write the report files into ``out_dir`` (module docstring); returns ``calibration.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    if figures:
        for name, maker in (("growth_law", plot_growth_law), ("plateau_law", plot_plateau_law)):
            try:
                fig = maker(c)
            except TraceError as exc:
                skipped[name] = str(exc)
                continue
            written[name] = save_figure(fig, out / "figures", name, ("png", *(f for f in formats if f != "png")))[0]
    if not c.growth.runs.empty:
        c.growth.runs.to_csv(out / "growth_runs.csv", index=False)
    if not c.plateau.runs.empty:
        c.plateau.runs.to_csv(out / "decay_runs.csv", index=False)
    (out / "calibration.json").write_text(json.dumps(c.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    if c.sweep.records:  # the runs the laws rest on, enough to rebuild them: task=calibrate runs=<out>/runs.json
        write_runs_table(c.sweep.records, out / "runs.json", description=f"the runs of task=calibrate on {c.source}")
    if c.growth.law is not None:  # the plateau law may be missing: the guideline then asks for a measured λ*
        c.laws().save(out / "laws.json")
    path = out / "calibration.md"
    path.write_text(calibration_markdown(c, written, skipped, out), encoding="utf-8")
    return path
