"""Collections of runs: one table over many traces, keyed by their config values.

A sweep (``python -m stabilityscope -m optim.weight_decay=0,3e-4,1e-3``) leaves one ``trace.h5`` per
job. :func:`open_traces` reads any set of them into one pandas table, for sweeps and comparisons::

    import stabilityscope as ss

    runs = ss.open_traces("checkpoints/multirun/2026-11-22_12-00-00")   # a sweep dir, a glob, a list
    runs[["optim.weight_decay", "optimal_epoch", "test_loss_min", "hidden/J_at_optimal"]]
    runs.groupby("optim.weight_decay")["final_test_loss"].mean()
    runs.set_index(ss.varying_config(runs))                            # keyed by what the sweep varied

    per_ckpt = ss.open_traces("checkpoints/multirun/*/*", per="checkpoint")   # one row per checkpoint

Columns of ``per="run"`` (one row per trace):

- ``path`` (the trace file), ``run`` (its directory), ``status``, ``model``, ``dataset``;
- every config value, flattened with dots: ``optim.lr``, ``train.batch_size``, ``model.activation``
  (lists become tuples, so every column can be grouped on);
- the run's key numbers (:func:`run_summary`): ``n_checkpoints``, ``last_epoch``, ``optimal_epoch``
  (argmin of test loss, EOC-training), ``test_loss_min``, ``test_acc_at_optimal``,
  ``final_test_loss``, ``final_test_acc``, ``final_train_acc``, ``best_test_acc``; a regression run
  (trace ``loss`` mse: the losses are mean squared errors) has ``test_r2_at_optimal``, ``final_test_r2``,
  ``final_train_r2``, ``best_test_r2`` instead of the accuracies (NaN in its row of a mixed table);
- per recorded layer, with a slash as in the trace (``layers/<name>/...``): ``<layer>/J_at_optimal``,
  ``<layer>/J0_at_optimal``, ``<layer>/edge_distance_at_optimal`` (½ ln χ, signed: > 0 chaotic),
  ``<layer>/phase_at_optimal``, ``<layer>/J_final``, ``<layer>/phase_final`` and, for square layers
  with iterated maps, ``<layer>/s_at_optimal`` and ``<layer>/lambda_max_at_optimal``.

``per="checkpoint"`` has the identifying and config columns plus ``epoch``, ``step``, ``wall_time``,
the metrics and every scalar per-layer statistic as ``<layer>/<stat>`` (categorical ones as labels).
"""
from __future__ import annotations

import glob
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Sequence, Union

import numpy as np

from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import METRICS, REGRESSION_METRICS, Trace, open_trace

if TYPE_CHECKING:  # pandas is imported when a table is built
    import pandas as pd

__all__ = ["find_traces", "flatten_config", "open_traces", "run_summary", "varying_config"]

Source = Union[str, Path, Trace, Iterable[Union[str, Path, Trace]]]

# Config keys that say where a run lives or what it draws, not what was run: never a "varying" key.
BOOKKEEPING_KEYS = ("checkpoint_root", "resume", "figures", "report", "report_trace", "dataset.root",
                    "dataset.download", "train.device", "task")
# Columns that are not config values: identification, key numbers, per-checkpoint values.
RUN_COLUMNS = ("path", "run", "status", "model", "dataset")
SUMMARY_COLUMNS = ("n_checkpoints", "last_epoch", "optimal_epoch", "test_loss_min", "test_acc_at_optimal",
                   "final_test_loss", "final_test_acc", "final_train_acc", "best_test_acc", "test_r2_at_optimal",
                   "final_test_r2", "final_train_r2", "best_test_r2")
CHECKPOINT_COLUMNS = ("epoch", "step", "wall_time", *dict.fromkeys(METRICS + REGRESSION_METRICS))


def find_traces(source: Source) -> list[Path]:
    """The ``trace.h5`` files that ``source`` names, sorted and without duplicates.

    Args:
        source: a ``trace.h5``, a run directory, a sweep directory (searched recursively), a glob
            pattern matching any of these (``checkpoints/multirun/*/*``, ``runs/**/trace.h5``), or
            a list of such.

    Raises:
        TraceError: nothing matched, naming the source.
    """
    items = [source] if isinstance(source, (str, Path, Trace)) else list(source)
    found: list[Path] = []
    for item in items:
        if isinstance(item, Trace):
            found.append(item.path)
            continue
        text = str(item)
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))] if glob.has_magic(text) else [Path(text)]
        for m in matches:
            if m.is_file():
                found.append(m)
            elif (m / "trace.h5").is_file():
                found.append(m / "trace.h5")
            elif m.is_dir():
                found += sorted(m.rglob("trace.h5"))
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: str(p))
    if not unique:
        raise TraceError(f"No trace found for {source!r}: pass a trace.h5, a run directory, a sweep directory "
                         f"or a glob such as 'checkpoints/multirun/*/*'.")
    return unique


