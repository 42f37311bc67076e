"""The reproduction report (``python -m stabilityscope task=reproduce runs=<dirs or globs>``).

:func:`write_reproduction` writes a :class:`~stabilityscope.analysis.reproduction.Reproduction` into a
folder: ``reproduction.md`` (one row per claim with the source's value, ours with its interval, the runs
and the verdict, then the fixed verdict rules :data:`~stabilityscope.analysis.reproduction.RULES`),
``reproduction.json``, and, with canonical-network runs, the calibration report under ``calibration/``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from stabilityscope.analysis.reproduction import RULES, Reproduction
from stabilityscope.reports.calibration import write_calibration_report

__all__ = ["reproduction_markdown", "write_reproduction"]


def reproduction_markdown(r: Reproduction) -> str:
    """The report's text: the verdict counts, one table row per claim, the rules and the notes."""
    counts = {v: sum(c.verdict == v for c in r.claims) for v in ("reproduced", "partly", "not reproduced", "not run")}
    lines = ["# Reproduction report", "", f"Runs: `{r.source}`.", "",
             "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ". Each verdict follows the fixed rule "
             "listed below the table; 'source' is the value the paper states.", "",
             "| paper | claim | source | ours (interval) | runs | verdict | note |", "|---|---|---|---|---|---|---|"]
    def cell(text: str) -> str:  # a "|" inside a cell (|λ_max − ln s|) would end it
        return str(text).replace("|", "\\|")

    for c in r.claims:
        lines.append("| " + " | ".join(cell(v) for v in (c.paper, c.claim, c.source_value, c.ours, c.runs))
                     + f" | **{c.verdict}** | {cell(c.note)} |")
    lines += ["", "## Rules", ""] + [f"- **{k}**: {v}" for k, v in RULES.items()]
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
    (out / "reproduction.json").write_text(json.dumps(r.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    path = out / "reproduction.md"
    path.write_text(reproduction_markdown(r), encoding="utf-8")
    return path
