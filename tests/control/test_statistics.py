"""The controller's cheap statistics against a checkpoint's full measurement, on small real models.

J² and χ read the weights with the same functions a checkpoint uses: they must agree to float64 rounding,
on the canonical network trained a few steps on Fashion-MNIST, on its non-square head, and on a timm
ViT's FC maps (fused q/k/v views included). The block gain from 4 inputs × 4 random directions is an
estimate of the RMS gain a full tangent basis gives exactly on the same inputs: it must agree within 4 of its
own standard errors (from the spread of the probed column gains), on a timm ViT trained a few steps on CIFAR-10.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, ModelConfig
from stabilityscope.control.statistics import BlockGain, WeightStatistic, edge_statistic
from stabilityscope.dynamics.depthwise import block_readings, span_module, trunk_states, unfused_attention
from stabilityscope.errors import ConfigError
from stabilityscope.models.trunk import find_trunk
from stabilityscope.training.data import load_dataset


@pytest.fixture(scope="module")
def canonical(data_root, one_thread):
    """The canonical network after 30 SGD steps on 960 Fashion-MNIST images, and 16 test inputs."""
    data = load_dataset("fashion_mnist", str(data_root), train_subset=960, test_subset=16)
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(), (1, 28, 28), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)
    for i in range(30):
        x, y = data.x_train[32 * i:32 * (i + 1)], data.y_train[32 * i:32 * (i + 1)]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, data.x_test


@pytest.fixture(scope="module")
def small_vit(data_root, one_thread):
    """A 3-block ViT (width 32, 16 patches + class token) after 20 Adam steps on 320 CIFAR-10 images."""
    data = load_dataset("cifar10", str(data_root), train_subset=320, test_subset=8, normalize=True)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                              depth=3, num_heads=2, num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(20):
        x, y = data.x_train[16 * i:16 * (i + 1)], data.y_train[16 * i:16 * (i + 1)]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, data.x_test


def full_measurement(model, inputs, layers="all"):
    tracker = ss.LayerTracker(model, ss.tracked_records(model, None, AnalysisConfig(layers=layers, maps=False),
                                                          tuple(inputs.shape[1:])),
                              AnalysisConfig(layers=layers, maps=False, eigen=False, weight_structure=False),
                              probe_inputs=inputs)
    return tracker.measure(model)


def test_j2_and_chi_are_the_checkpoints_own_values_on_the_canonical_network(canonical):
    model, x = canonical
    full = full_measurement(model, x)
    for name in ("J2", "chi"):
        stat = edge_statistic(model, name, "hidden|head", probe_inputs=x)
        assert stat.maps == ["hidden", "head"]
        values = stat.read(model)
        expected = [full[m]["J"] ** 2 if name == "J2" else full[m]["chi"] for m in stat.maps]
        np.testing.assert_allclose(values, expected, rtol=1e-12)
    assert edge_statistic(model, "J2", probe_inputs=x).maps == ["hidden"]  # default: every FC map but the head
    np.testing.assert_array_equal(edge_statistic(model, "J2", "hidden|head", probe_inputs=x).edges, [1.0, 1.0])


def test_weight_overrides_are_read_instead_of_the_model(canonical):
    model, x = canonical
    stat = edge_statistic(model, "J2", "hidden", probe_inputs=x)
    w = 2 * model.hidden.weight.detach()
    assert stat.read(model, {"hidden": w})[0] == pytest.approx(4 * stat.read(model)[0], rel=1e-12)


def test_j2_and_chi_agree_with_a_checkpoint_on_a_vits_fc_maps(small_vit):
    model, x = small_vit
    full = full_measurement(model, x, layers=r"blocks\.1\.")
    stat = edge_statistic(model, "chi", r"blocks\.1\.", probe_inputs=x)
    assert {"blocks.1.attn.qkv.q", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"} <= set(stat.maps)
    np.testing.assert_allclose(stat.read(model), [full[m]["chi"] for m in stat.maps], rtol=1e-12)
    j2 = edge_statistic(model, "J2", r"blocks\.1\.mlp\.fc1", probe_inputs=x)
    assert j2.edges[0] == pytest.approx(2.0)  # fc1 is followed by GELU: its mean-field surrogate is ReLU's, J_c = √2
    # a fused projection's q, k and v views share one parameter: their decay is that tensor's
    params = stat.parameters(model)
    q = stat.maps.index("blocks.1.attn.qkv.q")
    assert params[q][0] is model.blocks[1].attn.qkv.weight


def test_the_few_probe_gain_estimates_the_exact_rms_gain_within_its_standard_error(small_vit):
    model, x = small_vit
    model.eval()
    spans = find_trunk(model)
    gain = BlockGain(spans, x[:4], probes=4)
    cheap = gain.read(model)
    assert gain.maps == [f"block:{s[0]}" for s in spans] and len(cheap) == 3
    with torch.no_grad():
        states = trunk_states(model, spans, x[:4])
    with unfused_attention(model), torch.enable_grad():
        for i, (span, s) in enumerate(zip(spans, states)):
            n = s[0].numel()
            exact = block_readings(span_module(model, span), s, exact_max=n, lanczos_steps=0)
            probed = block_readings(span_module(model, span), s, probes=4, lanczos_steps=0, exact_max=0)
            assert exact.exact and not probed.exact
            assert cheap[i] == pytest.approx(float(probed.gain_rms.double().mean()), rel=1e-12)
            se = float(probed.gain_rms_stderr.double().square().sum().sqrt()) / len(s)  # of the mean over inputs
            assert abs(cheap[i] - float(exact.gain_rms.double().mean())) <= 4 * se
    # the readings draw nothing from the global generator and leave the model as they found it
    model.train()
    state = torch.get_rng_state()
    gain.read(model)
    assert torch.equal(state, torch.get_rng_state()) and model.training
    assert all(p.requires_grad for p in model.parameters())


def test_bad_selections_name_what_there_is(canonical):
    model, x = canonical
    with pytest.raises(ConfigError, match="selects none of the FC maps of FashionFC: hidden, head"):
        edge_statistic(model, "chi", "nothing", probe_inputs=x)
    with pytest.raises(ConfigError, match="gain reads the trunk's blocks at real inputs"):
        edge_statistic(model, "gain")
    with pytest.raises(ConfigError, match="allowed: auto, J2, chi, gain"):
        edge_statistic(model, "s")
    assert isinstance(edge_statistic(model, "auto", probe_inputs=x), WeightStatistic)
    assert math.isclose(edge_statistic(model, "auto", probe_inputs=x).edges[0], 1.0)


@pytest.mark.parametrize("J0, J", [(0.0, 0.999), (0.5, 0.95), (-0.9, 0.5), (0.0, 1.3), (1.2, 0.8)])
def test_chi_in_and_out_of_the_paramagnetic_phase_is_the_mean_field_solution(J0, J):
    n = 200
    z = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = (z - z.mean()) / z.std(unbiased=False)
    model = torch.nn.Sequential(torch.nn.Linear(n, n, bias=False), torch.nn.Tanh(), torch.nn.Linear(n, 3)).double()
    with torch.no_grad():
        model[0].weight.copy_(J0 / n + J / math.sqrt(n) * z)
    stat = edge_statistic(model, "chi", "^0$")
    expected = float(ss.order_parameters(J0, J)[2])  # the solver, from u = q = 1 (slow near J = 1)
    assert stat.read(model)[0] == pytest.approx(expected, rel=1e-9)