def natural_key(name: str) -> list[tuple[int, int, str]]:
    """Sort key that orders embedded numbers by value: ``run2`` before ``run10``, ``blocks.9`` before ``blocks.10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level with dotted keys; lists become tuples (hashable, groupable)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, f"{name}."))
        elif isinstance(value, list):
            out[name] = tuple(value)
        else:
            out[name] = value
    return out


def _at(values: np.ndarray, i: int) -> Any:
    v = values[i]
    return v.item() if isinstance(v, np.generic) else v


def run_summary(trace: Trace) -> dict[str, Any]:
    """The key numbers of one run (see the module docstring for the names).

    The optimal checkpoint is the argmin of the test loss (EOC-training); a trace without a finite
    test loss gets NaN/None there. The score is the accuracy (classification) or R² (regression).
    """
    epochs = trace.checkpoints
    out: dict[str, Any] = {"n_checkpoints": len(epochs), "last_epoch": int(epochs[-1]) if len(epochs) else None}
    loss = trace.metric("test_loss") if len(epochs) else np.zeros(0)
    finite = np.isfinite(loss)
    best = int(np.nanargmin(np.where(finite, loss, np.nan))) if finite.any() else None
    score = "r2" if trace.is_regression else "acc"  # a regression run has no accuracy
    acc = trace.metric(f"test_{score}") if len(epochs) else np.zeros(0)
    out.update({
        "optimal_epoch": int(epochs[best]) if best is not None else None,
        "test_loss_min": float(loss[best]) if best is not None else math.nan,
        f"test_{score}_at_optimal": float(acc[best]) if best is not None else math.nan,
        "final_test_loss": float(loss[-1]) if len(loss) else math.nan,
        f"final_test_{score}": float(acc[-1]) if len(acc) else math.nan,
        f"final_train_{score}": float(trace.metric(f"train_{score}")[-1]) if len(epochs) else math.nan,
        f"best_test_{score}": float(np.nanmax(acc)) if np.isfinite(acc).any() else math.nan,
    })
    for layer in trace.layers:
        stats = set(trace.stats(layer))
        names = [n for n in ("J", "J0", "edge_distance", "phase", "s_mean", "lambda_max") if n in stats]
        values = {n: trace.stat(layer, n) for n in names}
        short = {"s_mean": "s"}
        for n, v in values.items():
            if best is not None:
                out[f"{layer}/{short.get(n, n)}_at_optimal"] = _at(v, best)
        for n in ("J", "phase"):
            if n in values and len(values[n]):
                out[f"{layer}/{n}_final"] = _at(values[n], -1)
    return out


def _run_row(tr: Trace) -> dict[str, Any]:
    attrs = tr.attrs
    row = {"path": str(tr.path), "run": str(tr.path.parent), "status": tr.status,
           "model": str(attrs.get("model", "")), "dataset": str(attrs.get("dataset", ""))}
    row.update(flatten_config(tr.config or {}))
    return row


def _checkpoint_rows(tr: Trace, base: Mapping[str, Any]) -> list[dict[str, Any]]:
    n = len(tr)
    cols: dict[str, np.ndarray] = {"epoch": tr.checkpoints, "step": tr.steps, "wall_time": tr.wall_time}
    cols.update({m: tr.metric(m) for m in tr.metrics})
    for layer in tr.layers:
        for stat in tr.stats(layer):
            values = tr.stat(layer, stat)
            if values.ndim == 1:  # scalar per checkpoint; arrays (eigenvalues, poincare) stay in the trace
                cols[f"{layer}/{stat}"] = values
    return [{**base, **{k: _at(v, i) for k, v in cols.items()}} for i in range(n)]


def open_traces(source: Source, *, per: Literal["run", "checkpoint"] = "run") -> "pd.DataFrame":
    """One pandas table over the runs that ``source`` names (see the module docstring for columns).

    Args:
        source: as in :func:`find_traces` (a glob, a run or sweep directory, a trace, or a list).
        per: ``"run"``: one row per run with its config and key numbers; ``"checkpoint"``: one row
            per checkpoint of every run with its config, metrics and scalar layer statistics.

    Returns:
        A DataFrame sorted by ``path`` (and ``epoch``). A trace that cannot be read is skipped with
        a warning; if none can be read, TraceError.
    """
    import pandas as pd

    if per not in ("run", "checkpoint"):
        raise ValueError(f"per must be 'run' or 'checkpoint', not {per!r}")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for path in find_traces(source):
        try:
            with open_trace(path) as tr:
                base = _run_row(tr)
                rows += [{**base, **run_summary(tr)}] if per == "run" else _checkpoint_rows(tr, base)
        except (TraceError, OSError, KeyError) as exc:
            problems.append(f"{path}: {exc}")
    for p in problems:
        warnings.warn(f"open_traces skipped an unreadable trace: {p}", stacklevel=2)
    if not rows and problems:
        raise TraceError(f"None of the traces for {source!r} could be read:\n" + "\n".join(problems))
    table = pd.DataFrame(rows)
    return table.sort_values(["path", "epoch"] if per == "checkpoint" else ["path"], ignore_index=True)


def varying_config(table: "pd.DataFrame | Sequence[Mapping[str, Any]]") -> list[str]:
    """Config columns whose value differs between runs (bookkeeping keys such as paths excluded).

    Args:
        table: a table from :func:`open_traces`, or a list of flattened configs (:func:`flatten_config`).

    Returns:
        The dotted keys, in column order: what a sweep varied, e.g. ``['optim.weight_decay']``.
    """
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    not_config = set(RUN_COLUMNS) | set(SUMMARY_COLUMNS) | set(CHECKPOINT_COLUMNS) | set(BOOKKEEPING_KEYS)

    def is_config(k: str) -> bool:  # layer columns have a slash; drawing options are not what was run
        return "/" not in k and k not in not_config and not k.startswith(("phase_diagram.", "phase_background."))

    def norm(v: Any) -> Any:
        return "<nan>" if isinstance(v, float) and math.isnan(v) else v

    out = []
    for k in filter(is_config, keys):
        values = {repr(norm(row.get(k))) for row in rows}
        if len(values) > 1:
            out.append(k)
    return out
