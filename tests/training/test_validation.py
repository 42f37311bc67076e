"""dataset.validation: the last n training examples held out, and their loss and accuracy at every checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, Config, DatasetConfig, TrainConfig
from stabilityscope.errors import ConfigError
from stabilityscope.training.batched import batching_obstacle
from stabilityscope.training.data import hold_out, load_dataset
from stabilityscope.training.trainer import Run, evaluate


def test_a_run_holds_out_the_last_examples_and_records_their_loss(tmp_path, data_root):
    cfg = Config(dataset=DatasetConfig(root=str(data_root), train_subset=600, test_subset=100, validation=100),
                 train=TrainConfig(epochs=2), analysis=AnalysisConfig(maps=False, eigen=False, n_inputs=8),
                 figures=False, report=False)
    run = Run(cfg, tmp_path / "run")
    full = load_dataset("fashion_mnist", str(data_root), train_subset=600)
    assert torch.equal(run.data.x_train.cpu(), full.x_train[:500]) and run.steps_per_epoch == 16  # 500 / 32
    assert run.execute() == "finished"
    with ss.open_trace(tmp_path / "run") as tr:
        assert {"val_loss", "val_acc"} <= set(tr.metrics)
        loss, acc = evaluate(run.model, full.x_train[500:], full.y_train[500:])
        assert tr.metric("val_loss")[-1] == pytest.approx(loss, rel=1e-12)
        assert tr.metric("val_acc")[-1] == pytest.approx(acc)
        assert np.isfinite(tr.metric("val_loss")).all()
    assert batching_obstacle(cfg) == "dataset.validation (a held-out split, evaluated per run)"


def test_holding_out_everything_is_refused(data_root):
    data = load_dataset("fashion_mnist", str(data_root), train_subset=50, test_subset=10)
    with pytest.raises(ConfigError, match="dataset.validation=50: hold out between 1 and 49 of the 50"):
        hold_out(data, 50)
