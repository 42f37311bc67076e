"""The HDF5 run trace: one ``trace.h5`` per run, appended checkpoint by checkpoint.

Schema (version 2)::

    /                          attrs: schema_version, stabilityscope_version, config (resolved YAML),
                                      package_versions (JSON), seed, start_time, end_time, status,
                                      model, dataset, device, torch_threads, batch_group (runs trained
                                      together, stabilityscope.training.batched); error (why a run failed/diverged)
    /checkpoints/epoch         int64 (n,)   whole epochs completed at each checkpoint (0 = initialisation)
    /checkpoints/step          int64 (n,)   optimiser steps taken
    /checkpoints/epoch_fraction float64 (n,) step / steps per epoch (v2; = epoch for epoch schedules)
    /checkpoints/wall_time     float64 (n,) seconds of training + tracking since the run started
    /metrics/<name>            float64 (n,) train_loss, train_acc, test_loss, test_acc (cross-entropy
                               runs); train_loss, test_loss, train_r2, test_r2 (mse runs: the losses are
                               mean squared errors, also readable as train_mse, test_mse); with
                               analysis.explainability also info_F_Y (+ _low, _high), info_F_Y_given_L,
                               mu_F_L (+ _low, _high), in bits (SGD-complexity, docs/science/secondary.md)
    /layers/<layer>/           attrs: fan_in, fan_out, square, role, activation, surrogate
    /layers/<layer>/<stat>     float64 (n,) J, J0, weight_distance, ...; categorical stats are int8
                               codes whose dataset attr ``labels`` names them (phase, attractor);
                               array stats are (n, ...) float32 (eigenvalues, poincare)
    /predictions/test          int8|int16 (n, n_test) the model's argmax class of every test example
                               at every checkpoint, −1 = not recorded (v2)
    /predictions/test_labels   int8|int16 (n_test,) the test labels, written once (v2)
    /baseline/test_predictions int8|int16 (n_test,) the linear baseline L's test predictions, with attrs
                               test_acc, info_L_Y (bits), converged, warning, iterations, grad_max, l2,
                               fit_seconds (v2, analysis.explainability only)
    /control/                  attrs: statistic, maps (M names), targets (M), groups (JSON: each controlled
                               parameter group's maps), group_index, law (JSON: gains, bounds, every, ...)
                               (train.control=edge and Recorders with a controller attached)
    /control/step              int64 (a,)   each update of the weight-decay controller: its optimiser step
    /control/epoch             float64 (a,) ... its step / steps per epoch
    /control/statistic         float64 (a, M) the statistic of each map it read
    /control/error             float64 (a, G) ln(S/S*) per parameter group (combined over its maps)
    /control/weight_decay      float64 (a, G) the decay it set (in force from the next step on)
    /weights/epoch             int64 (k,)   checkpoints whose weights are stored
    /weights/step              int64 (k,)   ... and their optimiser steps (v2)
    /weights/<layer>           float16|float32 (k, fan_out, fan_in), one checkpoint per chunk, gzip

The controller's rows are written with the checkpoint that follows them, before its commit marker, and
``/control/step`` last of them; a reader keeps the rows up to the last complete checkpoint's step.

A step schedule (``train.checkpoints.unit=step``) can put several checkpoints inside one epoch:
``/checkpoints/epoch`` then repeats and the step is the key that increases. Version-1 traces (no
epoch_fraction, predictions or baseline) read as before: :attr:`Trace.epoch_fraction` is their epoch,
and the prediction accessors raise a :class:`TraceError` that says the trace predates them.

Every dataset is resizable along its first (checkpoint) axis and created before the file switches
to SWMR mode, so readers (:func:`open_trace`) follow a live run. ``/checkpoints/epoch`` is written
*last* for each checkpoint: its length is the number of complete checkpoints, and a reader cuts
every other array to it. A run killed at any moment therefore leaves a file whose complete
checkpoints read back (SWMR readers can open it; :meth:`TraceWriter.reopen` rebuilds a clean copy).
"""
from __future__ import annotations

import json
import os
import platform
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import h5py
import numpy as np
import yaml

