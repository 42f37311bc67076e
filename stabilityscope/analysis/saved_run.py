"""A finished run rebuilt from its run directory: its model at a saved state, and its data.

:func:`load_run_model` rebuilds a run's model from its newest saved state (``state/``) or a chosen
epoch, e.g. for :func:`~stabilityscope.plots.geometry.plot_decision_regions` of a finished run; :func:`load_run_data`
loads the run's dataset as its config did (subsets included).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from stabilityscope.config import Config, as_options
from stabilityscope.errors import TraceError
from stabilityscope.models.registry import build_model
from stabilityscope.recording.trace import open_trace
from stabilityscope.training.data import dataset_info, load_dataset

__all__ = ["load_run_data", "load_run_model"]


def load_run_model(run_dir: Union[str, Path], epoch: Optional[int] = None) -> tuple[nn.Module, Config]:
    """A run's model with the weights of its newest saved state (or of ``epoch``), and its config."""
    run_dir = Path(run_dir)
    if run_dir.suffix == ".h5":
        run_dir = run_dir.parent
    with open_trace(run_dir / "trace.h5") as tr:
        cfg = as_options(tr.config, Config)
    states = sorted((run_dir / "state").glob("epoch_*.pt"))
    if epoch is not None:
        states = [p for p in states if int(p.stem.split("_")[1]) == epoch]
    if not states:
        raise TraceError(f"{run_dir} has no saved state" + (f" for epoch {epoch}" if epoch is not None else "") +
                         "; states kept: "
                         f"{', '.join(p.stem for p in sorted((run_dir / 'state').glob('*.pt'))) or 'none'}.")
    input_shape, classes = dataset_info(cfg.dataset.name, cfg.dataset.binarize)
    model = build_model(cfg.model, input_shape, classes)
    model.load_state_dict(torch.load(states[-1], map_location="cpu", weights_only=True)["model"])
    return model.eval(), cfg


def load_run_data(run_dir: Union[str, Path]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of a run's dataset, as its config loads it (subsets included)."""
    run_dir = Path(run_dir)
    with open_trace(run_dir if run_dir.suffix == ".h5" else run_dir / "trace.h5") as tr:
        d = as_options(tr.config, Config).dataset
    data = load_dataset(d.name, d.root, train_subset=d.train_subset, test_subset=d.test_subset, normalize=d.normalize,
                        binarize=d.binarize)
    return data.x_train, data.y_train, data.x_test, data.y_test
