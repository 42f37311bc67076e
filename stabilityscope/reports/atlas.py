"""``task=atlas``: ``atlas.md``, ``atlas.json`` and the figures of :mod:`stabilityscope.analysis.atlas`."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Union

from stabilityscope.analysis.atlas import PICK_MARGIN, STAGES, Atlas
from stabilityscope.analysis.reproduction import RULES
from stabilityscope.analysis.stats import jsonable
from stabilityscope.reports.markdown import ci_text, fmt_number, markdown_table

__all__ = ["atlas_markdown", "write_atlas"]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def atlas_markdown(a: Atlas, figures: dict[str, Path], base: Path) -> str:
    lines = ["# Atlas: order and chaos of vision networks over training", ""]
    runs = markdown_table(
        ["family", "model", "seed", "checkpoints", "epochs", "best test loss (epoch)", "hours", "trace"],
        [[r.family + (" (reference)" if r.reference else ""), r.model, str(r.seed), str(len(r.epochs)),
          fmt_number(r.epochs[-1], 3), f"{fmt_number(r.test_loss[r.best])} ({fmt_number(r.epochs[r.best], 3)})",
          fmt_number(r.wall_hours, 3), f"`{r.path}`"] for r in a.runs])
    lines += ["## Runs", ""] + runs
    # EOC-optimality's claims
    lines += ["", "## EOC-optimality's claims per family", "",
              "Each verdict follows the reproduction report's fixed rules: *reproduced* when the interval lies inside "
              "the margin, *not reproduced* when it lies outside, *inconclusive* otherwise (with the units that would "
              "settle it at 80% power). Maps whose orbit was labelled divergent, drifting or near-identity are left "
              "out of every s and λ_max: they are neither chaos nor the edge.", ""]
    per_block = [c for c in a.claims if c["map"].startswith("depth-wise gain, block ")]
    lines += markdown_table(
        ["family", "claim", "map", "ours (interval)", "n", "margin", "verdict", "note"],
        [[c["family"], _cell(c["claim"]), _cell(c["map"]),
          f"{fmt_number(c['estimate'], 3)} ({ci_text(*c['interval'])})", f"{c['n']} {c['unit']}", _cell(c["margin"]),
          f"**{c['verdict']}**" + (f", {_needed(c['needed'])}" if c["verdict"] == "inconclusive" else ""),
          _cell(c["detail"])] for c in a.claims if c not in per_block])
    if per_block:
        lines += ["", "The same claim block by block (depth-wise gain at the best checkpoint, mean over runs):", ""]
        lines += markdown_table(
            ["family", "block: gain (verdict)"],
            [[f, "; ".join(f"{c['map'].rsplit(' ', 1)[-1]}: {fmt_number(c['estimate'], 3)} ({c['verdict']})"
                           for c in per_block if c["family"] == f)] for f in dict.fromkeys(c["family"] for c in per_block)])
    lines += ["", "Rules and margins:", ""]
    for key in ("optimum near s = 1", "lambda_max = ln s", "attractor sequence"):
        rule = RULES[key]
        lines.append(f"- **{key}**: {_cell(rule.text())}")
    # the label-free pick
    lines += ["", "## A label-free checkpoint pick", "",
              "For each statistic, the first checkpoint where it crosses its edge value (χ = 1, gain = 1, s = 1, "
              f"λ = 0), against the best-test-loss checkpoint. Near-best: the excess test loss's interval inside "
              f"{PICK_MARGIN.describe()} ({PICK_MARGIN.reason}).", ""]
    lines += markdown_table(
        ["statistic", "runs picked", "families", "median abs. epoch error", "mean excess test loss (interval)",
         "verdict"],
        [[_cell(p["statistic"]), f"{p['picked']} of {p['runs']}", ", ".join(p["families"]),
          fmt_number(p["median_abs_epoch_error"], 3),
          f"{fmt_number(p['mean_excess_loss'], 3)} ({ci_text(*p['excess_interval'])})",
          f"**{p['verdict']}**" + (f", {_needed(p['needed'])}" if p["verdict"] == "inconclusive" else "")]
         for p in a.pick_table])
    good = [p["statistic"] for p in a.pick_table if p["near_best_everywhere"]]
    lines += ["", ("Statistics that pick a near-best checkpoint in every run: " + ", ".join(good) + ".") if good else
              "No statistic picks a near-best checkpoint in every run with an interval inside the margin."]
    lines += ["", "Per run:", ""]
    lines += markdown_table(
        ["run", "family", "statistic", "pick (epoch)", "best (epoch)", "epoch error", "excess test loss"],
        [[Path(p.run).parent.name, p.family, _cell(p.statistic),
          "never" if p.checkpoint is None else fmt_number(_epoch(a, p.run, p.checkpoint), 3),
          fmt_number(_epoch(a, p.run, p.best), 3), fmt_number(p.epoch_error, 3), fmt_number(p.excess_loss, 3)]
         for p in a.picks])
    # figures
    if figures:
        lines += ["", "## Figures"]
        for title, png in figures.items():
            rel = png.relative_to(base) if png.is_relative_to(base) else png
            lines += ["", f"### {title}", "", f"![{title}]({rel.as_posix()})"]
    if a.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in a.notes]
    return "\n".join(lines) + "\n"


def _needed(needed: Any) -> str:
    if needed is None:
        return "units needed unknown"
    return "no number of units settles it" if math.isinf(float(needed)) else f"~{int(needed)} needed"


def _epoch(a: Atlas, path: str, t: int) -> float:
    run = next(r for r in a.runs if r.path == path)
    return float(run.epochs[t])


def write_atlas(a: Atlas, out_dir: Union[str, Path], *, figures: bool = True) -> Path:
    """Write ``atlas.md``, ``atlas.json`` and (``figures``) the depth profiles per family and one heat map per
    run into ``out_dir``; returns ``atlas.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path] = {}
    if figures:
        from stabilityscope.plots.atlas import plot_depth_profiles, plot_map_heatmap
        from stabilityscope.plots.style import save_figure

        for family in a.families:
            runs = [r for r in a.runs if r.family == family]
            if a.profiles.get(family):
                fig = plot_depth_profiles(a.profiles[family], family, len(runs))
                drawn[f"{family}: depth profiles"] = save_figure(fig, out / "figures", f"profile_{_slug(family)}")[0]
        for run in a.runs:
            fig = plot_map_heatmap(run)
            stem = f"maps_{_slug(run.family)}_{_slug(Path(run.path).parent.name)}"
            drawn[f"{run.family}, {Path(run.path).parent.name}: maps over training"] = save_figure(
                fig, out / "figures", stem)[0]
    doc = {"runs": [{"path": r.path, "family": r.family, "model": r.model, "seed": r.seed, "reference": r.reference,
                     "epochs": r.epochs, "test_loss": r.test_loss, "best": r.best, "blocks": r.blocks,
                     "wall_hours": r.wall_hours} for r in a.runs],
           "profiles": {f: {k: {s: v for s, v in st.items()} for k, st in p.items()} for f, p in a.profiles.items()},
           "stages": list(STAGES), "claims": a.claims, "picks": [vars(p) for p in a.picks],
           "pick_table": a.pick_table, "pick_margin": {"low": PICK_MARGIN.low, "high": PICK_MARGIN.high,
                                                       "reason": PICK_MARGIN.reason}, "notes": a.notes}
    (out / "atlas.json").write_text(json.dumps(jsonable(doc), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    path = out / "atlas.md"
    path.write_text(atlas_markdown(a, drawn, out), encoding="utf-8")
    return path