from stabilityscope.errors import TraceError

SCHEMA_VERSION = 2
STATUSES = ("running", "finished", "diverged", "failed", "interrupted")
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")  # classification: cross-entropy and accuracy
# regression: the losses are mean squared errors, R² = 1 − SSE/SST (SST about the split's own mean); no accuracy
REGRESSION_METRICS = ("train_loss", "test_loss", "train_r2", "test_r2")
LOSS_METRICS = {"cross_entropy": METRICS, "mse": REGRESSION_METRICS}  # the root attr ``loss`` → standard metrics
MSE_ALIASES = {"train_mse": "train_loss", "test_mse": "test_loss"}  # names of an mse trace's losses
# analysis.explainability (SGD-complexity, bits): I(F;Y) with its interval, I(F;Y|L), μ_Y(F;L) with its interval
EXPLAINABILITY_METRICS = ("info_F_Y", "info_F_Y_low", "info_F_Y_high", "info_F_Y_given_L", "mu_F_L", "mu_F_L_low",
                          "mu_F_L_high")
_CHUNK = 256  # rows per chunk of the 1-D per-checkpoint datasets


@dataclass(frozen=True)
class StatSpec:
    """One per-checkpoint statistic of a layer.

    ``labels`` makes it categorical (int8 codes, -1 = undefined); ``shape`` makes each checkpoint's
    value an array (e.g. eigenvalues), stored one checkpoint per compressed chunk.
    """

    name: str
    labels: Optional[tuple[str, ...]] = None
    shape: tuple[int, ...] = ()
    dtype: str = "f8"


def label_dtype(num_classes: int) -> str:
    """The compact signed integer type that holds class indices 0..K−1 and the −1 of "not recorded"."""
    return "i1" if num_classes <= 127 else "i2" if num_classes <= 32767 else "i4"


@dataclass(frozen=True)
class PredictionSpec:
    """What the trace keeps of the test set's predictions (schema v2)."""

    test_labels: np.ndarray  # (n_test,) class indices
    num_classes: int
    baseline_predictions: Optional[np.ndarray] = None  # (n_test,) the linear baseline L's classes
    baseline_attrs: Mapping[str, Any] = ()  # test_acc, info_L_Y, converged, warning, ...


@dataclass(frozen=True)
class ControlSpec:
    """The shape of the ``/control`` table: M maps read, G parameter groups set, and its attributes."""

    n_maps: int
    n_groups: int
    attrs: Mapping[str, Any]


@dataclass(frozen=True)
class ControlLog:
    """The weight-decay controller's updates of a run (``Trace.control``), a = number of updates."""

    step: np.ndarray  # (a,)
    epoch: np.ndarray  # (a,) fractional epochs
    statistic: np.ndarray  # (a, M) per map
    error: np.ndarray  # (a, G) ln(S/S*) per parameter group
    weight_decay: np.ndarray  # (a, G)
    statistic_name: str  # J2, chi, gain
    maps: list[str]  # (M,)
    targets: np.ndarray  # (M,) S* per map
    groups: list[list[int]]  # each group's maps (indices into maps)
    law: dict[str, Any]  # gains, bounds, every, combine, decay_init, steps_per_epoch, ...

    def __len__(self) -> int:
        return len(self.step)


@dataclass(frozen=True)
class LayerSpec:
    """What the trace stores for one layer: its attributes, its statistics and, when kept, its weight shape."""

    attrs: Mapping[str, Any]
    stats: Sequence[StatSpec]
    weight_shape: Optional[tuple[int, int]] = None  # set when full weights are stored


