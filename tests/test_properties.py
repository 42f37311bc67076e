"""Property-based tests (hypothesis): wide random inputs never raise, and say NaN/inf where they must.

- phase coordinates of random matrices over 40 orders of magnitude, zeros and non-finite entries;
- mean-field order parameters, χ and the phase over wide (J0, J) ranges, tanh and ReLU;
- the edge curve over random grids of 1/J;
- dissection of randomly generated module trees: every record's weight has the record's shape;
- trace reading of random byte truncations: a TraceError within 2 s, never a hang or another error.

The example counts are fixed (``settings``) and printed with ``pytest --hypothesis-show-statistics``.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import stabilityscope as ss
from stabilityscope.errors import TraceError
from stabilityscope.theory.meanfield import PHASES, edge_distance, phase_code
from tests.trace_factory import synthetic_trace

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 12), scale=st.floats(1e-20, 1e20), zero=st.booleans(),
       poison=st.sampled_from([None, "nan", "inf"]), seed=st.integers(0, 2**16))
def test_phase_coordinates_never_raise(n, m, scale, zero, poison, seed):
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    if zero:
        W.zero_()
    if poison:
        W[0, 0] = float(poison)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # J = 0 warns, by design
        J0, J = ss.phase_coordinates(W)
    J0, J = float(J0), float(J)
    if poison == "nan" or (poison == "inf" and n * m > 1):  # inf − inf inside the std
        assert math.isnan(J)
    elif zero and not poison:
        assert J == 0.0 and J0 == 0.0  # documented: J = 0 → coordinates inf/NaN downstream, never an error
    elif not poison:
        assert math.isfinite(J) and J >= 0 and math.isfinite(J0)
        assert J == pytest.approx(float(W.std(unbiased=False)) * math.sqrt(n), rel=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(j0=st.floats(-50, 50), j=st.floats(0, 50), activation=st.sampled_from(["tanh", "relu"]))
def test_order_parameters_and_phases_never_raise(j0, j, activation):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u, q, chi = ss.order_parameters(j0, j, activation)
        d = edge_distance(j0, j, activation)
        code = int(phase_code(j0 / j if j else math.copysign(math.inf, j0) if j0 else math.nan,
                              1 / j if j else math.inf, activation))
    if j == 0:  # documented: no coupling, χ = 0 and the edge distance −inf
        assert float(chi) == 0.0 and float(d) == -math.inf
        return
    assert math.isfinite(float(chi)) and float(chi) >= 0
    assert float(d) == pytest.approx(0.5 * math.log(float(chi))) if float(chi) > 0 else float(d) == -math.inf
    assert code in range(-1, len(PHASES))
    if activation == "tanh":
        # |tanh| ≤ 1 bounds u and q; the quadrature may overshoot by ~1e-9 (seen: q = 1 + 1.5e-9 at J0 = 20, J = 2)
        assert 0 <= float(q) <= 1 + 1e-8 and abs(float(u)) <= 1 + 1e-8
    if float(chi) > 1 + 1e-6:
        assert PHASES[code] == "SG"


@settings(max_examples=40, deadline=None)
@given(inv_j=st.lists(st.floats(1e-3, 10), min_size=1, max_size=12), activation=st.sampled_from(["tanh", "relu"]))
def test_edge_curve_never_raises_and_lies_on_chi_one(inv_j, activation):
    curve = ss.edge_curve(np.array(inv_j), activation)
    x = np.asarray(curve.at_j0_over_j, dtype=float)
    y = np.asarray(curve.inv_j, dtype=float)
    ok = np.isfinite(x)
    assert x.shape == y.shape
    if ok.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chi = ss.meanfield.chi(x[ok] / y[ok], 1 / y[ok], activation)
        np.testing.assert_allclose(chi, 1.0, atol=1e-3)


# ------------------------------------------------------------------------------------------ dissection


def _tree(draw, depth: int, width: int) -> tuple[nn.Module, int]:
    """A random module mapping (B, width) → (B, out); returns it and out."""
    kind = draw(st.sampled_from(["linear", "act", "seq", "residual", "dict"] if depth < 3 else ["linear", "act"]))
    if kind == "linear":
        out = draw(st.integers(1, 9))
        return nn.Linear(width, out, bias=draw(st.booleans())), out
    if kind == "act":
        return draw(st.sampled_from([nn.Tanh, nn.ReLU, nn.GELU, nn.Identity, nn.Sigmoid]))(), width
    if kind == "residual":
        inner, out = _tree(draw, depth + 1, width)
        return (_Residual(inner), width) if out == width else (inner, out)
    parts, w = [], width
    for _ in range(draw(st.integers(1, 4))):
        m, w = _tree(draw, depth + 1, w)
        parts.append(m)
    if kind == "dict":
        return _Dict(nn.ModuleDict({f"m{i}": p for i, p in enumerate(parts)})), w
    return nn.Sequential(*parts), w


class _Residual(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


class _Dict(nn.Module):
    def __init__(self, parts: nn.ModuleDict) -> None:
        super().__init__()
        self.parts = parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for p in self.parts.values():
            x = p(x)
        return x


@st.composite
def module_trees(draw):
    width = draw(st.integers(1, 9))
    model, _ = _tree(draw, 0, width)
    return model, width


@settings(max_examples=80, deadline=None)
@given(tree=module_trees(), with_example=st.booleans())
def test_dissect_handles_random_module_trees(tree, with_example):
    model, width = tree
    example = torch.zeros(1, width) if with_example else None
    records = ss.dissect(model, example_input=example)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len([r for r in records if r.kind == "linear"]) == len(linears)
    for r in records:
        if not r.is_map:
            assert tuple(r.weight(model).shape) == r.shape == (r.fan_out, r.fan_in)
        assert r.square == (r.fan_in == r.fan_out) or r.is_map


# ------------------------------------------------------------------------------------------ truncations


@pytest.fixture(scope="module")
def trace_bytes(tmp_path_factory) -> bytes:
    path = synthetic_trace(tmp_path_factory.mktemp("whole") / "trace.h5", epochs=30)
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_any_truncation_of_a_trace_fails_fast_with_a_trace_error(tmp_path, trace_bytes, fraction):
    path: Path = tmp_path / f"cut_{int(fraction * 1e9)}.h5"
    path.write_bytes(trace_bytes[: int(len(trace_bytes) * fraction)])
    start = time.perf_counter()
    with pytest.raises(TraceError) as info:
        with ss.open_trace(path) as tr:
            tr.metric("test_loss")
    assert time.perf_counter() - start < 2.0 and str(path) in str(info.value)
