"""Dashboard mirrors: every scalar a checkpoint records, also sent to TensorBoard and MLflow.

The trace stays the record; a mirror is a copy for the dashboards people already watch. Each
checkpoint sends its metrics as ``metrics/<name>`` and every scalar statistic of every layer as
``<layer>/<stat>`` (categorical ones as their codes; arrays such as eigenvalues are not sent), with
the checkpoint's epoch as the step. Both go through the libraries themselves:
``torch.utils.tensorboard.SummaryWriter`` (extra ``stabilityscope[tensorboard]``) and ``mlflow``
(extra ``stabilityscope[mlflow]``); a missing library is a clear error naming the extra.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from stabilityscope.errors import ConfigError


def scalar_items(metrics: Mapping[str, float], layer_stats: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The flat ``{tag: value}`` of one checkpoint: metrics and each layer's scalar statistics."""
    out = {f"metrics/{k}": float(v) for k, v in metrics.items()}
    for layer, stats in layer_stats.items():
        for name, value in stats.items():
            if np.ndim(value) == 0:
                out[f"{layer}/{name}"] = float(value)
    return out


class Mirror:
    """One dashboard: :meth:`log` per checkpoint, :meth:`close` at the end."""

    def log(self, epoch: int, metrics: Mapping[str, float], layer_stats: Mapping[str, Mapping[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoardMirror(Mirror):
    """Scalars into a TensorBoard event file (``tensorboard --logdir <folder>``)."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(f"logging.tensorboard=true needs the tensorboard package: pip install "
                              f"'stabilityscope[tensorboard]' ({exc}).") from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, epoch: int, metrics: Mapping[str, float], layer_stats: Mapping[str, Mapping[str, Any]]) -> None:
        for tag, value in scalar_items(metrics, layer_stats).items():
            self.writer.add_scalar(tag, value, global_step=epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowMirror(Mirror):
    """Scalars as MLflow metrics of one MLflow run (its name: the run directory's), the config as params."""

    def __init__(self, tracking_uri: Optional[str], run_name: str, params: Mapping[str, Any]) -> None:
        try:
            import mlflow
        except ImportError as exc:
            raise ConfigError("logging.mlflow=true needs mlflow: pip install 'stabilityscope[mlflow]' "
                              f"({exc}).") from None
        self.mlflow = mlflow
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        self.client = mlflow.tracking.MlflowClient()
        experiment = self.client.get_experiment_by_name("stabilityscope")
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment("stabilityscope"))
        self.run = self.client.create_run(experiment_id, run_name=run_name)
        for key, value in _flat(params).items():
            self.client.log_param(self.run.info.run_id, key, str(value)[:500])

    def log(self, epoch: int, metrics: Mapping[str, float], layer_stats: Mapping[str, Mapping[str, Any]]) -> None:
        from mlflow.entities import Metric

        stamp = int(1000 * time.time())
        batch = [Metric(key=tag.replace("/", "."), value=value, timestamp=stamp, step=int(epoch))
                 for tag, value in scalar_items(metrics, layer_stats).items() if math.isfinite(value)]
        self.client.log_batch(self.run.info.run_id, metrics=batch)

    def close(self) -> None:
        self.client.set_terminated(self.run.info.run_id)


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def open_mirrors(run_dir: Path, *, tensorboard: bool | str = False, mlflow: bool | str = False, run_name: str = "",
                 params: Optional[Mapping[str, Any]] = None) -> list[Mirror]:
    """The mirrors asked for: ``tensorboard`` True (``run_dir/tensorboard``) or a folder; ``mlflow`` True (the
    active tracking URI) or a tracking URI."""
    mirrors: list[Mirror] = []
    if tensorboard:
        mirrors.append(TensorBoardMirror(run_dir / "tensorboard" if tensorboard is True else Path(str(tensorboard))))
    if mlflow:
        mirrors.append(MlflowMirror(None if mlflow is True else str(mlflow), run_name or run_dir.name, params or {}))
    return mirrors