def package_versions() -> dict[str, str]:
    """The versions of Python and of the packages a trace's numbers depend on, for its provenance."""
    names = ("torch", "torchvision", "timm", "numpy", "scipy", "h5py", "hydra-core", "matplotlib", "stabilityscope")
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def now_iso() -> str:
    """The time now in UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _growable(group: h5py.Group, name: str, dtype: Any) -> h5py.Dataset:
    return group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(_CHUNK,))


class TraceWriter:
    """Appends checkpoints to a trace in SWMR mode. Use ``TraceWriter.create`` or ``TraceWriter.reopen``."""

    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path, self._f = path, file
        self._n = int(file["checkpoints/epoch"].shape[0])

    @classmethod
    def create(cls, path: str | Path, *, attrs: Mapping[str, Any], layers: Mapping[str, LayerSpec],
               metrics: Sequence[str] = METRICS, weights_dtype: str = "float32",
               predictions: Optional[PredictionSpec] = None, control: Optional[ControlSpec] = None) -> "TraceWriter":
        path = Path(path)
        f = h5py.File(path, "w", libver="latest")
        f.attrs.update({"schema_version": SCHEMA_VERSION, "status": "running", "start_time": now_iso(),
                        "end_time": "", "package_versions": json.dumps(package_versions())})
        f.attrs.update({k: v for k, v in attrs.items()})
        ck = f.create_group("checkpoints")
        _growable(ck, "epoch", "i8")
        _growable(ck, "step", "i8")
        _growable(ck, "wall_time", "f8")
        _growable(ck, "epoch_fraction", "f8")
        if predictions is not None:
            _create_predictions(f, predictions)
        m = f.create_group("metrics")
        for name in metrics:
            _growable(m, name, "f8")
        lg = f.create_group("layers")
        weights = {n: s.weight_shape for n, s in layers.items() if s.weight_shape is not None}
        for name, spec in layers.items():
            g = lg.create_group(name)
            g.attrs.update(dict(spec.attrs))
            for st in spec.stats:
                if st.shape:
                    d = g.create_dataset(st.name, shape=(0, *st.shape), maxshape=(None, *st.shape), dtype=st.dtype,
                                         chunks=(1, *st.shape), compression="gzip", compression_opts=4)
                else:
                    d = _growable(g, st.name, "i1" if st.labels else st.dtype)
                if st.labels:
                    d.attrs["labels"] = list(st.labels)
        if control is not None:
            _create_control(f, control)
        if weights:
            wg = f.create_group("weights")
            _growable(wg, "epoch", "i8")
            _growable(wg, "step", "i8")
            for name, shape in weights.items():
                wg.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=weights_dtype,
                                  chunks=(1, *shape), compression="gzip", compression_opts=4, shuffle=True)
        f.swmr_mode = True  # from here on: no new objects, only appends
        f.flush()
        return cls(path, f)

    @classmethod
    def reopen(cls, path: str | Path, keep: int, attrs: Optional[Mapping[str, Any]] = None) -> "TraceWriter":
        """Continue a trace after its first ``keep`` checkpoints (a resume, possibly after a crash).

        ``attrs`` replace root attributes (e.g. the config, when a resume extends ``train.epochs``).

        A file whose writer died cannot be opened for writing (HDF5 keeps its SWMR-write flag set),
        so the complete part is copied into a fresh file that atomically replaces the old one.
        """
        path = Path(path)
        tmp = path.with_suffix(".h5.rebuild")
        with _open_read(path) as src, h5py.File(tmp, "w", libver="latest") as dst:
            n = min(keep, src["checkpoints/epoch"].shape[0])
            last_epoch = int(src["checkpoints/epoch"][n - 1]) if n else -1
            last_step = int(src["checkpoints/step"][n - 1]) if n else -1
            dst.attrs.update(dict(src.attrs))
            for key in src:
                src.copy(src[key], dst, name=key)
            n_w = 0
            if "weights" in dst:  # v2 keys stored weights by step (epochs repeat under a step schedule)
                kept = dst["weights/step"][:] <= last_step if "step" in dst["weights"] else \
                    dst["weights/epoch"][:] <= last_epoch
                n_w = int(np.sum(kept))
            n_c = int(np.sum(dst["control/step"][:] <= last_step)) if "control" in dst else 0

            def cut(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset) and name not in _FIXED:
                    obj.resize(n_w if name.startswith("weights") else n_c if name.startswith("control") else n, axis=0)

            dst.visititems(cut)
            dst.attrs.update({**dict(attrs or {}), "status": "running"})
        os.replace(tmp, path)
        f = h5py.File(path, "r+", libver="latest")
        f.swmr_mode = True
        return cls(path, f)

    @property
    def num_checkpoints(self) -> int:
        return self._n

    @property
    def records_control(self) -> bool:
        """Whether the trace has the weight-decay controller's table (``/control``)."""
        return "control" in self._f

    @property
    def last_control_step(self) -> int:
        """The step of the newest controller row written (−1: none)."""
        if not self.records_control:
            return -1
        d = self._f["control/step"]
        return int(d[d.shape[0] - 1]) if d.shape[0] else -1

    def append_control(self, rows: Sequence[Any]) -> None:
        """Append controller updates (objects with step, epoch, statistic (M,), error (G,), weight_decay (G,)).

        Called before the checkpoint they precede is appended: they are committed with its marker
        (readers keep rows up to the last complete checkpoint's step). ``/control/step`` grows last.
        """
        if not rows:
            return
        if not self.records_control:
            raise TraceError(f"{self.path} has no /control table: the controller must be attached before the trace "
                             f"is created.")
        g = self._f["control"]
        k, a = g["step"].shape[0], len(rows)
        for name in ("epoch", "statistic", "error", "weight_decay"):
            d = g[name]
            values = np.asarray([getattr(r, name) for r in rows], dtype=np.float64)
            if values.shape[1:] != d.shape[1:]:
                raise TraceError(f"controller rows of shape {values.shape[1:]} for /control/{name} of shape "
                                 f"{d.shape[1:]}: the controller reads other maps than the trace was made for")
            d.resize(k + a, axis=0)
            d[k:] = values
        self._f.flush()
        g["step"].resize(k + a, axis=0)
        g["step"][k:] = [int(r.step) for r in rows]

    @property
    def records_predictions(self) -> bool:
        """Whether the trace has a place for the test predictions (schema v2, made with a PredictionSpec)."""
        return "predictions/test" in self._f

    def append(self, *, epoch: int, step: int, wall_time: float, metrics: Mapping[str, float],
               layer_stats: Mapping[str, Mapping[str, float]],
               weights: Optional[Mapping[str, np.ndarray]] = None, epoch_fraction: Optional[float] = None,
               predictions: Optional[np.ndarray] = None) -> None:
        """Append one checkpoint and flush. ``/checkpoints/epoch`` is written last (commit marker).

        Two flushes make the marker safe against a kill at any instant: HDF5 writes a flush's dirty
        metadata in no particular order, so a marker grown in the same flush as the data could reach
        the file before some dataset's new extent did (seen: a killed run whose last checkpoint had
        an epoch but no stats). The data is flushed first, the marker after it.

        ``epoch_fraction`` defaults to ``epoch``; ``predictions`` (n_test,) are the test classes (−1
        where not given, when the trace records predictions).
        """
        f, n = self._f, self._n

        def put(d: h5py.Dataset, value: Any) -> None:
            d.resize(n + 1, axis=0)
            d[n] = value

        put(f["checkpoints/step"], step)
        put(f["checkpoints/wall_time"], wall_time)
        if "checkpoints/epoch_fraction" in f:  # absent in a continued version-1 trace
            put(f["checkpoints/epoch_fraction"], float(epoch if epoch_fraction is None else epoch_fraction))
        if self.records_predictions:
            d = f["predictions/test"]
            row = np.full(d.shape[1], -1, dtype=d.dtype) if predictions is None else np.asarray(predictions)
            if row.shape != (d.shape[1],):
                raise TraceError(f"predictions of shape {row.shape} do not fit this trace's {d.shape[1]} test examples "
                                 f"(one class index per test example)")
            put(d, row)
        for name, value in metrics.items():
            put(f["metrics"][name], value)
        for layer, stats in layer_stats.items():
            g = f["layers"][layer]
            for name, value in stats.items():
                put(g[name], value)
        if weights:
            wg = f["weights"]
            k = wg["epoch"].shape[0]
            for layer, w in weights.items():
                wg[layer].resize(k + 1, axis=0)
                wg[layer][k] = w
            if "step" in wg:  # before the epoch, which marks a stored checkpoint complete
                wg["step"].resize(k + 1, axis=0)
                wg["step"][k] = step
            wg["epoch"].resize(k + 1, axis=0)
            wg["epoch"][k] = epoch
        f.flush()  # every dataset of this checkpoint is on disk before the marker grows
        put(f["checkpoints/epoch"], epoch)
        f.flush()
        self._n = n + 1

    def close(self, status: str, error: Optional[str] = None) -> None:
        """Leave SWMR mode and record the final status, and why a run failed or diverged.

        (Attributes are not written under SWMR, hence after closing.)
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        self._f.close()
        with h5py.File(self.path, "r+", libver="latest") as f:
            f.attrs["status"] = status
            f.attrs["end_time"] = now_iso()
            if error:
                f.attrs["error"] = error


_FIXED = ("predictions/test_labels", "baseline/test_predictions")  # written once, not per checkpoint


def _create_control(f: h5py.File, spec: ControlSpec) -> None:
    """The controller's table (before the file enters SWMR mode): one row per update."""
    g = f.create_group("control")
    g.attrs.update({k: v for k, v in spec.attrs.items()})
    _growable(g, "step", "i8")
    _growable(g, "epoch", "f8")
    for name, width in (("statistic", spec.n_maps), ("error", spec.n_groups), ("weight_decay", spec.n_groups)):
        g.create_dataset(name, shape=(0, width), maxshape=(None, width), dtype="f8", chunks=(_CHUNK, width))


