"""Iterated maps: closed-form derivatives against autodiff, shapes, and the square-layer rule."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stabilityscope.dynamics.maps import LayerMap, ModuleMap

pytestmark = [pytest.mark.filterwarnings("ignore:.*torch.jit.script:FutureWarning"),
              pytest.mark.usefixtures("one_thread")]



ATOL = 1e-10  # float64 comparisons of closed form vs autodiff
ACTIVATIONS = ["tanh", "relu", "sigmoid", "identity", torch.sin, nn.Tanh()]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _stack(n_maps: int = 3, n: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    w = torch.randn(n_maps, n, n, generator=g, dtype=torch.float64) * 1.5 / math.sqrt(n)
    b = torch.randn(n_maps, n, generator=g, dtype=torch.float64) * 0.3
    return w, b


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a if isinstance(a, str) else type(a).__name__)
def test_layer_map_derivatives_match_autodiff(activation):
    """diag(φ'(Wx + b))·W and φ' ⊙ (W v) equal torch.func.jacrev of φ(Wx + b), stacks and bias included."""
    w, b = _stack()
    x = torch.randn(3, 4, 7, generator=_gen(1), dtype=torch.float64)
    v = torch.randn(3, 4, 7, 2, generator=_gen(2), dtype=torch.float64)
    stack = LayerMap(w, b, activation)
    jac = stack.jacobian(x)  # (L, B, N, N)
    fx, jv = stack.jvp(x, v)
    phi = activation if callable(activation) else {"tanh": torch.tanh, "relu": torch.relu,
                                                   "sigmoid": torch.sigmoid, "identity": lambda z: z}[activation]
    for l in range(3):
        def f(z, l=l):
            return phi(w[l] @ z + b[l])
        for i in range(4):
            torch.testing.assert_close(jac[l, i], torch.func.jacrev(f)(x[l, i]), atol=ATOL, rtol=0)
            torch.testing.assert_close(fx[l, i], f(x[l, i]), atol=ATOL, rtol=0)
    torch.testing.assert_close(jv, jac @ v, atol=ATOL, rtol=0)
    torch.testing.assert_close(stack.jacobian_norm(x), torch.linalg.matrix_norm(jac), atol=ATOL, rtol=0)


def test_layer_map_shapes_and_broadcast():
    """A single map keeps (B, N); a stack broadcasts a shared (B, N) batch to (L, B, N)."""
    w, b = _stack()
    x = torch.randn(4, 7, generator=_gen(1), dtype=torch.float64)
    single = LayerMap(w[0], b[0])
    assert single(x).shape == (4, 7) and single.jacobian(x).shape == (4, 7, 7)
    assert single.jvp(x, torch.randn(4, 7, 3, dtype=torch.float64))[1].shape == (4, 7, 3)
    stack = LayerMap(w, b)
    out = stack(x)
    assert out.shape == (3, 4, 7)
    for l in range(3):
        torch.testing.assert_close(out[l], LayerMap(w[l], b[l])(x), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="stack of 3 maps"):
        stack(torch.randn(2, 4, 7, dtype=torch.float64))


def test_tracked_step_fuses_three_evaluations():
    w, b = _stack()
    stack = LayerMap(w, b, "tanh")
    x = torch.randn(3, 4, 7, generator=_gen(1), dtype=torch.float64)
    xp = x + 1e-3
    v = torch.randn(3, 4, 7, 2, generator=_gen(2), dtype=torch.float64)
    fx, fxp, jv = stack.tracked_step(x, xp, v)
    torch.testing.assert_close(fx, stack(x), atol=ATOL, rtol=0)
    torch.testing.assert_close(fxp, stack(xp), atol=ATOL, rtol=0)
    torch.testing.assert_close(jv, stack.jvp(x, v)[1], atol=ATOL, rtol=0)


def test_non_square_layer_has_no_iterated_map():
    with pytest.raises(ValueError, match="no iterated map"):
        LayerMap(torch.randn(10, 7))
    with pytest.raises(ValueError, match="no iterated map"):
        LayerMap.from_linear(nn.Linear(7, 10))
    with pytest.raises(ValueError, match="no iterated map"):
        ModuleMap(nn.Linear(7, 10), (7,))


def test_from_linear_and_stack():
    lins = [nn.Linear(5, 5).double() for _ in range(3)]
    maps = [LayerMap.from_linear(lin, nn.Tanh()) for lin in lins]
    stacked = LayerMap.stack(maps)
    listed = LayerMap([m.weight for m in maps], [m.bias for m in maps], "tanh")
    x = torch.randn(2, 5, generator=_gen(3), dtype=torch.float64)
    assert stacked.n_maps == 3 and stacked.activation == "tanh"
    for l, lin in enumerate(lins):
        with torch.no_grad():
            torch.testing.assert_close(stacked(x)[l], torch.tanh(lin(x)), atol=ATOL, rtol=0)
    torch.testing.assert_close(listed(x), stacked(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="activation"):
        LayerMap.stack([maps[0], LayerMap(maps[1].weight, activation="relu")])


@pytest.mark.parametrize("activation", ["tanh", "identity", torch.sin], ids=["tanh", "identity", "callable"])
@pytest.mark.parametrize("k", [7, 5])
def test_jvp_reflectors_equals_jvp_of_the_formed_frame(activation, k):
    """J·Q from geqrf's reflectors (ormqr on W) equals jvp on Q = householder_product(w, tau), for a
    stack with bias and a single map; F(x) is bit-identical to jvp's (the same product), and the
    IteratedMap default (ModuleMap) forms Q itself."""
    w, b = _stack()
    x = torch.randn(3, 4, 7, generator=_gen(1), dtype=torch.float64)
    refl, tau = torch.geqrf(torch.randn(3, 4, 7, k, generator=_gen(2), dtype=torch.float64))
    q = torch.linalg.householder_product(refl, tau)  # (L, B, N, k) orthonormal columns
    for f, xs, r, t, qq in ((LayerMap(w, b, activation), x, refl, tau, q),
                            (LayerMap(w[1], None, activation), x[1], refl[1], tau[1], q[1])):
        fx, jq = f.jvp_reflectors(xs, r, t)
        fx_ref, jq_ref = f.jvp(xs, qq)
        assert jq.shape == qq.shape and torch.equal(fx, fx_ref)
        torch.testing.assert_close(jq, jq_ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(jq, f.jacobian(xs) @ qq, atol=ATOL, rtol=0)
    lin = nn.Linear(7, 7).double()
    module_map = ModuleMap(nn.Sequential(lin, nn.Tanh()), (7,))
    torch.testing.assert_close(module_map.jvp_reflectors(x[0], refl[0], tau[0])[1],
                               LayerMap.from_linear(lin, "tanh").jvp(x[0], q[0])[1], atol=ATOL, rtol=0)


def test_module_map_equals_layer_map():
    """ModuleMap(Sequential(Linear, Tanh)) reproduces LayerMap in value, jvp and Jacobian."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 6).double()
    module_map = ModuleMap(nn.Sequential(lin, nn.Tanh()), (6,))
    layer_map = LayerMap.from_linear(lin, "tanh")
    x = torch.randn(4, 6, generator=_gen(4), dtype=torch.float64)
    for k in (1, 3):
        v = torch.randn(4, 6, k, generator=_gen(5), dtype=torch.float64)
        for a, b in zip(module_map.jvp(x, v), layer_map.jvp(x, v)):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    torch.testing.assert_close(module_map(x), layer_map(x), atol=ATOL, rtol=0)
    torch.testing.assert_close(module_map.jacobian(x), layer_map.jacobian(x), atol=ATOL, rtol=0)
    assert not any(p.grad is not None for p in lin.parameters())


@pytest.mark.parametrize("kind", ["mlp_block", "conv"])
def test_module_map_jvp_consistent_with_jacobian(kind):
    """General sub-networks: jvp (vmapped torch.func.jvp) equals jacrev's Jacobian times v."""
    torch.manual_seed(1)
    if kind == "mlp_block":  # a transformer-style d → 4d → d block
        module, shape = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8), nn.LayerNorm(8)), (8,)
    else:  # an image → image sub-network
        module = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1))
        shape = (2, 4, 4)
    mm = ModuleMap(module.double(), shape)
    assert not module.training
    n = math.prod(shape)
    x = torch.randn(3, n, generator=_gen(6), dtype=torch.float64)
    v = torch.randn(3, n, 4, generator=_gen(7), dtype=torch.float64)
    jac = mm.jacobian(x)
    fx, jv = mm.jvp(x, v)
    assert jac.shape == (3, n, n)
    torch.testing.assert_close(jv, jac @ v, atol=1e-9, rtol=0)
    torch.testing.assert_close(fx, mm(x), atol=ATOL, rtol=0)
    torch.testing.assert_close(mm.jacobian_norm(x), torch.linalg.matrix_norm(jac), atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", ["tanh layer stack", "identity layer", "MLP block", "module"])
def test_linearization_equals_the_jacobian_vector_product(kind):
    # the held-orbit path (map_measures(hold_tol=...)) advances tangents with linearization(x); it must be
    # J(x)·v as jvp gives it, for k = 1 and 2 columns, on every map with its own closed form and the default
    from stabilityscope.dynamics.module_maps import ProbedModuleMap

    g = torch.Generator().manual_seed(31)
    n = 24
    if kind == "tanh layer stack":
        F = LayerMap(torch.randn(3, n, n, generator=g, dtype=torch.float64) / math.sqrt(n),
                     torch.randn(3, n, generator=g, dtype=torch.float64), "tanh")
    elif kind == "identity layer":
        F = LayerMap(torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n), None, "identity")
    else:
        torch.manual_seed(32)
        mlp = nn.Sequential(nn.Linear(n, 4 * n), nn.GELU(), nn.Linear(4 * n, n)).double().eval()
        for p in mlp.parameters():
            p.requires_grad_(False)
        F = ProbedModuleMap(mlp, (n,)) if kind == "MLP block" else ModuleMap(mlp, (n,))
    x = torch.randn(5, n, generator=g, dtype=torch.float64)
    lin = F.linearization(x)
    for k in (1, 2):
        v = torch.randn(5, n, k, generator=g, dtype=torch.float64)
        torch.testing.assert_close(lin(v), F.jvp(x, v)[1], rtol=1e-12, atol=1e-12)
