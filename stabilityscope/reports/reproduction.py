"""The reproduction report (``python -m stabilityscope task=reproduce runs=<dirs or globs>``).

:func:`write_reproduction` writes a :class:`~stabilityscope.analysis.reproduction.Reproduction` into a
folder: ``reproduction.md`` (one row per claim with the source's value, ours with its interval, the margin,
the runs, the verdict and what would settle an inconclusive one; then the rules with their margins and
reasons, :data:`~stabilityscope.analysis.reproduction.RULES`, and every judged interval),
``reproduction.json``, and, with canonical-network runs, the calibration report under ``calibration/``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from stabilityscope.analysis.reproduction import RULES, Reproduction
from stabilityscope.analysis.verdicts import VERDICTS
from stabilityscope.reports.calibration import write_calibration_report

__all__ = ["reproduction_markdown", "write_reproduction"]


def _cell(text: str) -> str:
    """A table cell: a "|" inside it (|λ_max − ln s|) would end it."""
    return str(text).replace("|", "\\|")


def reproduction_markdown(r: Reproduction) -> str:
    """The report's text: the verdict counts, one table row per claim, the rules, the judged intervals, the notes."""
    counts = {v: sum(c.verdict == v for c in r.claims) for v in VERDICTS}
    lines = ["# Reproduction report", "", f"Runs: `{r.source}`.", "",
             "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + f". Each verdict follows the rule "
             f"listed below the table: a {r.confidence:.0%} interval against a margin fixed in advance. 'Source' is "
             f"the value the paper states; 'to settle' is what {r.power:.0%} power would need for an inconclusive "
             f"verdict, if the present estimate and spread hold.", "",
             "| paper | claim | source | ours (interval) | margin | runs | verdict | to settle | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in r.claims:
        margin = "; ".join(f"{name + ' ' if name else ''}{m.describe()}" for name, m in RULES[c.rule].margins) \
            if c.rule in RULES else ""
        lines.append("| " + " | ".join(_cell(v) for v in (c.paper, c.claim, c.source_value, c.ours, margin, c.runs))
                     + f" | **{c.verdict}** | {_cell(c.settle)} | {_cell(c.note)} |")
    lines += ["", "## Rules", ""] + [f"- **{k}**: {v.text(r.confidence, r.power)}" for k, v in RULES.items()]
    lines += ["", "## The judged intervals", ""]
    lines += [f"- {c.rule}: {p.describe()}" for c in r.claims for p in c.parts]
    if r.map_runs:
        lines += ["", "Map runs (EOC-optimality): " + ", ".join(r.map_runs)]
    if r.calibration is not None:
        lines += ["", "The canonical-network numbers come from the calibration of the same runs "
                      "(`task=calibrate`; its report has every table and figure)."]
    lines += [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def write_reproduction(r: Reproduction, out_dir: Union[str, Path], *, figures: bool = True) -> Path:
    """Write ``reproduction.md`` and ``reproduction.json`` (and, with canonical runs, the calibration
    report under ``calibration/``) into ``out_dir``; returns ``reproduction.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if r.calibration is not None:
        write_calibration_report(r.calibration, out / "calibration", figures=figures)
    (out / "reproduction.json").write_text(json.dumps(r.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    path = out / "reproduction.md"
    path.write_text(reproduction_markdown(r), encoding="utf-8")
    return path