def _create_predictions(f: h5py.File, spec: PredictionSpec) -> None:
    """The v2 prediction datasets (and the baseline's, when given), before the file enters SWMR mode."""
    labels = np.asarray(spec.test_labels)
    dtype = label_dtype(spec.num_classes)
    g = f.create_group("predictions")
    g.attrs["num_classes"] = int(spec.num_classes)
    g.create_dataset("test_labels", data=labels.astype(dtype))
    g.create_dataset("test", shape=(0, len(labels)), maxshape=(None, len(labels)), dtype=dtype,
                     chunks=(1, len(labels)), compression="gzip", compression_opts=4)
    if spec.baseline_predictions is not None:
        b = f.create_group("baseline")
        pred = np.asarray(spec.baseline_predictions)
        if pred.shape != labels.shape:
            raise TraceError(f"the baseline has {len(pred)} test predictions but there are {len(labels)} test labels")
        d = b.create_dataset("test_predictions", data=pred.astype(dtype))
        d.attrs.update({k: v for k, v in dict(spec.baseline_attrs).items() if v is not None})


def mark_failed(path: str | Path, error: str, attrs: Optional[Mapping[str, Any]] = None) -> None:
    """Record that the run of ``path`` failed, with ``error``; a failed sweep job is findable afterwards.

    A run that failed before its trace existed (bad data path, a model that does not build) gets a
    trace with no checkpoints, status ``failed``, the error and ``attrs`` (its config), so the sweep's
    table lists it. An existing trace that is still marked ``running`` is set to ``failed``; a closed
    one keeps its status (the run's own writer already recorded why it ended).
    """
    path = Path(path)
    if path.exists():
        try:
            with h5py.File(path, "r+", libver="latest") as f:
                if f.attrs.get("status") == "running":
                    f.attrs.update({"status": "failed", "end_time": now_iso(), "error": error})
            return
        except OSError:  # a writer that died in SWMR mode: copy the complete part, then mark it
            TraceWriter.reopen(path, keep=2**62).close("failed", error=error)
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    TraceWriter.create(path, attrs={**dict(attrs or {}), "task": "train"}, layers={}).close("failed", error=error)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SWMR_WRITE_FLAGS = 0x05  # superblock v3 consistency flags: bit 0 open for writing, bit 2 for SWMR writing
_LIVE_GRACE_S = 0.5  # how long a file whose writer may be mid-flush is given to reach its recorded size


