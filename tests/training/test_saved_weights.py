"""Traces from saved checkpoints (task=analyze) and the one-shot inspection table (ss.inspect, analysis=inspect)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, ModelConfig
from stabilityscope.dynamics.weight_structure import RADIUS_RTOL
from stabilityscope.errors import ConfigError
from stabilityscope.training.data import load_dataset
from stabilityscope.training.replay import load_weights, ordered_checkpoints
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, data_root):
    """A short plain-loop run of the canonical network, its weights saved after epochs 0–3 in four formats."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("saved")
    data = load_dataset("fashion_mnist", str(data_root), train_subset=600, test_subset=200)
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(), (1, 28, 28), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    gen = torch.Generator().manual_seed(0)
    expected = {}
    for epoch in range(4):
        if epoch:
            perm = torch.randperm(600, generator=gen)
            for i in range(0, 600, 32):
                idx = perm[i:i + 32]
                loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        expected[epoch] = float(ss.phase_coordinates(sd["hidden.weight"])[1])
        if epoch == 0:  # a plain state_dict, its epoch in the file name
            torch.save(sd, folder / "weights_epoch_0.pt")
        elif epoch == 1:  # Lightning: the module's attribute prefix, the 0-based epoch index just finished
            torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 0, "global_step": 19,
                        "pytorch-lightning_version": "2.6.6"}, folder / "lightning-epoch=0.ckpt")
        elif epoch == 2:  # timm train.py
            torch.save({"state_dict": sd, "epoch": 1, "arch": "fmnist_fc"}, folder / "checkpoint-1.pth.tar.pt")
        else:
            save_file(sd, str(folder / "epoch_3.safetensors"))
    return folder, expected


def test_each_format_loads_with_its_epoch(saved_run):
    folder, _ = saved_run
    got = {p.name: (s.epoch, s.kind, s.step) for p in folder.iterdir() for s in [load_weights(p)]}
    assert got == {"weights_epoch_0.pt": (0, "state_dict", None), "lightning-epoch=0.ckpt": (1, "lightning", 19),
                   "checkpoint-1.pth.tar.pt": (2, "timm", None), "epoch_3.safetensors": (3, "safetensors", None)}
    assert [s.epoch for s in ordered_checkpoints(str(folder / "*"))] == [0, 1, 2, 3]


