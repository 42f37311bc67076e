"""The atlas presets: every family at every size composes with its recipe, and each quick variant runs end to
end through task=atlas."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stabilityscope import open_trace
from stabilityscope.config import Config, as_options
from tests.conftest import run_cli

FAMILIES = {  # family: (model name, optimiser, learning rate, weight decay, epochs of the CPU preset)
    "vit": ("vit_tiny_patch16_224", "adamw", 1e-3, 0.05, 30),
    "mixer": ("mixer_cifar", "adamw", 1e-3, 0.05, 30),
    "resmlp": ("resmlp_cifar", "adamw", 1e-3, 0.05, 30),
    "convnext": ("convnext_atto", "adamw", 1e-3, 0.05, 30),
    "resnet": ("resnet18", "sgd", 0.1, 5e-4, 15),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", ["", "_quick", "_gpu"])
def test_every_atlas_preset_composes_with_its_familys_recipe(compose_cfg, family, size):
    cfg = as_options(compose_cfg(f"experiment=atlas_{family}{size}"), Config)
    model, optim, lr, wd, epochs = FAMILIES[family]
    assert cfg.optim.name.value == optim and cfg.optim.lr == lr and cfg.optim.weight_decay == wd
    assert cfg.optim.schedule.value == "cosine" and cfg.dataset.name == "cifar10" and cfg.dataset.augment
    assert cfg.analysis.depthwise and cfg.analysis.maps and cfg.analysis.chains
    assert cfg.analysis.block_maps == (family != "resnet")  # a basic block at 32×32×64 is too large to iterate
    assert cfg.train.label_smoothing == (0.0 if family == "resnet" else 0.1)
    if size == "":
        assert cfg.model.name == model and cfg.train.epochs == epochs and cfg.train.batch_size == 128
        assert (cfg.dataset.train_subset, cfg.dataset.test_subset) == (10000, 2000)
        assert cfg.train.checkpoints.every == 1 and cfg.train.checkpoints.unit.value == "epoch"
    elif size == "_gpu":  # the usual size on all the data, on the device
        assert cfg.dataset.train_subset is None and cfg.dataset.test_subset is None and cfg.train.device == "cuda"
        assert cfg.train.epochs == 100 and cfg.analysis.depth_inputs == 16 and cfg.analysis.n_inputs == 100
    else:
        assert cfg.dataset.train_subset == 128 and cfg.train.epochs == 1 and not cfg.figures


@pytest.mark.slow
def test_each_quick_preset_runs_and_the_atlas_reads_them_all(tmp_path, data_root):
    env = {"STABILITYSCOPE_DATA": str(data_root)}
    for family in FAMILIES:
        proc = run_cli(f"experiment=atlas_{family}_quick", "train.threads=1", f"hydra.run.dir={tmp_path}/{family}",
                       cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open_trace(tmp_path / family) as tr:
            assert tr.status == "finished" and len(tr) == 3  # checkpoint 0 and after each of the 2 steps
            blocks = [layer for layer in tr.layers if layer.startswith("block:")]
            assert blocks and "depth:trunk" in tr.layers
            gains = np.array([tr.stat(b, "gain_rms") for b in blocks])
            assert np.isfinite(gains).all() and (gains > 0).all()
            assert np.isfinite(tr.stat("depth:trunk", "depth_lambda_max")).all()
    proc = run_cli("task=atlas", f"runs=[{','.join(str(tmp_path / f) for f in FAMILIES)}]", "figures=false",
                   f"checkpoint_root={tmp_path}/out", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = (tmp_path / "out" / "atlas").glob("*/atlas.json")
    doc = json.loads(report.read_text())
    assert {r["family"] for r in doc["runs"]} == {"ViT", "MLP-Mixer", "ResMLP", "ConvNeXt", "ResNet"}
    assert {c["family"] for c in doc["claims"]} == {"ViT", "MLP-Mixer", "ResMLP", "ConvNeXt", "ResNet"}
    assert any(row["statistic"] == "gain, median over blocks (depth-wise)" for row in doc["pick_table"])
    assert (report.parent / "atlas.md").read_text().startswith("# Atlas")


def test_task_atlas_without_runs_says_what_it_needs(tmp_path):
    proc = run_cli("task=atlas", cwd=tmp_path)
    assert proc.returncode != 0 and "task=atlas needs the runs to analyse" in proc.stderr
    assert "Traceback" not in proc.stderr
