"""Record any model from any training loop: the tracker and the trace writer behind one small object.

::

    import stabilityscope as ss

    with ss.Recorder(model, "runs/my_run", probe_inputs=x_test[:16],
                     options=ss.AnalysisConfig(maps=True), config={"lr": 0.1}) as rec:   # dissects the model
        rec.checkpoint(0)                                        # the initialisation, before training
        for epoch in range(1, epochs + 1):
            train_one_epoch(...)
            rec.checkpoint(epoch, step=global_step, metrics={"test_loss": l, "test_acc": a})

It writes the same ``trace.h5`` as ``python -m stabilityscope`` (the same schema, readable while it is
written), so :func:`~stabilityscope.recording.trace.open_trace`, every figure and every report work on
it. Metrics are any named scalars; ``train_loss``, ``train_acc``, ``test_loss`` and ``test_acc`` are the
ones the figures read (NaN when not given). A regression model (``loss="mse"``) has ``train_loss``,
``test_loss`` (mean squared errors), ``train_r2`` and ``test_r2`` instead, and no accuracy. The
trace's layout is fixed once readers may follow it (HDF5 SWMR), so the metric names are those of the
first checkpoint that has metrics (plus any declared with ``metrics=``): checkpoints without metrics
before it (checkpoint 0, taken before training) are measured at once and held in memory until then, or
until :meth:`close`.

Opening a run directory that already holds a trace continues it (the resume of your own loop): the
tracker's reference weights W(0) and previous checkpoint come back from ``state/recorder.pt``, written
atomically with every checkpoint. Leaving the ``with`` block closes the trace as ``finished``, or as
``failed`` (``interrupted`` for Ctrl-C) with the error. The run directory is locked while the Recorder
is open (one writer per run, :class:`~stabilityscope.recording.lock.RunLock`).

The less common inputs come grouped: ``options=ss.RecordingConfig(analysis=..., storage=..., logging=...)``
for stored weights and the TensorBoard/MLflow mirrors, ``explainability=ss.ExplainabilityInputs(test_labels,
...)`` for SGD-complexity (the trace then keeps, at every checkpoint, the model's class for each test
example, ``predictions=`` of :meth:`checkpoint`), ``geometry=ss.GeometryInputs(x, y)`` for the
decision-region geometry.

A weight-decay controller (:class:`~stabilityscope.control.EdgeController`) attached with
:meth:`Recorder.attach_controller` has every update written into the trace's ``/control`` table with the
checkpoint that follows it, and its state saved in ``state/recorder.pt`` with the tracker's; attached to
a continued run, it gets that state back.

The app's trainers record through the same object (:class:`~stabilityscope.training.trainer.Run` and
:class:`~stabilityscope.training.batched.BatchedRuns`): one implementation of checkpoint recording.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import yaml
from torch import nn

from stabilityscope.config import recording_options, to_container, value_of
from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.models.dissect import tracked_records
from stabilityscope.models.wrappers import gathered, process_rank, refuse_fsdp1, unwrap_model
from stabilityscope.recording.lock import RunLock
from stabilityscope.recording.mirrors import Mirror, open_mirrors
from stabilityscope.recording.trace import LOSS_METRICS, ControlSpec, PredictionSpec, TraceWriter, open_trace
from stabilityscope.recording.tracking import LayerTracker

TRACKER_STATE = Path("state") / "recorder.pt"


@dataclass
class ExplainabilityInputs:
    """What SGD-complexity's measures need besides the model: the test set's labels, and a reference classifier.

    With these the trace keeps, at every checkpoint, the model's class for each test example (the
    ``predictions=`` of :meth:`Recorder.checkpoint`), so that the information measures against any
    baseline can be computed after the run (:mod:`stabilityscope.analysis.explainability`).

    Args:
        test_labels: the test set's labels (n_test,), class indices >= 0.
        num_classes: the number of classes (default: the largest label + 1).
        baseline_predictions: a reference classifier's test predictions (n_test,) (the app's linear baseline L).
        baseline_attrs: what to record about that classifier (test_acc, info_L_Y, converged, ...).
    """

    test_labels: Any
    num_classes: Optional[int] = None
    baseline_predictions: Any = None
    baseline_attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class GeometryInputs:
    """The fixed training sample on which ``options.geometry`` measures the decision-region geometry (FC-geometry).

    Args:
        inputs: the sample (n, ...) as the model takes it.
        labels: its labels (n,).
    """

    inputs: torch.Tensor
    labels: torch.Tensor


# Keywords of the Recorder before its options were grouped, and where each went.
MOVED_KEYWORDS = {
    **dict.fromkeys(("test_labels", "num_classes", "baseline_predictions", "baseline_attrs"),
                    "explainability=ss.ExplainabilityInputs(test_labels, num_classes=..., baseline_predictions=..., "
                    "baseline_attrs=...)"),
    **dict.fromkeys(("geometry_inputs", "geometry_labels"), "geometry=ss.GeometryInputs(inputs, labels)"),
    "tensorboard": "options=ss.RecordingConfig(analysis=..., logging=ss.LoggingConfig(tensorboard=True, "
                   "tensorboard_dir=...))",
    "mlflow": "options=ss.RecordingConfig(analysis=..., logging=ss.LoggingConfig(mlflow=True, mlflow_uri=...))",
    "storage": "options=ss.RecordingConfig(analysis=..., storage=ss.StorageConfig(...))",
    "model_options": "options=ss.RecordingConfig(analysis=..., model=ss.ModelConfig(...)) (its conv1x1 is what the "
                     "dissection reads)",
    "records": "options: ss.AnalysisConfig(layers=<regex>) selects the FC maps, and ss.RecordingConfig(model="
               "ss.ModelConfig(conv1x1=True)) adds 1×1 convolutions",
    **dict.fromkeys(("attrs", "lock", "save_tracker_state"), "Recorder.for_app(model, run_dir, attrs=..., lock=..., "
                    "save_tracker_state=..., ...) (the app's own runs)"),
}


def refuse_moved(keywords: Mapping[str, Any], where: str) -> None:
    """TypeError for keyword arguments ``where`` does not take, naming the new home of those that moved
    (:data:`MOVED_KEYWORDS`); the Recorder and the Lightning callback call it with their leftover keywords."""
    for name in keywords:
        if name in MOVED_KEYWORDS:
            raise TypeError(f"{where} no longer takes {name}=; pass {MOVED_KEYWORDS[name]}.")
        raise TypeError(f"{where} got an unexpected keyword argument {name!r}.")


class Recorder:
    """Dissect ``model`` once, then record its FC maps into ``run_dir/trace.h5`` at every :meth:`checkpoint`.

    Args:
        model: any ``nn.Module``; its fully connected maps are found by :func:`~stabilityscope.dissect`.
        run_dir: the run directory (created); an existing trace there is continued.
        probe_inputs: a batch of real inputs (B, ...) as the model takes them: the start states of the
            iterated maps (the first ``options.n_inputs`` are used). None: no map statistics.
        options: what is measured: an :class:`~stabilityscope.config.AnalysisConfig` (a mapping of its fields
            or a DictConfig), or a :class:`~stabilityscope.config.RecordingConfig` that adds what is stored
            (``storage``: full weight matrices), mirrored (``logging``: TensorBoard, MLflow) and how the
            model is dissected (``model.conv1x1``), or the app's whole :class:`~stabilityscope.config.Config`.
        config: anything describing the run (hyperparameters), stored as the trace's ``config``.
        metrics: metric names to reserve besides the standard ones and those of the first checkpoint.
        loss: what the losses measure, recorded as the trace's ``loss``: ``cross_entropy`` (standard metrics
            train/test loss and accuracy) or ``mse`` (train/test loss as mean squared errors, train/test R²).
        explainability: the test labels (and a baseline classifier) of SGD-complexity's measures
            (:class:`ExplainabilityInputs`).
        geometry: the training sample of the decision-region geometry (:class:`GeometryInputs`).

    Keywords of earlier versions (``tensorboard=``, ``test_labels=``, ``geometry_inputs=``, ...) raise a
    TypeError that names their new home.
    """

    controller: Any = None  # an attached weight-decay controller (attach_controller)

    def __init__(self, model: nn.Module, run_dir: str | Path, probe_inputs: Optional[torch.Tensor] = None,
                 options: Any = None, *, config: Optional[Mapping[str, Any]] = None, metrics: Sequence[str] = (),
                 loss: str = "cross_entropy", explainability: Optional[ExplainabilityInputs] = None,
                 geometry: Optional[GeometryInputs] = None, **moved: Any) -> None:
        refuse_moved(moved, "Recorder()")
        self._setup(model, run_dir, probe_inputs, options, config=config, metrics=metrics, loss=loss,
                    explainability=explainability, geometry=geometry)

    @classmethod
    def for_app(cls, model: nn.Module, run_dir: str | Path, probe_inputs: Optional[torch.Tensor] = None,
                options: Any = None, *, attrs: Optional[Mapping[str, Any]] = None, lock: bool = True,
                save_tracker_state: bool = True, **kwargs: Any) -> "Recorder":
        """The Recorder of the app's own runs (its trainers, ``task=analyze``), with what only they set.

        Args:
            attrs: extra root attributes of the trace (model and dataset names, seed, ...).
            lock: take the run directory's writer lock now (False: the caller holds it).
            save_tracker_state: write ``state/recorder.pt`` with every checkpoint (False: the trainers save
                the tracker inside their own resumable state).
            kwargs: as for the Recorder itself.
        """
        refuse_moved({k: v for k, v in kwargs.items() if k not in ("config", "metrics", "loss", "explainability",
                                                                  "geometry")}, "Recorder.for_app()")
        recorder = cls.__new__(cls)
        recorder._setup(model, run_dir, probe_inputs, options, attrs=attrs, lock=lock,
                        save_tracker_state=save_tracker_state, **kwargs)
        return recorder

    def _setup(self, model: nn.Module, run_dir: str | Path, probe_inputs: Optional[torch.Tensor], options: Any, *,
               config: Optional[Mapping[str, Any]] = None, metrics: Sequence[str] = (), loss: str = "cross_entropy",
               explainability: Optional[ExplainabilityInputs] = None, geometry: Optional[GeometryInputs] = None,
               attrs: Optional[Mapping[str, Any]] = None, lock: bool = True, save_tracker_state: bool = True) -> None:
        if loss not in LOSS_METRICS:
            raise ConfigError(f"Recorder: loss={loss!r}; allowed: {', '.join(LOSS_METRICS)} (what train_loss and "
                              f"test_loss measure: classification or regression).")
        recording = recording_options(options)
        refuse_fsdp1(model, "Recorder")
        # DDP, torch.compile, ...: measure the bare model, under its own layer names (models/wrappers.py)
        self.model, self.run_dir = unwrap_model(model), Path(run_dir)
        self.options, self.storage, self.logging = recording.analysis, recording.storage, recording.logging
        self.rank = process_rank()  # only rank 0 of a distributed run measures and writes
        self._lock = RunLock(self.run_dir, reentrant=False).acquire() if lock and self.rank == 0 else None
        self.tracker: Optional[LayerTracker] = None
        try:
            with gathered(self.model, plain_forward=self.rank == 0):  # FSDP2: every rank joins the gather
                if self.rank == 0:
                    probes = self._check_probes(self.model, probe_inputs)
                    shape = tuple(probe_inputs.shape[1:]) if probe_inputs is not None else None
                    records = tracked_records(self.model, recording.model, self.options, shape)
                    self.tracker = LayerTracker(self.model, records, self.options, probe_inputs=probes,
                                                geometry_inputs=None if geometry is None else geometry.inputs,
                                                geometry_labels=None if geometry is None else geometry.labels)
        except BaseException:
            self._release()
            raise
        self.config = dict(config or {})
        self.attrs = dict(attrs or {})
        self.prediction_spec = self._prediction_spec(explainability)
        self.loss = loss
        self._declared = list(dict.fromkeys([*LOSS_METRICS[loss], *metrics]))
        self._mirrors: list[Mirror] = []
        self.save_tracker_state = save_tracker_state
        self.writer: Optional[TraceWriter] = None
        self.last_epoch: Optional[int] = None  # the newest recorded checkpoint
        self.last_step, self._wall0, self._wall_offset = -1, time.perf_counter(), 0.0
        self.status: Optional[str] = None
        self._held: list[dict[str, Any]] = []  # measured checkpoints waiting for the trace's metric names

    # -- the trace ---------------------------------------------------------------------------------
    @property
    def trace_path(self) -> Path:
        return self.run_dir / "trace.h5"

    @staticmethod
    def _prediction_spec(inputs: Optional[ExplainabilityInputs]) -> Optional[PredictionSpec]:
        if inputs is None:
            return None
        if not isinstance(inputs, ExplainabilityInputs):
            raise ConfigError(f"explainability= takes ss.ExplainabilityInputs(test_labels, ...), got "
                              f"{type(inputs).__name__}.")
        test_labels, num_classes, baseline = inputs.test_labels, inputs.num_classes, inputs.baseline_predictions
        baseline_attrs = inputs.baseline_attrs
        if test_labels is None:
            if baseline is not None:
                raise ConfigError("baseline_predictions need the test_labels they are scored against.")
            return None
        labels = _as_numpy(test_labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
            raise ConfigError(f"test_labels must be a 1-D array of class indices >= 0, got dtype {labels.dtype} and "
                              f"shape {labels.shape}.")
        k = int(num_classes) if num_classes is not None else int(labels.max(initial=-1)) + 1
        if len(labels) and labels.max() >= k:
            raise ConfigError(f"test_labels hold class {int(labels.max())} but num_classes={k}.")
        base = None
        if baseline is not None:
            base = _as_numpy(baseline)
            if base.shape != labels.shape:
                raise ConfigError(f"baseline_predictions have {len(base)} entries but test_labels {len(labels)}: "
                                  f"one class per test example.")
        return PredictionSpec(labels, k, base, dict(baseline_attrs or {}))

    def _check_probes(self, model: nn.Module, probe_inputs: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if probe_inputs is None:
            return None
        if not isinstance(probe_inputs, torch.Tensor) or probe_inputs.dim() < 2:
            raise ConfigError(f"probe_inputs must be a batch of inputs (B, ...) as the model takes them, got "
                              f"{type(probe_inputs).__name__} of shape {tuple(getattr(probe_inputs, 'shape', ()))}.")
        p = next(model.parameters(), None)
        x = probe_inputs[: self.options.n_inputs]
        if p is not None:
            x = x.to(p.device)
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(x[:2])
        except Exception as exc:
            first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
            hint = f" (its first Linear layer takes {first.in_features} features)" if first is not None else ""
            raise ConfigError(f"probe_inputs of shape {tuple(probe_inputs.shape)} do not fit the model "
                              f"{type(model).__name__}{hint}: {type(exc).__name__}: {str(exc).splitlines()[0]}. "
                              f"Pass a batch (B, ...) of the inputs the model is trained on.") from None
        finally:
            model.train(was_training)
        return x

    def create(self, metrics: Sequence[str] = (), attrs: Optional[Mapping[str, Any]] = None) -> TraceWriter:
        """Start a new trace (replacing none: an existing trace is an error; use :meth:`reopen`)."""
        if self.trace_path.exists():
            raise TraceError(f"{self.trace_path} exists already; a Recorder continues it with reopen().")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        names = self._declared = list(dict.fromkeys([*self._declared, *metrics]))
        root = {"config": yaml.safe_dump(to_container(self.config), sort_keys=False), "task": "train",
                "model": type(self.model).__name__, "dataset": "", "seed": -1, "device": str(self._device()),
                "torch_threads": torch.get_num_threads(), "batch_group": 1, "loss": self.loss, **self.attrs,
                **dict(attrs or {})}
        self.writer = TraceWriter.create(self.trace_path, attrs=root, metrics=names,
                                         layers=self.tracker.layer_specs(store_weights=self.storage.weights),
                                         weights_dtype=value_of(self.storage.weights_dtype),
                                         predictions=self.prediction_spec, control=self._control_spec())
        self._open_mirrors()
        return self.writer

    def reopen(self, keep: Optional[int] = None, attrs: Optional[Mapping[str, Any]] = None) -> TraceWriter:
        """Continue the existing trace after its first ``keep`` checkpoints (all: None)."""
        with open_trace(self.trace_path) as tr:
            done = [int(e) for e in tr.checkpoints]
            layers, names, steps, walls = tr.layers, tr.metrics, tr.steps, tr.wall_time
        missing = sorted(set(self.tracker.records) - set(layers))
        if missing:
            raise TraceError(f"{self.trace_path} records the layers {', '.join(layers)}, not this model's "
                             f"{', '.join(missing)}: continue a run with the model it was started with.")
        keep = len(done) if keep is None else keep
        self._declared = list(dict.fromkeys([*names, *self._declared]))
        self.writer = TraceWriter.reopen(self.trace_path, keep=keep, attrs=attrs)
        self.last_epoch = done[keep - 1] if keep else None
        self.last_step = int(steps[keep - 1]) if keep else -1
        self._wall_offset = float(walls[keep - 1]) if keep else 0.0
        self._wall0 = time.perf_counter()
        self._open_mirrors()
        return self.writer

    # -- the weight-decay controller ----------------------------------------------------------------
    def attach_controller(self, controller: Any, restore: bool = True) -> None:
        """Record ``controller``'s updates (a :class:`~stabilityscope.control.EdgeController`) in the trace.

        Attach it before the trace is created (before the first checkpoint with metrics). On a continued
        run the trace must have been recorded with a controller of the same maps, and (``restore``, when
        this Recorder saves its own state) the controller continues from the state saved with the last
        checkpoint: attach it before training resumes.

        Raises:
            TraceError: the trace exists already without a controller's table, or with other maps.
        """
        if self.writer is not None and not self.writer.records_control:
            raise TraceError(f"{self.trace_path} was created without a controller: attach it before the first "
                             f"checkpoint with metrics.")
        if self.trace_path.exists():
            with open_trace(self.trace_path) as tr:
                existing = tr.control
            if existing is None or existing.maps != list(controller.maps):
                held = "no controller" if existing is None else "a controller of " + ", ".join(existing.maps)
                raise TraceError(f"{self.trace_path} records {held}"
                                 f"; continue a run with the controller it was started with "
                                 f"({', '.join(controller.maps)} here).")
            path = self.run_dir / TRACKER_STATE
            if restore and self.save_tracker_state and path.exists():
                state = torch.load(path, map_location="cpu", weights_only=True)
                if "control" in state:
                    controller.load_state_dict(state["control"])
        self.controller = controller

    def _control_spec(self) -> Optional[ControlSpec]:
        c = self.controller
        return None if c is None else ControlSpec(len(c.maps), len(c.group_index), c.trace_attrs())

    def _write_control(self, step: int) -> None:
        """The attached controller's updates after the last one written, up to ``step``, into the trace."""
        if self.controller is None or self.writer is None:
            return
        last = self.writer.last_control_step
        self.writer.append_control([a for a in list(self.controller.actions) if last < a.step <= step])

    def _open_mirrors(self) -> None:
        log = self.logging
        self._mirrors = open_mirrors(self.run_dir, tensorboard=log.tensorboard_dir or log.tensorboard,
                                     mlflow=log.mlflow_uri or log.mlflow, run_name=self.run_dir.name,
                                     params=self.config)

    def _device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def metric_names(self) -> list[str]:
        """The metrics the trace has (or will have) a column for."""
        return list(self._declared)

    # -- checkpoints -------------------------------------------------------------------------------
    def checkpoint(self, epoch: int, *, step: Optional[int] = None, metrics: Optional[Mapping[str, Any]] = None,
                   wall_time: Optional[float] = None, predictions: Optional[Any] = None) -> dict[str, dict[str, Any]]:
        """Measure the model now and append one checkpoint to the trace; returns the layer statistics.

        Args:
            epoch: the checkpoint's epoch (0 = before training), larger than the last recorded one.
            step: optimiser steps so far (default: the last checkpoint's, −1 at first; with a controller
                attached, the steps it has counted).
            metrics: named scalars (floats or 0-d tensors); standard ones not given are NaN.
            wall_time: seconds of training so far (default: since the Recorder was made, plus the
                wall time of a continued trace).
            predictions: the model's class for every test example (n_test,), when the Recorder was made
                with ``test_labels``.

        Raises:
            ConfigError: a non-increasing epoch, a metric name the trace has no place for, or predictions
                of the wrong length or without ``test_labels``.
        """
        if self.rank != 0:  # another rank of a distributed run: rank 0 measures and writes
            with gathered(self.model):  # FSDP2: the all-gather rank 0 measures from needs every rank
                return {}
        values = {k: _scalar(k, v) for k, v in (metrics or {}).items()}
        if step is None:  # an attached controller counts the optimiser steps
            step = self.last_step if self.controller is None else int(self.controller.steps_taken)
        step = int(step)
        wall = self._wall0_offset() if wall_time is None else float(wall_time)
        if self.writer is None:
            if self.trace_path.exists():
                self.reopen()
                self._load_tracker_state()
            elif not values:  # no metric names yet: measure now, write when the trace's layout is known
                return self._hold(epoch, step, wall, predictions)
            else:
                self._create_with_held(list(values))
        unknown = [k for k in values if k not in self._declared]
        if unknown:
            raise ConfigError(f"metric(s) {', '.join(unknown)} were not in the trace's first checkpoint; declare "
                              f"them when making the Recorder (metrics=[...]); this trace has: "
                              f"{', '.join(self._declared)}.")
        row = {k: values.get(k, math.nan) for k in self._declared}
        return self.record(epoch, step, wall, row, predictions=predictions,
                           before_commit=self._save_tracker_state if self.save_tracker_state else None)

    def record(self, epoch: int, step: int, wall_time: float, metrics: Mapping[str, float], *,
               store_weights: Optional[bool] = None, before_commit: Optional[Callable[[], None]] = None,
               epoch_fraction: Optional[float] = None, predictions: Optional[Any] = None) -> dict[str, dict[str, Any]]:
        """Measure, run ``before_commit`` (e.g. save a resumable state), append the row, mirror it.

        The trainers' path (they evaluate the metrics themselves); :meth:`checkpoint` is the user's.
        ``epoch_fraction`` (step / steps per epoch) defaults to ``epoch``.
        """
        if self.writer is None:
            raise TraceError("The Recorder has no open trace: call create() or reopen() first.")
        epoch, step = int(epoch), int(step)
        self._check_epoch(epoch, step)
        predictions = self._check_predictions(predictions)
        if store_weights is None:
            store_weights = self.storage.weights and self.writer.num_checkpoints % self.storage.weights_every == 0
        layer_stats, weights = self._measure(store_weights and self.storage.weights)
        if before_commit is not None:
            before_commit()
        self._write_control(step)
        self.writer.append(epoch=epoch, step=step, wall_time=wall_time, metrics=metrics,
                           layer_stats=layer_stats, weights=weights, epoch_fraction=epoch_fraction,
                           predictions=predictions)
        self.last_epoch, self.last_step = epoch, step
        for mirror in self._mirrors:
            mirror.log(epoch, metrics, layer_stats)
        return layer_stats

    def _wall0_offset(self) -> float:
        return self._wall_offset + time.perf_counter() - self._wall0

    def _check_epoch(self, epoch: int, step: int) -> None:
        """Checkpoints advance: a later epoch, or (a step schedule's checkpoints inside an epoch) a later step."""
        if epoch < 0:
            raise ConfigError(f"checkpoint epoch {epoch} is negative; epoch 0 is the initialisation.")
        if self.last_epoch is None or epoch > self.last_epoch:
            return
        if epoch < self.last_epoch:
            raise ConfigError(f"checkpoint epoch {epoch} is not after the last recorded epoch {self.last_epoch}; "
                              f"checkpoints must have increasing epochs.")
        if step <= self.last_step:
            raise ConfigError(f"checkpoint epoch {epoch} is not after the last recorded epoch {self.last_epoch}, and "
                              f"its step {step} is not after that checkpoint's step {self.last_step}; checkpoints "
                              f"must have increasing epochs, or increasing steps within one epoch.")

    def _check_predictions(self, predictions: Any) -> Optional[np.ndarray]:
        if predictions is None:
            return None
        if self.prediction_spec is None:
            raise ConfigError("predictions were given but the Recorder was made without test_labels; pass "
                              "test_labels=... (the labels of the test examples the predictions are for).")
        pred = _as_numpy(predictions)
        n = len(self.prediction_spec.test_labels)
        if pred.ndim != 1 or len(pred) != n:
            raise ConfigError(f"predictions have shape {pred.shape} but there are {n} test labels: give one class "
                              f"index per test example.")
        return pred

    def _hold(self, epoch: int, step: int, wall: float, predictions: Any = None) -> dict[str, dict[str, Any]]:
        """Measure a checkpoint that has no metrics while the trace does not exist yet; keep it in memory."""
        epoch = int(epoch)
        self._check_epoch(epoch, step)
        predictions = self._check_predictions(predictions)
        layer_stats, weights = self._measure(self.storage.weights and len(self._held) % self.storage.weights_every == 0)
        if self.save_tracker_state:
            self._save_tracker_state()
        self._held.append(dict(epoch=epoch, step=step, wall_time=wall, layer_stats=layer_stats, weights=weights,
                               predictions=predictions))
        self.last_epoch, self.last_step = epoch, step
        return layer_stats

    def _create_with_held(self, metric_names: Sequence[str] = ()) -> None:
        """Create the trace, then write the held checkpoints (their metrics NaN)."""
        self.create(metrics=metric_names)
        for row in self._held:
            metrics = {k: math.nan for k in self._declared}
            self._write_control(row["step"])
            self.writer.append(metrics=metrics, **row)
            for mirror in self._mirrors:
                mirror.log(row["epoch"], metrics, row["layer_stats"])
        self._held = []

    def _measure(self, store_weights: bool) -> tuple[dict[str, dict[str, Any]], Optional[dict[str, Any]]]:
        """The layer statistics now, and each recorded matrix's weights as a numpy array when ``store_weights``."""
        with gathered(self.model, plain_forward=True):  # FSDP2: whole weights (the other ranks join in checkpoint)
            layer_stats = self.tracker.measure(self.model)
            weights = ({n: w.cpu().numpy() for n, w in self.tracker.weights(self.model).items()} if store_weights
                       else None)
        return layer_stats, weights

    # -- the tracker's resumable state -------------------------------------------------------------
    def _save_tracker_state(self) -> None:
        path = self.run_dir / TRACKER_STATE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        state = {"tracker": self.tracker.state_dict()}
        if self.controller is not None:
            state["control"] = self.controller.state_dict()
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: complete or absent

    def _load_tracker_state(self) -> None:
        path = self.run_dir / TRACKER_STATE
        if path.exists():
            state = torch.load(path, map_location=self._device(), weights_only=True)
            self.tracker.load_state_dict(state["tracker"])

    # -- closing -----------------------------------------------------------------------------------
    def close(self, status: str = "finished", error: Optional[str] = None) -> None:
        """Close the trace with ``status`` (finished, failed, interrupted, diverged) and release the run."""
        if self.rank != 0:
            return
        try:
            if self.writer is None and self._held:  # checkpoints measured before any metric arrived
                self._create_with_held()
            if self.writer is not None:
                self.writer.close(status, error=error)
                self.status = status
            for mirror in self._mirrors:
                mirror.close()
        finally:
            self.writer, self._mirrors = None, []
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        if exc is None:
            self.close("finished")
        elif isinstance(exc, KeyboardInterrupt):
            self.close("interrupted", error=f"stopped by {getattr(exc, 'name', 'SIGINT')}")
        else:
            self.close("failed", error=f"{type(exc).__name__}: {exc}")


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _scalar(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ConfigError(f"metric {name!r} must be a scalar, got a tensor of shape {tuple(value.shape)}.")
        return float(value.detach().cpu())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"metric {name!r} must be a number, got {value!r}.") from None