def test_task_analyze_builds_the_trace_of_saved_weights(tmp_path, data_root, saved_run):
    folder, expected = saved_run
    proc = run_cli("task=analyze", f"checkpoints={folder}/*", "evaluate=true", "dataset.train_subset=600",
                   "dataset.test_subset=200", "analysis.n_inputs=8", "analysis.steps=40", "analysis.eigen=false",
                   f"checkpoint_root={tmp_path}", cwd=tmp_path, env={"STABILITYSCOPE_DATA": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    trace = next(tmp_path.glob("analyze/*/trace.h5"))
    with ss.open_trace(trace) as tr:
        assert tr.status == "finished" and tr.checkpoints.tolist() == [0, 1, 2, 3]
        np.testing.assert_allclose(tr.stat("hidden", "J"), [expected[e] for e in range(4)], rtol=1e-6)
        loss = tr.metric("test_loss")
        assert np.isfinite(loss).all() and loss[-1] < loss[0] and tr.metric("train_acc")[-1] > 0.5
        assert tr.attrs["task"] == "analyze" and tr.steps.tolist()[1] == 19
    assert (trace.parent / "report.md").exists()


class Hook:
    """An object whose unpickling would run this module's code: refused by weights_only loading."""


def test_analyze_refuses_code_execution_mismatched_keys_and_empty_globs(tmp_path, data_root, saved_run):
    evil = tmp_path / "evil_epoch_1.pt"
    torch.save({"state_dict": {"hidden.weight": torch.zeros(2, 2)}, "callback": Hook()}, evil)
    with pytest.raises(ConfigError, match="needs code execution to load"):
        load_weights(evil)
    wrong = tmp_path / "wrong_epoch_1.pt"
    torch.save({"hidden.weight": torch.zeros(5, 784), "extra.bias": torch.zeros(3)}, wrong)
    env = {"STABILITYSCOPE_DATA": str(data_root)}
    proc = run_cli("task=analyze", f"checkpoints={wrong}", f"checkpoint_root={tmp_path / 'out'}", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "missing keys head.bias, head.weight; unexpected keys extra.bias" in proc.stderr
    assert not list((tmp_path / "out").rglob("trace.h5"))
    proc = run_cli("task=analyze", f"checkpoints={tmp_path}/nothing_*.pt", f"checkpoint_root={tmp_path / 'out'}",
                   cwd=tmp_path, env=env)
    assert proc.returncode == 2 and f"checkpoints='{tmp_path}/nothing_*.pt' matches no file" in proc.stderr


# ------------------------------------------------------------------------------------------ inspect


def test_inspect_gives_one_row_per_fc_map_with_the_trackers_numbers(data_root):
    data = load_dataset("fashion_mnist", str(data_root), train_subset=10, test_subset=16)
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(), (1, 28, 28), 10)
    table = ss.inspect(model, data.x_test, AnalysisConfig(n_inputs=16, steps=60))
    assert table["name"].tolist() == ["hidden", "head"]
    hidden = table.set_index("name").loc["hidden"]
    J0, J = ss.phase_coordinates(model.hidden.weight.detach())
    assert hidden["J"] == pytest.approx(float(J)) and hidden["J0"] == pytest.approx(float(J0))
    assert hidden["chi"] == pytest.approx(float(J) ** 2, rel=1e-6)  # tanh below the edge: χ = J²
    assert hidden["phase"] == "P" and hidden["attractor"] == "fixed_point" and 0.3 < hidden["s"] < 0.7
    radius = float(torch.linalg.eigvals(model.hidden.weight.detach().double()).abs().max())
    assert hidden["spectral_radius"] == pytest.approx(radius, rel=1e-4)
    # 784 ≥ FILTER_MIN_N: the checked filtered estimate, within its stated accuracy (relative residual
    # ≤ RADIUS_RTOL; κ ≈ 1 at the edge of a random layer's spectrum) of the full decomposition
    assert hidden["radius_method"] == "filtered" and abs(hidden["spectral_radius"] - radius) <= RADIUS_RTOL * radius
    head = table.set_index("name").loc["head"]
    assert not head["square"] and np.isnan(head["spectral_radius"]) and np.isnan(head["s"])
    assert head["radius_method"] == ""
    quick = ss.inspect(model)  # no inputs: no map columns
    assert np.isnan(quick["s"]).all() and quick["J"].tolist() == pytest.approx(table["J"].tolist())


def test_inspect_on_a_timm_transformer():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10)
    table = ss.inspect(model, torch.randn(4, 3, 32, 32), AnalysisConfig(n_inputs=4, steps=20))
    roles = set(table["role"])
    assert {"attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_out", "head", "mlp_block"} <= roles
    q = table[table["role"] == "attn_q"]
    assert len(q) == 12 and q["square"].all() and (q["spectral_radius"] > 0).all()
    assert table[table["kind"] == "chain"]["s"].notna().all()  # the MLP blocks iterated from the inputs


def test_analysis_inspect_prints_and_saves_the_table(tmp_path, data_root, saved_run):
    folder, expected = saved_run
    proc = run_cli("analysis=inspect", f"model.checkpoint={folder}/epoch_3.safetensors", "analysis.steps=40",
                   f"checkpoint_root={tmp_path}", cwd=tmp_path, env={"STABILITYSCOPE_DATA": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch_3.safetensors (epoch 3)" in proc.stdout and "hidden" in proc.stdout
    csv = next(tmp_path.glob("*/*/inspect.csv"))
    import pandas as pd

    table = pd.read_csv(csv).set_index("name")
    assert table.loc["hidden", "J"] == pytest.approx(expected[3], rel=1e-6)
    assert not list(tmp_path.rglob("trace.h5"))  # no training