def _superblock(path: Path) -> tuple[int, int, Optional[int]]:
    """(version, consistency flags, end-of-file address) of an HDF5 file's superblock.

    Reads the first bytes only (HDF5 File Format Specification, "Superblock", versions 0–3); the
    superblock sits at offset 0 or, after a user block, at 512·2^k.

    Raises:
        TraceError: no HDF5 signature, or a superblock cut short.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        base = 0
        while base + 8 <= size:
            f.seek(base)
            if f.read(8) == HDF5_SIGNATURE:
                break
            base = 512 if base == 0 else base * 2
        else:
            raise TraceError(f"Cannot read trace {path}: it is not an HDF5 file (no HDF5 signature; {size} bytes). "
                             f"A trace.h5 is written by a stabilityscope run.")
        f.seek(base)
        head = f.read(64)
    version = head[8] if len(head) > 8 else -1
    # offset of the 8-byte end-of-file address and of the flags, per superblock version
    layout = {0: (40, 20), 1: (44, 20), 2: (28, 11), 3: (28, 11)}
    if version not in layout or len(head) < 48 or (version < 2 and head[13] != 8) or (version >= 2 and head[9] != 8):
        if version in layout and len(head) < 48:
            raise TraceError(f"Cannot read trace {path}: the file is truncated ({size} bytes, not even a whole "
                             f"HDF5 superblock).")
        return version, 0, None  # a layout we do not parse: HDF5 itself decides
    eof_at, flags_at = layout[version]
    (eof,) = struct.unpack("<Q", head[eof_at:eof_at + 8])
    return version, head[flags_at], base + eof


def _check_whole(path: Path) -> int:
    """The consistency flags of a trace that holds at least the bytes its superblock records.

    A truncated file must fail here, at once: HDF5's SWMR reader does not check the file's length
    and retries every unreadable piece of metadata, so a cut file made readers hang (a live writer's
    file, whose recorded end may briefly run ahead of the bytes on disk, gets ``_LIVE_GRACE_S``).
    """
    version, flags, eof = _superblock(path)
    deadline = time.monotonic() + (_LIVE_GRACE_S if flags & _SWMR_WRITE_FLAGS else 0.0)
    while eof is not None and path.stat().st_size < eof:
        if time.monotonic() >= deadline:
            raise TraceError(f"Cannot read trace {path}: the file is truncated: it holds {path.stat().st_size} "
                             f"bytes of the {eof} its HDF5 superblock records (an interrupted copy, or a full "
                             f"disk). Copy it again from its source, or start the run again.")
        time.sleep(0.05)
        version, flags, eof = _superblock(path)
    return flags


def _open_read(path: str | Path) -> h5py.File:
    """Open a trace for reading; any damaged, truncated or non-HDF5 file fails fast with a TraceError.

    A cleanly closed file is opened without SWMR: HDF5 then reads each piece of metadata once and
    fails at once on a damaged one. A file whose writer is running (or was killed) carries the
    SWMR-write flags and is opened as an SWMR reader, which follows the writer's appends.
    """
    path = Path(path)
    if not path.exists():
        raise TraceError(f"No trace at {path}: expected a trace.h5 written by a stabilityscope run.")
    if path.is_dir():
        raise TraceError(f"No trace at {path}: it is a directory without a trace.h5.")
    flags = _check_whole(path)
    try:
        if flags & _SWMR_WRITE_FLAGS:  # SWMR read works on a live file and on one whose writer was killed
            f = h5py.File(path, "r", libver="latest", swmr=True)
        else:
            f = h5py.File(path, "r")
    except OSError as exc:
        raise TraceError(f"Cannot read trace {path}: {exc}") from exc
    missing = [g for g in ("checkpoints", "metrics", "layers") if g not in f]
    if missing:
        f.close()
        raise TraceError(f"Cannot read trace {path}: an HDF5 file but not a stabilityscope trace (no "
                         f"{', '.join('/' + g for g in missing)}).")
    return f


class Trace:
    """Read access to a run trace, also while the run is writing it (see :func:`open_trace`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / "trace.h5"
        self._f = _open_read(self.path)

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _read(self, key: str) -> np.ndarray:
        if key not in self._f:
            raise TraceError(f"{self.path} has no dataset {key!r}.")
        try:
            d = self._f[key]
            if self._f.swmr_mode:
                d.refresh()
            return d[...]
        except (OSError, KeyError, ValueError) as exc:  # damaged chunks or metadata past the superblock
            raise TraceError(f"Cannot read {key!r} of trace {self.path}: {exc} (the file is damaged).") from exc

    def __len__(self) -> int:
        return len(self.checkpoints)

    # -- public -----------------------------------------------------------------------------
    @property
    def checkpoints(self) -> np.ndarray:
        """Epoch of each complete checkpoint (0 = initialisation)."""
        return self._read("checkpoints/epoch")

    @property
    def steps(self) -> np.ndarray:
        return self._read("checkpoints/step")[: len(self)]

    @property
    def wall_time(self) -> np.ndarray:
        return self._read("checkpoints/wall_time")[: len(self)]

    @property
    def schema_version(self) -> int:
        return int(self._f.attrs.get("schema_version", 1))

    @property
    def epoch_fraction(self) -> np.ndarray:
        """Step / steps per epoch of each checkpoint (a version-1 trace: its whole epochs, as floats)."""
        if "epoch_fraction" not in self._f["checkpoints"]:
            return self.checkpoints.astype(np.float64)
        return self._read("checkpoints/epoch_fraction")[: len(self)]

    def position(self, axis: str = "epoch") -> np.ndarray:
        """The checkpoints' x values: ``epoch`` (fractional epochs) or ``step`` (optimiser steps)."""
        if axis == "epoch":
            return self.epoch_fraction
        if axis == "step":
            return self.steps.astype(np.float64)
        raise ValueError(f"unknown checkpoint axis {axis!r}; allowed: epoch, step")

    @property
    def step_schedule(self) -> bool:
        """Whether the run's checkpoints were scheduled in optimiser steps (train.checkpoints.unit=step)."""
        sched = config_section(config_section(self.config, "train"), "checkpoints")
        return str(sched.get("unit", "epoch")) == "step"

    @property
    def has_predictions(self) -> bool:
        return "predictions/test" in self._f

    def _require_predictions(self) -> None:
        if not self.has_predictions:
            version = self.schema_version
            why = (f"it is a version-{version} trace, written before predictions were recorded" if version < 2 else
                   "it was written without test labels (a Recorder made without test_labels)")
            raise TraceError(f"{self.path} stores no test predictions: {why}.")

    @property
    def predictions(self) -> np.ndarray:
        """(n, n_test) the model's test-set class at every checkpoint (−1: not recorded)."""
        self._require_predictions()
        return self._read("predictions/test")[: len(self)]

    @property
    def test_labels(self) -> np.ndarray:
        """(n_test,) the test labels the predictions are scored against."""
        self._require_predictions()
        return self._read("predictions/test_labels")

    @property
    def num_classes(self) -> int:
        self._require_predictions()
        return int(self._f["predictions"].attrs["num_classes"])

    @property
    def baseline(self) -> Optional[dict[str, Any]]:
        """The linear baseline L of ``analysis.explainability``, with its test predictions and fit attrs; else None."""
        if "baseline/test_predictions" not in self._f:
            return None
        d = self._f["baseline/test_predictions"]
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in d.attrs.items()}
        return {"test_predictions": self._read("baseline/test_predictions"), **attrs}

    @property
    def control(self) -> Optional[ControlLog]:
        """The weight-decay controller's updates up to the last complete checkpoint, or None (an uncontrolled run)."""
        if "control" not in self._f:
            return None
        step = self._read("control/step")
        a = self._f["control"].attrs
        last = self.steps[-1] if len(self) else -1
        keep = int(np.sum(step <= last))
        rows = {name: self._read(f"control/{name}")[:keep] for name in ("epoch", "statistic", "error", "weight_decay")}
        return ControlLog(step[:keep], rows["epoch"], rows["statistic"], rows["error"], rows["weight_decay"],
                          str(a["statistic"]), [str(m) for m in a["maps"]], np.asarray(a["targets"], dtype=np.float64),
                          json.loads(a["groups"]), json.loads(a["law"]))

    @property
    def metrics(self) -> list[str]:
        return sorted(self._f["metrics"])

    @property
    def loss(self) -> str:
        """What ``train_loss``/``test_loss`` measure: ``cross_entropy`` (classification) or ``mse`` (regression)."""
        return str(self._f.attrs.get("loss", "cross_entropy"))

    @property
    def is_regression(self) -> bool:
        return self.loss == "mse"

    def metric(self, name: str) -> np.ndarray:
        """A metric over checkpoints: ``train_loss``, ``test_loss`` and ``train_acc``, ``test_acc`` (cross-entropy
        runs) or ``train_r2``, ``test_r2`` (mse runs, whose losses also answer to ``train_mse``, ``test_mse``)."""
        if self.is_regression and name in MSE_ALIASES:
            name = MSE_ALIASES[name]
        if name not in self._f["metrics"]:
            why = (" (a regression run, loss mse: it records the mean squared error and R², no accuracy)"
                   if self.is_regression and name in METRICS else "")
            raise TraceError(f"Unknown metric {name!r}{why}; this trace has: {', '.join(self.metrics)}.")
        return self._read(f"metrics/{name}")[: len(self)]

    @property
    def layers(self) -> list[str]:
        return list(self._f["layers"])

    def layer_info(self, layer: str) -> dict[str, Any]:
        self._check_layer(layer)
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._f["layers"][layer].attrs.items()}

    def stats(self, layer: str) -> list[str]:
        self._check_layer(layer)
        return sorted(self._f["layers"][layer])

    def stat(self, layer: str, name: str) -> np.ndarray:
        """A per-layer statistic over checkpoints; categorical ones come back as label strings."""
        self._check_layer(layer)
        if name not in self._f["layers"][layer]:
            raise TraceError(f"Layer {layer!r} has no stat {name!r}; it has: {', '.join(self.stats(layer))}.")
        values = self._read(f"layers/{layer}/{name}")[: len(self)]
        labels = self._f["layers"][layer][name].attrs.get("labels")
        if labels is not None:
            lab = np.asarray([str(x) for x in labels] + [""], dtype=object)
            return lab[np.where(values < 0, len(lab) - 1, values)]
        return values

    def weights(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, stored weight matrices (k, fan_out, fan_in)) of a layer whose weights were stored."""
        if "weights" not in self._f or layer not in self._f["weights"]:
            raise TraceError(f"{self.path} stores no weights for layer {layer!r} (run with storage.weights=true).")
        epochs = self._read("weights/epoch")
        if "step" in self._f["weights"]:  # v2: complete checkpoints by step (epochs repeat under step schedules)
            last = self.steps[-1] if len(self) else -1
            k = int(np.sum(self._read("weights/step")[: len(epochs)] <= last))
        else:
            last = self.checkpoints[-1] if len(self) else -1
            k = int(np.sum(epochs <= last))
        return epochs[:k], self._read(f"weights/{layer}")[:k]

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._f.attrs)

    @property
    def status(self) -> str:
        return str(self._f.attrs["status"])

    @property
    def error(self) -> str:
        """Why the run failed or diverged ("" when it did not)."""
        return str(self._f.attrs.get("error", ""))

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved configuration as a nested dict."""
        return yaml.safe_load(self._f.attrs["config"])

    def _check_layer(self, layer: str) -> None:
        if layer not in self._f["layers"]:
            raise TraceError(f"Unknown layer {layer!r}; this trace records: {', '.join(self.layers)}.")

    def __repr__(self) -> str:
        return f"Trace({str(self.path)!r}, checkpoints={len(self)}, layers={self.layers}, status={self.status!r})"


def config_section(config: Any, key: str) -> Mapping[str, Any]:
    """``config[key]`` when it is a mapping, else {}: an app run's config has sections (model, dataset, ...);
    a Recorder's is whatever its user passed (any keys, any values)."""
    value = config.get(key) if isinstance(config, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def open_trace(path: str | Path) -> Trace:
    """Open a run trace (a ``trace.h5`` or its run directory), also one that is still being written.

    Every accessor re-reads the file, so repeated calls follow a live run.
    """
    return Trace(path)
