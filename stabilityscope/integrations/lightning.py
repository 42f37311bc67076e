"""A PyTorch Lightning callback: record a LightningModule's FC maps after each epoch's validation.

::

    import lightning as L
    from stabilityscope.integrations.lightning import StabilityCallback

    trainer = L.Trainer(max_epochs=20, callbacks=[StabilityCallback("runs/my_run")])
    trainer.fit(module, train_loader, val_loader)       # runs/my_run/trace.h5, as a stabilityscope run writes

Checkpoint 0 is the module before training (at ``on_train_start``); checkpoint e is after e
epochs (every ``every_n_epochs``), taken once the validation of epoch e has ended. Lightning runs that
validation inside the training epoch, before the epoch's aggregated training metrics exist, so the
checkpoint is written at ``on_train_epoch_end`` (the weights are the validated ones: no step comes in
between) with both the validation and the training metrics of epoch e; the sanity check is skipped. The
probe inputs (start states of the iterated maps) are the first ``probe_batches`` batches of the first
validation loader: a tensor, or the first element of a tuple/list batch.
Metrics come from ``trainer.callback_metrics`` (every scalar, under its own name); ``train_loss``,
``train_acc``, ``test_loss`` and ``test_acc``, which the figures read, are filled from the logged
``train_loss``/``train_acc`` and from ``val_loss``/``val_acc`` when no ``test_*`` is logged (the
validation set then plays the test set's part; say so when you report it). The names are fixed at
the first recorded validation epoch. The trace closes as ``finished``, or ``failed``/``interrupted``
with the error when fitting stops on an exception.

Under a distributed strategy (``strategy="ddp"``, also on CPU) every rank holds a Recorder, and only rank
0's measures and writes: the other ranks return from each checkpoint at once and wait for rank 0 only at
their next collective, as in any DDP step. The LightningModule is measured as it is, never through the
strategy's wrapper, so the layer names are the module's own.

With ``control=ss.ControlConfig(...)`` the callback also holds the edge in closed loop: an
:class:`~stabilityscope.control.EdgeController` on the module and its first optimiser acts after every
``control.every`` optimiser steps (``trainer.global_step``), its updates go into the trace, and its state
into Lightning's checkpoints (``state_dict``), so ``trainer.fit(..., ckpt_path=...)`` continues with the
decay the interrupted fit had. The law's time unit is an epoch of optimiser steps (the training batches
over ``accumulate_grad_batches``).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from stabilityscope.config import ControlConfig, as_options, recording_options, value_of
from stabilityscope.control.controller import EdgeController
from stabilityscope.errors import ConfigError
from stabilityscope.recording.recorder import Recorder, refuse_moved

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - the optional extra
    try:
        import pytorch_lightning as pl  # the older package name
    except ImportError as exc:
        raise ImportError("stabilityscope.integrations.lightning needs PyTorch Lightning: pip install "
                          "'stabilityscope[lightning]'") from exc

# what the figures read ← what a LightningModule usually logs
STANDARD_FROM = {"train_loss": ("train_loss", "train_loss_epoch"), "train_acc": ("train_acc", "train_acc_epoch"),
                 "test_loss": ("test_loss", "val_loss", "val_loss_epoch"),
                 "test_acc": ("test_acc", "val_acc", "val_acc_epoch")}


def _first_tensor(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        for key in ("x", "input", "inputs", "image", "images", "pixel_values"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise ConfigError(f"StabilityCallback cannot find the inputs in a validation batch of type "
                      f"{type(batch).__name__}; give probe_inputs=... explicitly.")


class StabilityCallback(pl.Callback):
    """Record the LightningModule being fitted into ``run_dir/trace.h5`` (see the module docstring).

    Args:
        run_dir: the run directory (an existing trace there is continued).
        every_n_epochs: record after every n-th validation epoch (and epoch 0 before training).
        probe_batches: validation batches whose inputs are the maps' start states.
        options: what is measured, as for :class:`~stabilityscope.recording.recorder.Recorder`: an
            :class:`~stabilityscope.config.AnalysisConfig`, or a :class:`~stabilityscope.config.RecordingConfig`
            that adds stored weights and the TensorBoard/MLflow mirrors (``logging``).
        probe_inputs: explicit start states instead of validation batches.
        config: stored as the trace's config (default: the module's ``hparams``).
        control: hold the edge with an :class:`~stabilityscope.control.EdgeController`
            (:class:`~stabilityscope.config.ControlConfig` or a mapping of its fields); None: no control.
    """

    def __init__(self, run_dir: str | Path, every_n_epochs: int = 1, probe_batches: int = 1,
                 options: Any = None, probe_inputs: Optional[torch.Tensor] = None,
                 config: Optional[Mapping[str, Any]] = None, control: Any = None, **moved: Any) -> None:
        refuse_moved(moved, "StabilityCallback()")
        if every_n_epochs < 1 or probe_batches < 1:
            raise ConfigError(f"StabilityCallback: every_n_epochs={every_n_epochs} and probe_batches={probe_batches} "
                              f"must be positive integers.")
        self.run_dir, self.every_n_epochs, self.probe_batches = Path(run_dir), every_n_epochs, probe_batches
        self.options, self.probe_inputs, self.config = recording_options(options), probe_inputs, config
        self.recorder: Optional[Recorder] = None
        self._warned: set[str] = set()
        self.control = None if control is None else as_options(control, ControlConfig, "control")
        self.controller: Optional[EdgeController] = None
        self._control_state: Optional[dict[str, Any]] = None  # from a Lightning checkpoint, until the controller exists

    # -- set-up ------------------------------------------------------------------------------------
    def _probes(self, trainer: "pl.Trainer") -> Optional[torch.Tensor]:
        if self.probe_inputs is not None:
            return self.probe_inputs
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if loader is None:
            return None
        xs = []
        for i, batch in enumerate(loader):
            if i >= self.probe_batches:
                break
            xs.append(_first_tensor(batch))
        return torch.cat(xs) if xs else None

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # a Recorder on every rank: rank 0's measures and writes, the others' only join an FSDP2 gather
        config = self.config if self.config is not None else dict(getattr(pl_module, "hparams", {}) or {})
        probes = self._probes(trainer) if trainer.is_global_zero else None
        self.recorder = Recorder(pl_module, self.run_dir, probe_inputs=probes, options=self.options,
                                 config=config, metrics=tuple(STANDARD_FROM))
        if self.control is not None:
            self._start_controller(trainer, pl_module)
        if not (self.run_dir / "trace.h5").exists():  # a continued trace already has its checkpoint 0
            self.recorder.checkpoint(0, step=int(trainer.global_step))  # held until the first metrics arrive

    # -- the weight-decay controller ---------------------------------------------------------------
    def _start_controller(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        batches = trainer.num_training_batches
        if not math.isfinite(batches) or batches < 1:
            raise ConfigError("StabilityCallback(control=...) needs epochs of a known length (the law's time unit); "
                              "this fit's training loader has no len().")
        per_epoch = max(1, math.ceil(batches / max(1, trainer.accumulate_grad_batches)))
        probes = self.probe_inputs
        if probes is None and value_of(self.control.statistic) == "gain":
            if trainer.world_size > 1:  # each rank's validation batches differ: the decays would too
                raise ConfigError("StabilityCallback(control=ControlConfig(statistic='gain')) under a distributed "
                                  "strategy needs probe_inputs=... (the same inputs on every rank).")
            probes = self._probes(trainer)
        if not trainer.optimizers:
            raise ConfigError("StabilityCallback(control=...): the module configured no optimiser to control.")
        self.controller = EdgeController(pl_module, trainer.optimizers[0], self.control, steps_per_epoch=per_epoch,
                                         probe_inputs=probes)
        self.recorder.attach_controller(self.controller, restore=False)  # Lightning's checkpoint holds its state
        if self._control_state is not None:
            self.controller.load_state_dict(self._control_state)
            self._control_state = None

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.controller is not None:
            self.controller.step(int(trainer.global_step))  # acts when a multiple of control.every is reached

    def state_dict(self) -> dict[str, Any]:
        return {} if self.controller is None else {"control": self.controller.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "control" in state_dict:
            if self.controller is not None:
                self.controller.load_state_dict(state_dict["control"])
            else:
                self._control_state = dict(state_dict["control"])

    # -- checkpoints -------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.recorder is None:
            return
        epoch = trainer.current_epoch + 1  # the (current_epoch + 1)-th epoch of training has ended
        if epoch % self.every_n_epochs:
            return
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)}
        metrics = dict(logged)
        for standard, sources in STANDARD_FROM.items():
            value = next((logged[s] for s in sources if s in logged), None)
            if value is not None:
                metrics[standard] = value
        if self.recorder.writer is not None:  # the names are fixed by the first recorded validation epoch
            known = set(self.recorder.metric_names)
            late = sorted(set(metrics) - known - self._warned)
            if late:
                warnings.warn(f"StabilityCallback: metric(s) {', '.join(late)} first logged after the trace was "
                              f"made are not stored (the trace keeps the names of its first validation epoch).",
                              stacklevel=2)
                self._warned |= set(late)
            metrics = {k: v for k, v in metrics.items() if k in known}
        was_training = pl_module.training
        self.recorder.checkpoint(epoch, step=int(trainer.global_step), metrics=metrics)
        pl_module.train(was_training)

    # -- the end -----------------------------------------------------------------------------------
    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.recorder is not None:
            self.recorder.close("finished")
            self.recorder = None

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        if self.recorder is not None:
            status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
            self.recorder.close(status, error=f"{type(exception).__name__}: {exception}")
            self.recorder = None
