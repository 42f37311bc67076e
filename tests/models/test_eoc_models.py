"""EOC-optimality's models (SCIENCE.md §2), the whole-model map input → layer, and their tracked runs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from stabilityscope import open_trace
from stabilityscope.dynamics.lyapunov import ATTRACTORS
from stabilityscope.dynamics.submodel import ModelPrefix, prefix_map
from stabilityscope.errors import ConfigError
from stabilityscope.models.eoc_models import EocCNN, EocMLP
from stabilityscope.training.trainer import Run

TINY = ("dataset.train_subset=256", "dataset.test_subset=64", "train.epochs=1", "analysis.n_inputs=8",
        "analysis.steps=30", "figures=false", "report=false")


def test_eoc_mlp_structure_and_keras_init():
    torch.manual_seed(0)
    m = EocMLP()
    assert [tuple(l.weight.shape) for l in (m.fc1, m.fc2, m.fc3, m.head)] == [(784, 784), (100, 784), (784, 100), (10, 784)]
    bound = math.sqrt(6 / (784 + 100))  # Glorot-uniform, zero biases (Keras)
    assert float(m.fc2.weight.detach().abs().max()) <= bound and float(m.fc2.bias.detach().abs().max()) == 0.0
    assert m(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_eoc_cnn_returns_to_the_input_shape():
    torch.manual_seed(0)
    m = EocCNN((3, 32, 32), 10).eval()
    x = torch.rand(2, 3, 32, 32)
    assert m(x).shape == (2, 10)
    out = ModelPrefix(m, "act5")(x)
    assert out.shape == (2, 3, 32, 32) and float(out.min()) >= 0  # after the ReLU
    assert EocCNN((1, 28, 28), 10)(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # 28 → 7 → 28
    with pytest.raises(ConfigError, match="divisible by 4"):
        EocCNN((3, 30, 30), 10)


def test_prefix_stops_at_the_layer():
    m = EocMLP().eval()
    called = []
    m.head.register_forward_hook(lambda *a: called.append(1))
    x = torch.rand(4, 1, 28, 28)
    out = ModelPrefix(m, "act3")(x)
    assert not called and out.shape == x.shape  # flattened 784 returned in the input's shape
    expected = m.act3(m.fc3(m.act2(m.fc2(m.act1(m.fc1(x.flatten(1)))))))
    torch.testing.assert_close(out.flatten(1), expected)
    F = prefix_map(m, "act3", (1, 28, 28))
    torch.testing.assert_close(F(x.flatten(1)), expected)


def test_prefix_map_errors_name_the_problem():
    m = EocMLP()
    with pytest.raises(ConfigError, match="Did you mean act3"):
        prefix_map(m, "acts3", (1, 28, 28))
    with pytest.raises(ConfigError, match=r"act2.*100 values per example.*784"):
        prefix_map(m, "act2", (1, 28, 28))


def test_eoc_mlp_on_fashion_mnist_records_the_map(tmp_path, compose_cfg, data_root):
    cfg = compose_cfg("experiment=eoc_mlp", f"dataset.root={data_root}", *TINY)
    assert (cfg.optim.name.value, cfg.optim.lr, cfg.train.batch_size, cfg.analysis.map_layer) == ("adam", 1e-3, 32, "act3")
    Run(cfg, tmp_path).execute()
    with open_trace(tmp_path / "trace.h5") as tr:
        assert tr.checkpoints.tolist() == [0, 1] and tr.metric("test_acc")[-1] > 0.3
        assert set(tr.layers) == {"fc1", "fc2", "fc3", "head", "map:act3"}
        info = tr.layer_info("map:act3")
        assert info["kind"] == "model_map" and info["fan_in"] == 784 and list(info["input_shape"]) == [1, 28, 28]
        for stat in ("s_mean", "s_std", "jacobian_product_exponent", "two_trajectory_exponent",
                     "asymptotic_distance", "lambda_max"):
            assert tr.stat("map:act3", stat).shape == (2,)
        assert np.isfinite(tr.stat("map:act3", "s_mean")).all() and (tr.stat("map:act3", "s_mean") > 0).all()
        assert set(tr.stat("map:act3", "attractor")) <= set(ATTRACTORS)
        assert "J" not in tr.stats("map:act3")  # a module map has no single weight matrix
        assert np.isfinite(tr.stat("fc1", "s_mean")).all() and tr.layer_info("fc1")["map_activation"] == "relu"
        assert tr.layer_info("fc2")["surrogate"]


def test_eoc_cnn_experiment_and_its_map(compose_cfg):
    cfg = compose_cfg("experiment=eoc_cnn")
    assert (cfg.model.name, cfg.dataset.name, cfg.dataset.normalize, cfg.analysis.map_layer) == ("eoc_cnn", "cifar10", False, "act5")
    from stabilityscope.models.dissect import tracked_records
    from stabilityscope.models.registry import build_model
    from stabilityscope.recording.tracking import LayerTracker

    torch.manual_seed(0)
    model = build_model(cfg.model, (3, 32, 32), 10)
    cfg.analysis.steps, cfg.analysis.n_inputs = 6, 3
    records = tracked_records(model, cfg.model, cfg.analysis, (3, 32, 32))
    assert [r.name for r in records] == ["fc", "head", "map:act5"]
    stats = LayerTracker(model, records, cfg.analysis, probe_inputs=torch.rand(3, 3, 32, 32)).measure(model)["map:act5"]
    assert stats["s_mean"] > 0 and math.isfinite(stats["lambda_max"]) and stats["poincare"].shape == (3, 3, 2)
    assert model.training  # measuring leaves the training mode as it was


def test_map_layer_for_any_model_whose_shapes_agree(compose_cfg):
    from stabilityscope.models.dissect import model_map_record
    from stabilityscope.recording.tracking import LayerTracker

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2))
    rec = model_map_record(model, "4", (3, 4))
    assert (rec.name, rec.fan_in, rec.input_shape) == ("map:4", 12, (3, 4))
    analysis = compose_cfg("analysis.steps=20").analysis
    stats = LayerTracker(model, [rec], analysis, probe_inputs=torch.randn(5, 3, 4)).measure(model)["map:4"]
    assert 0 < stats["s_mean"] and stats["map_steps"] <= 20
    with pytest.raises(ConfigError, match="needs equal sizes"):
        model_map_record(model, "2", (3, 4))


def test_probed_jacobian_norm_is_unbiased_for_large_maps():
    from stabilityscope.dynamics.module_maps import ProbedModuleMap

    torch.manual_seed(0)
    lin = nn.Linear(1100, 1100)  # N > 1024: M1 from 64 random probes per state
    F = ProbedModuleMap(lin, (1100,))
    est = F.jacobian_norm(torch.randn(16, 1100))
    exact = float(torch.linalg.matrix_norm(lin.weight.detach()))  # a linear map: ∂F = W everywhere
    assert est.shape == (16,) and float(est.mean()) == pytest.approx(exact, rel=0.05)
    assert float(est.std() / est.mean()) < (2 / 64) ** 0.5


def _timm_mlp(d: int, h: int) -> nn.Module:
    from timm.layers import Mlp

    return Mlp(d, h, act_layer=nn.GELU, drop=0.1)


@pytest.mark.parametrize("build, states", [
    (lambda: _timm_mlp(12, 48), 16),  # many states: the h × h matrix M
    (lambda: _timm_mlp(12, 48), 2),  # few states: the Jacobians themselves
    (lambda: nn.Sequential(nn.Linear(10, 30), nn.Tanh(), nn.Dropout(0.2), nn.Linear(30, 10)), 16),
    (lambda: nn.Sequential(nn.Linear(10, 30), nn.SiLU(), nn.Identity(), nn.Linear(30, 10)), 3),
])
def test_mlp_block_jacobian_norm_equals_autograd(build, states):
    """M1 of Linear → elementwise φ → Linear in closed form equals the norm of autograd's full Jacobian."""
    from stabilityscope.dynamics.maps import ModuleMap
    from stabilityscope.dynamics.module_maps import ProbedModuleMap, linear_act_linear

    torch.manual_seed(0)
    block = build().double()
    d = block[0].in_features if isinstance(block, nn.Sequential) else block.fc1.in_features
    assert linear_act_linear(block) is not None
    x = torch.randn(states, d, dtype=torch.float64)
    closed = ProbedModuleMap(block, (d,)).jacobian_norm(x)
    jac = torch.func.vmap(torch.func.jacrev(lambda s: block.eval()(s)))(x)  # (B, d, d), independent of the map class
    torch.testing.assert_close(closed, torch.linalg.matrix_norm(jac), rtol=1e-10, atol=0)
    torch.testing.assert_close(closed, ModuleMap(block, (d,)).jacobian_norm(x), rtol=1e-10, atol=0)


