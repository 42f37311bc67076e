"""The scaling laws of a sweep on one page (``python -m stabilityscope task=scaling sweep=<dir or glob>``).

:func:`write_scaling_report` writes into a folder (the task's run directory, ``checkpoints/scaling/<timestamp>/``):

- ``scaling.md``: the key numbers (C and c with their intervals, the exponents, the collapse spread,
  λ* against the model's c/2), the tables and the figures;
- ``scaling.json``: the same numbers for programs (:meth:`SweepAnalysis.to_dict`; NaN as null),
  readable by :meth:`stabilityscope.analysis.guideline.Recommendation.from_analysis`;
- ``runs.csv``: one row per run (config, status, slope A, c, optimum, plateau);
- ``figures/``: PNG and PDF of every figure the sweep supports (:mod:`stabilityscope.plots.scaling`).

What is fitted is set by the ``scaling`` config section (layer, window, ordered_only,
plateau_fraction, confidence). From Python: ``write_scaling_report(ss.analyze_sweep(dir), out_dir)``.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence, Union

from stabilityscope.analysis.scaling import VARIABLE_LABELS, SweepAnalysis
from stabilityscope.reports.markdown import ci_text, figure_section, fmt_number, markdown_table

log = logging.getLogger(__name__)

__all__ = ["scaling_markdown", "write_scaling_report"]

CAPTIONS = {
    "scaling_fits": ("Scaling of the slope A",
                     "A (the slope of J² against epoch over the ordered part of the fit window) against each variable "
                     "the sweep varies, log–log, one colour per group of runs holding the others fixed, with its "
                     "power-law fit (exponent and interval in the legend); last panel: A against ρ = η·n/((1−α)B) "
                     "with the combined form A = c·ρ. EOC-training: every exponent is 1."),
    "collapse": ("Collapse against rescaled time",
                 "J² and test loss against τ = epoch·η/((1−α)B), one colour per η/((1−α)B). In the ordered phase "
                 "(below the edge) the runs share one curve; in the chaotic phase (shaded) they need not."),
    "j2_curves": ("J² against epoch", "Every run; dashed: the fitted linear growth; black: the edge."),
    "decay_plateau": ("The J² plateau against weight decay",
                      "Mean ± std over runs per decay (grey dots: single runs), the model's plateau c/(2·wd) "
                      "(dashed), the edge J² = 1, λ* where the mean plateau crosses it (band: its interval) and the "
                      "model's λ* = c/2 (dotted). Top axis: the Keras convention λ = weight_decay/2."),
    "decay_metrics": ("Test loss and accuracy against weight decay",
                      "Final and best test loss and accuracy (mean ± std over runs), λ* and the model's c/2 marked."),
}


def scaling_markdown(a: SweepAnalysis, figures: dict[str, Path], skipped: dict[str, str], base: Path) -> str:
    """The one-page report; figure links relative to ``base``."""
    s, cf, d = a.settings, a.combined, a.decay
    pct = f"{s.confidence:.0%}"
    n_fit = int(a.runs["used_in_fits"].sum())
    lines = [
        "# Scaling laws of a sweep",
        "",
        f"Sweep `{a.source}` · {len(a.runs)} runs, {n_fit} in the scaling fits · layer `{s.layer}` · slope A of J² "
        f"fitted over epochs ≤ {s.window:g}" + (" in the ordered phase (χ < 1)" if s.ordered_only else "")
        + f" · plateau: mean J² over the last {s.plateau_fraction:.0%} of the epochs · {pct} intervals.",
        "",
        "## Key numbers",
        "",
    ]
    num, ci = fmt_number, ci_text
    rows = []
    if cf:
        n = f" at n = {cf.n_train:g}" if cf.n_train is not None else " (the runs differ in n: compare c)"
        rows += [["C in A = C·η/((1−α)B)",
                  f"**{num(cf.C)}** per epoch{n} ({pct} CI {ci(*cf.C_ci, digits=4)}), {cf.n_runs} runs"],
                 ["c = C/n (per training example)", f"**{num(cf.c)}** ({pct} CI {ci(*cf.c_ci, digits=4)})"],
                 ["R² of the combined form (log A against log c·ρ)", num(cf.r2)]]
    else:
        rows.append(["C", "not fitted: no run with a slope A (see the notes)"])
    if a.joint:
        rows.append(["exponents, joint fit log A = log k + Σ p·log x", "; ".join(
            f"p({VARIABLE_LABELS[v]}) = {p:.3f} ({ci(*a.joint.exponent_ci[v], digits=3)})"
            for v, p in a.joint.exponents.items()) + f"; R² = {num(a.joint.r2)}"])
    if a.collapse.sweep:
        rows.append(["collapse against τ: relative spread of J² across runs",
                     f"{num(a.collapse.spread_ordered, 3)} ordered, {num(a.collapse.spread_chaotic, 3)} chaotic"])
    if math.isfinite(d.weight_decay_star):
        rows += [[f"λ*: the decay whose plateau is J² = {d.edge:g}",
                  f"**weight_decay = {num(d.weight_decay_star)}** (Keras λ = {num(d.keras_l2_star)}); bootstrap {pct} "
                  f"interval {ci(*d.bootstrap_ci, digits=4)}; per seed {num(d.seed_mean)} ± {num(d.seed_std, 2)} "
                  f"({len([v for v in d.per_seed.values() if math.isfinite(v)])} seeds)"],
                 ["how λ* was found", d.explanation]]
    else:
        rows.append(["λ*", f"not determined: {d.explanation}"])
    rows.append(["model λ* = c/2 (Keras c/4)",
                 f"{num(d.model_weight_decay_star)} (Keras {num(d.model_keras_l2_star)}), c = {num(d.model_c)}: "
                 f"{d.model_c_source}"
                 + (f"; measured/model = {d.weight_decay_star / d.model_weight_decay_star:.3g}"
                    if math.isfinite(d.weight_decay_star) else "")])
    if d.best_final_test_loss is not None:
        rows.append(["decay with the lowest final test loss", f"{num(d.best_final_test_loss)} (minimum test loss over "
                                                              f"training: {num(d.best_min_test_loss)})"])
    lines += markdown_table(["quantity", "value"], rows)
    if a.power_laws:
        lines += ["", "## Power laws within groups", "",
                  "Each group holds the other variables (and the decay) at common values; A = k·x^p fitted by least "
                  "squares on log–log axes (no interval from two points).", ""]
        lines += markdown_table(["x", "held fixed", "runs", "p", f"{pct} CI", "R²"], [
            [f.label, ", ".join(f"{k} {v:g}" for k, v in f.fixed.items() if v is not None), str(f.n_runs),
             f"{f.exponent:.3f}", ci(*f.exponent_ci, digits=3), num(f.r2)] for f in a.power_laws])
    if a.collapse.groups:
        lines += ["", "## Collapse within groups of equal η/((1−α)B)", ""]
        lines += markdown_table(["group", "runs", "J² spread ordered", "J² spread chaotic", "loss spread ordered",
                                 "loss spread chaotic"], [
            [g.label, ", ".join(g.runs), num(g.spread_ordered, 3), num(g.spread_chaotic, 3),
             num(g.loss_spread_ordered, 3), num(g.loss_spread_chaotic, 3)] for g in a.collapse.groups])
    if len(d.table):
        lines += ["", "## Weight decay", ""]
        lines += markdown_table(["weight decay", "Keras λ", "runs", "J² plateau", "model c/(2·wd)", "relaxation epochs",
                                 "final test loss", "min test loss", "final test acc", "best test acc"], [
            [num(r.weight_decay), num(r.keras_l2), str(r.n_runs),
             f"{num(r.j2_plateau_mean)} ± {num(r.j2_plateau_std, 2)}", num(r.model_plateau),
             num(r.relaxation_epochs, 3) + ("" if r.saturated or r.weight_decay == 0 else " (not reached)"),
             f"{num(r.final_test_loss_mean)} ± {num(r.final_test_loss_std, 2)}", num(r.test_loss_min_mean),
             f"{100 * r.final_test_acc_mean:.2f} %", f"{100 * r.best_test_acc_mean:.2f} %"]
            for r in d.table.itertuples()])
    lines += ["", "## Runs", "", "All runs (also those left out of the fits); every column is in `runs.csv`.", ""]
    lines += markdown_table(["run", "status", "η", "α", "B", "weight decay", "seed", "n", "A (± se)", "c",
                             "optimal epoch", "J at optimum", "min test loss", "final test acc", "J² plateau",
                             "in fits"], [
        [str(r.run), str(r.status), num(r.lr), num(r.momentum), num(r.batch_size), num(r.weight_decay), str(r.seed),
         num(r.n_train), f"{num(r.A)} ± {num(r.A_se, 2)}", num(r.c), num(getattr(r, "optimal_epoch", None)),
         num(getattr(r, "J_at_optimal", None)), num(getattr(r, "test_loss_min", None)),
         num(100 * float(getattr(r, "final_test_acc", math.nan)), 4), num(r.j2_plateau),
         "yes" if r.used_in_fits else "no"]
        for r in a.runs.itertuples()])
    lines += figure_section(figures, skipped, base, CAPTIONS)
    if a.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in a.notes]
    lines += ["", "## The model", "",
              "stabilityscope's own model (not EOC-training's): dJ²/d(epoch) = ρ·(c − 2·wd·J²) with ρ = η·n/((1−α)B). "
              "Without decay J² grows linearly, A = ρ·c = C·η/((1−α)B) with C = c·n; with decay it relaxes at the "
              "rate 2·wd·ρ per epoch to the plateau c/(2·wd), which is the edge J² = 1 at wd* = c/2 (Keras λ* = c/4). "
              "`stabilityscope.recommend` turns c and λ* into settings for an epoch budget."]
    return "\n".join(lines) + "\n"


def write_scaling_report(analysis: SweepAnalysis, out_dir: Union[str, Path], *, figures: bool = True,
                         formats: Sequence[str] = ("png", "pdf")) -> Path:
    """Write ``scaling.md``, ``scaling.json``, ``runs.csv`` and ``figures/`` into ``out_dir``; returns
    ``scaling.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = {}, {}
    if figures:
        from stabilityscope.plots.scaling import scaling_figures

        written, skipped = scaling_figures(analysis, out / "figures", formats=formats)
    analysis.runs.to_csv(out / "runs.csv", index=False)
    (out / "scaling.json").write_text(json.dumps(analysis.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    path = out / "scaling.md"
    path.write_text(scaling_markdown(analysis, written, skipped, out), encoding="utf-8")
    return path
