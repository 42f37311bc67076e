"""A compact, versionable table of runs: what the scaling and calibration fits read from each trace.

The fits of :mod:`stabilityscope.analysis.scaling` and :mod:`stabilityscope.analysis.calibration` use,
per run, a few settings (η, α, B, weight decay, seed, training-set size) and four series over its
checkpoints: the epoch, J of one layer, its mean-field χ and the test loss (with the accuracy). A
**runs table** holds exactly those, with where they came from (the trace's SHA-256 and the commit
of the code that trained it), so that a fit can be rebuilt without the traces, bit for bit:
``analyze_sweep``, ``calibrate`` and ``task=calibrate runs=<table>`` accept a table wherever they
accept runs (:func:`stabilityscope.analysis.scaling.record_from_trace` reads a trace's record).
``task=calibrate`` writes one (``runs.json``) beside every ``laws.json``, and the
packaged laws ship with the table they were fitted on.

Format (JSON, one run per line so that diffs are per run)::

    {"format": "stabilityscope runs table", "version": 1, "layer": "hidden", "description": "...",
     "runs": [
       {"run": "growth/0", "status": "finished", "config": {"optim.lr": 0.002, ...}, "n_train": 60000,
        "activation": "tanh", "commit": "<git commit>", "trace_sha256": "<hex>", "note": "",
        "epoch": [0, 1, ...], "epoch_fraction": [0.0, 1.0, ...], "J": [...], "chi": [...],
        "test_loss": [...], "test_acc": [...], "final_train_acc": 0.87},
       ...]}

Floats are written as Python's shortest round-trip repr, so reading a table gives the very float64
values the traces hold.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

__all__ = ["CONFIG_KEYS", "RunRecord", "is_runs_table", "read_runs_table", "split_sources", "trace_sha256",
           "write_runs_table"]

FORMAT = "stabilityscope runs table"
VERSION = 1
# The settings the fits read (flattened config keys).
CONFIG_KEYS = ("model.name", "dataset.name", "dataset.train_subset", "optim.name", "optim.lr", "optim.momentum",
               "optim.weight_decay", "train.batch_size", "train.epochs", "train.seed")


@dataclass
class RunRecord:
    """One run as the fits see it (module docstring). ``J`` and ``chi`` are None when the trace has no
    coupling for ``layer`` (``chi`` alone when the layer has no mean-field χ)."""

    run: str
    status: str
    config: dict[str, Any]  # CONFIG_KEYS that the run's config holds
    n_train: float
    layer: str
    layers: tuple[str, ...]  # every layer the trace recorded (for the message when ``layer`` is missing)
    activation: str  # the layer's mean-field activation (its edge J_c)
    epoch: np.ndarray  # (checkpoints,) int
    epoch_fraction: np.ndarray  # (checkpoints,) float
    J: Optional[np.ndarray]
    chi: Optional[np.ndarray]
    test_loss: np.ndarray
    test_acc: np.ndarray  # NaN for a regression run
    final_train_acc: float
    note: str = ""  # why a failed or diverged run ended
    path: str = ""  # the trace it came from ('' when read from a table)
    commit: str = ""
    trace_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        def floats(a: Optional[np.ndarray]) -> Optional[list[Optional[float]]]:
            return None if a is None else [float(v) if math.isfinite(v) else None for v in np.asarray(a, float)]

        return {"run": self.run, "status": self.status, "config": self.config,
                "n_train": self.n_train if math.isfinite(self.n_train) else None, "layer": self.layer,
                "layers": list(self.layers), "activation": self.activation, "commit": self.commit,
                "trace_sha256": self.trace_sha256, "note": self.note,
                "epoch": [int(v) for v in self.epoch], "epoch_fraction": floats(self.epoch_fraction),
                "J": floats(self.J), "chi": floats(self.chi), "test_loss": floats(self.test_loss),
                "test_acc": floats(self.test_acc),
                "final_train_acc": self.final_train_acc if math.isfinite(self.final_train_acc) else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunRecord":
        def arr(v: Optional[list]) -> Optional[np.ndarray]:
            return None if v is None else np.array([math.nan if x is None else x for x in v], dtype=float)

        return cls(str(d["run"]), str(d["status"]), dict(d["config"]),
                   math.nan if d.get("n_train") is None else float(d["n_train"]), str(d["layer"]),
                   tuple(d.get("layers", (d["layer"],))), str(d.get("activation", "tanh")),
                   np.asarray(d["epoch"], dtype=np.int64), arr(d["epoch_fraction"]), arr(d.get("J")), arr(d.get("chi")),
                   arr(d["test_loss"]), arr(d["test_acc"]),
                   math.nan if d.get("final_train_acc") is None else float(d["final_train_acc"]),
                   str(d.get("note", "")), "", str(d.get("commit", "")), str(d.get("trace_sha256", "")))


def trace_sha256(path: Union[str, Path]) -> str:
    """The SHA-256 of a file (a trace), in hex."""
    h = hashlib.sha256()
    with open(Path(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_runs_table(records: Iterable[RunRecord], path: Union[str, Path], *, description: str = "") -> Path:
    """Write ``records`` as a runs table at ``path`` (JSON, one run per line). A record read from a trace
    without its hash gets it here."""
    records = list(records)
    for r in records:
        if not r.trace_sha256 and r.path and Path(r.path).is_file():
            r.trace_sha256 = trace_sha256(r.path)
    layers = sorted({r.layer for r in records})
    head = {"format": FORMAT, "version": VERSION, "layer": layers[0] if len(layers) == 1 else layers,
            "description": description}
    body = ",\n".join(json.dumps(r.to_json(), ensure_ascii=False, allow_nan=False) for r in records)
    text = json.dumps(head, indent=1, ensure_ascii=False)[:-2] + ',\n "runs": [\n' + body + "\n]}\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def is_runs_table(item: Any) -> bool:
    """Whether ``item`` names a runs table: a ``.json`` file that says so in its first line(s), or a folder that
    holds one as ``runs.json`` and no trace (what ``task=calibrate`` writes)."""
    if not isinstance(item, (str, Path)):
        return False
    p = Path(item)
    if p.is_dir() and (p / "runs.json").is_file() and not (p / "trace.h5").exists():
        p = p / "runs.json"
    if p.suffix != ".json" or not p.is_file():
        return False
    with open(p, encoding="utf-8") as f:
        return FORMAT in f.read(200)


def read_runs_table(path: Union[str, Path]) -> list[RunRecord]:
    """The records of a runs table.

    Raises:
        ValueError: the file is not a runs table (or a newer version).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "runs.json"
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if d.get("format") != FORMAT or int(d.get("version", 0)) > VERSION:
            raise ValueError(f"format {d.get('format')!r} version {d.get('version')!r}")
        return [RunRecord.from_json(r) for r in d["runs"]]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(p)!r} is not a runs table this version reads ({type(exc).__name__}: {exc}); "
                         f"task=calibrate writes one as runs.json.") from None


def split_sources(items: Sequence[Any]) -> tuple[list[Any], list[Path]]:
    """(trace sources, runs tables) among a list of sources."""
    tables = [Path(i) for i in items if is_runs_table(i)]
    return [i for i in items if not is_runs_table(i)], tables