@pytest.mark.parametrize("build", [
    lambda: _timm_mlp(12, 48),
    lambda: nn.Sequential(nn.Linear(10, 30), nn.Tanh(), nn.Dropout(0.2), nn.Linear(30, 10)),
    lambda: nn.Sequential(nn.Linear(10, 30, bias=False), nn.SiLU(), nn.Linear(30, 10, bias=False)),
])
def test_mlp_block_steps_and_jvp_equal_autodiff(build):
    """The closed-form steps of an MLP block (states and tangent columns through W1 and W2 as one matrix
    each) equal F and forward-mode autodiff's J·v of the module, in float64."""
    from stabilityscope.dynamics.maps import ModuleMap
    from stabilityscope.dynamics.module_maps import ProbedModuleMap

    torch.manual_seed(0)
    block = build().double().eval()
    d = block[0].in_features if isinstance(block, nn.Sequential) else block.fc1.in_features
    x, x2 = torch.randn(2, 5, d, dtype=torch.float64)
    v = torch.randn(5, d, 3, dtype=torch.float64)
    closed, auto = ProbedModuleMap(block, (d,)), ModuleMap(block, (d,))
    assert closed._mlp() is not None
    for got, want in zip(closed.tracked_step(x, x2, v), (block(x), block(x2), auto.jvp(x, v)[1])):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(closed.jvp(x, v)[1], auto.jvp(x, v)[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block", [
    nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 8)),  # a norm between
    nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8), nn.GELU()),  # an activation after
    nn.Sequential(nn.Linear(8, 16), nn.Softmax(-1), nn.Linear(16, 8)),  # not elementwise
])
def test_other_blocks_keep_autograd_jacobian_norms(block):
    from stabilityscope.dynamics.module_maps import linear_act_linear

    assert linear_act_linear(block) is None
