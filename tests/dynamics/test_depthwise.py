"""Depth-wise readings of residual networks: against autograd on real timm blocks, against blocks whose
Jacobian is known, against the mean-field theory; the traps of iterated residual maps, detected."""
from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

from stabilityscope.dynamics.depthwise import (
    Span,
    block_readings,
    depth_lyapunov,
    span_module,
    trunk_states,
    unfused_attention,
)
from stabilityscope.dynamics.lyapunov import ATTRACTORS, classify_attractor, map_measures, near_identity
from stabilityscope.dynamics.maps import ModuleMap
from stabilityscope.errors import ConfigError
from stabilityscope.models.trunk import check_contiguous, find_trunk, trunk_shapes
from stabilityscope.theory.meanfield import order_parameters


def tiny_vit(depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=8, patch_size=4, embed_dim=16, num_heads=2,
                              depth=depth, num_classes=3).double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def scale_free_dense(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """J̃ = (‖x‖/‖y‖)·P_y·J·P_x of one input by autograd's full Jacobian, and J itself (independent path)."""
    shape = x.shape
    J = torch.autograd.functional.jacobian(lambda z: block(z.reshape(1, *shape)).reshape(-1), x.reshape(-1))
    xv, yv = x.reshape(-1), block(x.reshape(1, *shape)).reshape(-1)
    P = lambda u: torch.eye(len(u), dtype=u.dtype) - torch.outer(u, u) / u.dot(u)  # noqa: E731
    return (xv.norm() / yv.norm()) * P(yv) @ J @ P(xv), J


def test_block_readings_equal_the_scale_free_jacobian_autograd_builds_on_a_timm_block():
    model = tiny_vit()
    block = model.blocks[0]
    x = torch.randn(3, 5, 16, dtype=torch.float64) * 3  # three inputs: 4 patch tokens + class token, width 16
    with unfused_attention(model):
        r = block_readings(block, x, exact_max=1000, lanczos_steps=40)
        for b in range(3):
            Jt, J = scale_free_dense(block, x[b])
            sv = torch.linalg.svdvals(Jt)
            n = x[b].numel()
            assert float(r.gain_rms[b]) == pytest.approx(float(Jt.norm() / math.sqrt(n - 1)), rel=1e-10)
            assert float(r.gain_top[b]) == pytest.approx(float(sv[0]), rel=1e-8)
            assert float(r.raw_rms[b]) == pytest.approx(float(J.norm() / math.sqrt(n)), rel=1e-10)
            y = block(x[b:b + 1])
            assert float(r.branch_ratio[b]) == pytest.approx(float((y - x[b]).norm() / x[b].norm()), rel=1e-10)
            assert float(r.stream_ratio[b]) == pytest.approx(float(y.norm() / x[b].norm()), rel=1e-10)
    assert r.exact and torch.equal(r.gain_rms_stderr, torch.zeros(3, dtype=torch.float64))


def test_the_random_probe_estimate_is_unbiased_within_its_stated_error():
    model = tiny_vit()
    x = torch.randn(4, 5, 16, dtype=torch.float64) * 3
    with unfused_attention(model):
        exact = block_readings(model.blocks[1], x, exact_max=1000, lanczos_steps=0)
        probed = block_readings(model.blocks[1], x, exact_max=10, probes=24, lanczos_steps=0, seed=3)
    assert not probed.exact and bool((probed.gain_rms_stderr > 0).all())
    # an unbiased estimate with a stated standard error: four of them cover the exact value
    assert bool(((probed.gain_rms - exact.gain_rms).abs() <= 4 * probed.gain_rms_stderr).all())


def test_a_block_with_zero_output_weights_is_the_identity_and_reads_one_everywhere():
    model = tiny_vit(depth=3)
    with torch.no_grad():
        for blk in model.blocks:  # both branches end in a zeroed projection: x + 0 + 0
            for layer in (blk.attn.proj, blk.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    with unfused_attention(model):
        r = block_readings(model.blocks[0], x, exact_max=1000, lanczos_steps=8)
        spec = depth_lyapunov(list(model.blocks), [x, x, x], k=6)
    one = torch.ones(2, dtype=torch.float64)
    for reading in (r.gain_rms, r.gain_top, r.raw_rms, r.stream_ratio):
        torch.testing.assert_close(reading, one, rtol=1e-12, atol=0)
    torch.testing.assert_close(r.branch_ratio, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(spec.exponents, torch.zeros(2, 6, dtype=torch.float64), rtol=0, atol=1e-12)


class Linear(nn.Module):
    """y = A x (+ x when residual): a block with a known Jacobian."""

    def __init__(self, A: torch.Tensor, residual: bool) -> None:
        super().__init__()
        self.A, self.residual = A, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.A.T
        return x + y if self.residual else y


def test_a_linear_residual_branch_reads_its_closed_form_jacobian():
    torch.manual_seed(1)
    n = 12
    A = torch.randn(n, n, dtype=torch.float64) * 0.3
    x = torch.randn(5, n, dtype=torch.float64)
    r = block_readings(Linear(A, residual=True), x, lanczos_steps=n)
    J = torch.eye(n, dtype=torch.float64) + A  # the Jacobian of x + A x, at every x
    for b in range(5):
        xv, yv = x[b], x[b] + A @ x[b]
        Px = torch.eye(n, dtype=torch.float64) - torch.outer(xv, xv) / xv.dot(xv)
        Py = torch.eye(n, dtype=torch.float64) - torch.outer(yv, yv) / yv.dot(yv)
        Jt = (xv.norm() / yv.norm()) * Py @ J @ Px
        assert float(r.gain_rms[b]) == pytest.approx(float(Jt.norm() / math.sqrt(n - 1)), rel=1e-12)
        assert float(r.gain_top[b]) == pytest.approx(float(torch.linalg.svdvals(Jt)[0]), rel=1e-10)
        assert float(r.raw_rms[b]) == pytest.approx(float(J.norm() / math.sqrt(n)), rel=1e-12)


def test_a_scaled_rotation_is_scale_free_neutral():
    # y = 7·Q x: every direction is kept and the stream is scaled by 7; the scale-free Jacobian is an
    # isometry of the tangent spaces, so each reading is 1 and each depth exponent 0 (the raw RMS is 7).
    torch.manual_seed(2)
    n = 10
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    blocks = [Linear(7 * Q, residual=False), Linear(7 * Q.T, residual=False)]
    x = torch.randn(3, n, dtype=torch.float64)
    r = block_readings(blocks[0], x, lanczos_steps=n)
    torch.testing.assert_close(r.gain_rms, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(r.gain_top, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(r.raw_rms, torch.full((3,), 7.0, dtype=torch.float64))
    spec = depth_lyapunov(blocks, [x, blocks[0](x)], k=n - 1)
    torch.testing.assert_close(spec.exponents, torch.zeros(3, n - 1, dtype=torch.float64), rtol=0, atol=1e-12)


def test_the_depth_exponents_sum_to_the_blocks_log_determinants():
    # With a full frame (k = N − 1), Σ_i λ_i = (1/L) Σ_l ln |det J̃_l| on the tangent spaces: an invariant of
    # the QR through depth that the blocks' dense Jacobians give independently.
    model = tiny_vit()
    x = torch.randn(2, 5, 16, dtype=torch.float64) * 2
    states = [x, model.blocks[0](x)]
    n = x[0].numel()
    with unfused_attention(model):
        spec = depth_lyapunov(list(model.blocks), states, k=n - 1)
        for b in range(2):
            logdet = sum(float(torch.linalg.svdvals(scale_free_dense(blk, s[b])[0])[: n - 1].log().sum())
                         for blk, s in zip(model.blocks, states))
            assert float(spec.exponents[b].sum()) == pytest.approx(logdet / 2, rel=1e-9)
    assert bool((spec.exponents[:, :-1] >= spec.exponents[:, 1:]).all())  # sorted


def test_a_plain_tanh_layer_at_its_length_fixed_point_reads_the_mean_field_chi():
    # x → tanh(W x), W_ij ~ N(0, J²/N): at the length fixed point the RMS gain² is χ = J²·E[φ'(h)²]
    # (the mean-field stability, = EOC-optimality's s² for large random W). Finite N: the mean of N
    # per-unit terms fluctuates by ~1/√N (2% at N = 2000), so 5% holds on any machine.
    torch.manual_seed(0)
    n, J = 2000, 1.5
    W = torch.randn(n, n, dtype=torch.float64) * J / math.sqrt(n)
    layer = lambda z: torch.tanh(z @ W.T)  # noqa: E731
    x = torch.randn(2, n, dtype=torch.float64)
    for _ in range(60):  # onto the fixed point q*
        x = layer(x)
    r = block_readings(layer, x, probes=64, lanczos_steps=0)
    _, _, chi = order_parameters(0.0, J, "tanh")
    assert float(r.gain_rms.square().mean()) == pytest.approx(float(chi), rel=0.05)


def test_trunk_states_capture_each_blocks_real_input():
    model = tiny_vit(depth=3)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    spans = find_trunk(model)
    states = trunk_states(model, spans, x)
    assert len(states) == 3
    torch.testing.assert_close(states[1], model.blocks[0](states[0]))
    torch.testing.assert_close(states[2], model.blocks[1](states[1]))


@pytest.mark.parametrize("family", ["vit", "mixer", "resmlp", "convnext", "resnet", "tv_vit", "tv_convnext"])
def test_the_trunk_of_each_family_is_found_and_contiguous(family):
    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock
    from torchvision.models.vision_transformer import VisionTransformer

    builders = {
        "vit": lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, num_classes=10),
        "mixer": lambda: MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=3, embed_dim=32),
        "resmlp": lambda: MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=3, embed_dim=32,
                                   mlp_ratio=4, block_layer=ResBlock, norm_layer=Affine, stem_norm=False),
        "convnext": lambda: timm.create_model("convnext_atto", num_classes=10, patch_size=2),
        "resnet": lambda: torchvision.models.resnet18(num_classes=10),
        "tv_vit": lambda: VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                            mlp_dim=64, num_classes=10),
        "tv_convnext": lambda: torchvision.models.convnext_tiny(num_classes=10),
    }
    expected = {"vit": 3, "mixer": 3, "resmlp": 3, "convnext": 16, "resnet": 8, "tv_vit": 2, "tv_convnext": 21}
    model = builders[family]().eval()
    x = torch.randn(1, 3, 32, 32)
    spans = find_trunk(model)
    assert len(spans) == expected[family]
    assert all(check_contiguous(model, spans, x))
    shapes = trunk_shapes(model, spans, x)
    assert all(math.prod(s_out) > 0 for _, s_out in shapes)


def test_a_trunk_can_be_named_by_a_pattern_and_a_bad_one_says_what_exists():
    model = tiny_vit(depth=3)
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    assert find_trunk(model, r"^blocks\.[12]$", x) == [("blocks.1",), ("blocks.2",)]
    with pytest.raises(ConfigError, match="matches no module.*blocks"):
        find_trunk(model, "nothing_here", x)
    with pytest.raises(ConfigError, match="No trunk found"):
        find_trunk(nn.Linear(3, 3))


def test_a_span_of_several_modules_is_one_block():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
    mlp.trunk = (("1", "2"), ("3", "4"))
    spans = find_trunk(mlp)
    block = span_module(mlp, spans[0])
    assert isinstance(block, Span)
    x = torch.randn(2, 8)
    torch.testing.assert_close(block(x), torch.tanh(mlp[1](x)))
    assert all(check_contiguous(mlp, spans, x))


# -- the traps of iterated residual maps ---------------------------------------------------------------


class ConstantBranch(nn.Module):
    """x → x + c·u: a bounded branch (here constant) whose orbit runs off along u at a constant step."""

    def __init__(self, u: torch.Tensor) -> None:
        super().__init__()
        self.u = nn.Parameter(u, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.u


class NormedBranch(nn.Module):
    """x → x + ε·tanh(W·LN(x)): a residual block whose branch stays small beside the stream."""

    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.W = nn.Parameter(torch.randn(n, n, dtype=torch.float64) * 2 / math.sqrt(n), requires_grad=False)
        self.eps, self.n = eps, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.layer_norm(x, (self.n,))
        return x + self.eps * torch.tanh(h @ self.W.T)


def test_an_orbit_running_off_at_a_constant_step_is_drifting_not_the_edge():
    n = 16
    u = torch.ones(n, dtype=torch.float64) / 4
    F = ModuleMap(ConstantBranch(u), (n,))
    m = map_measures(F, torch.randn(3, n, dtype=torch.float64), steps=200)
    # its Jacobian is exactly I: s = 1 and λ_max = 0, which without the drift test read "quasi-periodic"
    torch.testing.assert_close(m.s_mean, torch.tensor(1.0, dtype=torch.float64))
    assert [ATTRACTORS[c] for c in m.attractor.tolist()] == ["drifting"] * 3


def test_a_residual_block_with_a_small_branch_is_near_identity_and_a_plain_slow_orbit_is_not():
    n = 32
    F = ModuleMap(NormedBranch(n, eps=0.01), (n,))
    x0 = torch.randn(4, n, dtype=torch.float64) * 5
    m = map_measures(F, x0, steps=200)
    labels = [ATTRACTORS[c] for c in near_identity(m.orbit_tail, m.attractor).tolist()]
    assert set(labels) <= {"near_identity", "drifting"} and "near_identity" in labels
    # a contracting orbit settling on a fixed point keeps its class: its steps shrink
    tail = torch.stack([torch.full((n,), 1.0 + 0.5 * 0.8 ** t, dtype=torch.float64) for t in range(64)])[None]
    codes, _ = classify_attractor(tail, torch.tensor([-0.2], dtype=torch.float64))
    assert ATTRACTORS[int(near_identity(tail, codes)[0])] == "fixed_point"


def test_a_gelu_branch_with_large_weights_diverges_and_is_labelled_so():
    torch.manual_seed(5)
    mlp = timm.layers.Mlp(16, 64).double().eval()
    with torch.no_grad():
        mlp.fc1.weight.mul_(8.0)
        mlp.fc2.weight.mul_(8.0)
    m = map_measures(ModuleMap(mlp, (16,)), torch.randn(3, 16, dtype=torch.float64), steps=300)
    assert set(ATTRACTORS[c] for c in m.attractor.tolist()) == {"divergent"}


def test_the_drift_test_leaves_bounded_attractors_alone():
    # a rotation on the circle (a torus) and a period-2 orbit keep their classes
    t = torch.arange(64, dtype=torch.float64)
    torus = torch.stack([torch.cos(0.7 * t), torch.sin(0.7 * t)], -1)[None]
    flip = torch.stack([torch.tensor([1.0, 2.0]) * (-1) ** i for i in range(64)]).double()[None]
    codes, _ = classify_attractor(torch.cat([torus, flip]), torch.tensor([0.0, -0.5], dtype=torch.float64))
    assert [ATTRACTORS[c] for c in codes.tolist()] == ["quasi_periodic", "periodic"]
    assert np.isfinite(float(codes.sum()))
