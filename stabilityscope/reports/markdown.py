"""The reports' Markdown building blocks: numbers, intervals, tables and the figures section.

Every report of :mod:`stabilityscope.reports` writes its numbers with these, so that a value, an
interval or a missing value ("—") reads the same in the run, scaling, calibration and reproduction
reports.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["ci_text", "figure_section", "fmt_number", "markdown_table"]


def fmt_number(v: Any, digits: int = 4) -> str:
    """``v`` with ``digits`` significant digits; "—" for None and non-finite numbers; other values as text."""
    if v is None:
        return "—"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "—" if not math.isfinite(x) else f"{x:.{digits}g}"


def ci_text(lo: Any, hi: Any, digits: int = 3) -> str:
    """An interval as ``lo – hi`` with ``digits`` significant digits; "—" unless both ends are finite numbers."""
    if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in (lo, hi)):
        return "—"
    return f"{lo:.{digits}g} – {hi:.{digits}g}"


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table: the header, the rule, one line per row."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def figure_section(figures: Mapping[str, Path], skipped: Mapping[str, str], base: Path,
                   captions: Mapping[str, tuple[str, str]]) -> list[str]:
    """Markdown lines of a report's "Figures" part: each PNG with its title, caption and PDF link
    (paths relative to ``base``), then the figures not drawn and why."""
    lines: list[str] = ["", "## Figures"] if figures or skipped else []
    for name, png in figures.items():
        title, caption = captions.get(name, (name, ""))
        rel = png.relative_to(base) if png.is_relative_to(base) else png
        lines += ["", f"### {title}", "", f"![{title}]({rel.as_posix()})", "", caption]
        if png.with_suffix(".pdf").exists():
            lines.append(f"([PDF]({rel.with_suffix('.pdf').as_posix()}))")
    if skipped:
        lines += ["", "Not drawn:", ""] + [f"- {captions.get(n, (n,))[0]}: {why}" for n, why in skipped.items()]
    return lines
