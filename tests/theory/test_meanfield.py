"""Mean-field theory (docs/science/mean-field.md): analytic values, independent integrators,
and the spec's sanity table."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate

from stabilityscope.theory import meanfield as mf
from stabilityscope.theory.meanfield import (
    PHASES,
    EdgeCurve,
    ZeroCouplingWarning,
    chi,
    critical_coupling,
    edge_curve,
    edge_distance,
    order_parameters,
    phase_code,
    phase_coordinates,
    phase_label,
    phase_plane,
)

# ---- tolerances, in one place -------------------------------------------------------------
TABLE_ATOL = 1e-3  # the reference table (docs/science/mean-field.md) has 4 digits
AT_ATOL = 5e-3  # AT point 1/J = 0.5 -> J0/J = 1.220
EXACT_RTOL = 1e-8  # closed forms (chi = J^2 in P, ReLU J^2/2, ...)
FIXED_POINT_ATOL = 1e-8  # residual of the fixed-point equations under an independent integrator
QUAD_DOUBLING_RTOL = 1e-7  # change when the node count doubles (J = 50)
COORD_RTOL_J = 0.02  # phase_coordinates on one random N = 1000 matrix
COORD_RTOL_J0 = 0.05  # J0 = mean * N has std J / sqrt(N) ~ 1.6% of J0 = 3 here
CALLABLE_ATOL = 1e-10  # callable tanh vs built-in tanh


_GH = hermegauss(200)


def gh_expect(f, m, s):
    """E f(m + s z) by probabilists' Gauss-Hermite: an independent check for moderate s."""
    z, w = _GH
    return float((w * f(m + s * z)).sum() / math.sqrt(2 * math.pi))


def quad_expect(f, m, s):
    """E f(m + s z) by adaptive scipy quad split at h = 0: independent check for large s."""
    zs = -m / s
    g = lambda z: f(m + s * z) * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    brk = sorted({-12.0, 12.0, *[zs + k / s for k in (-20, -2, 0, 2, 20) if abs(zs + k / s) < 12]})
    return sum(integrate.quad(g, a, b, epsabs=1e-14, epsrel=1e-12, limit=400)[0] for a, b in zip(brk[:-1], brk[1:]))


# ---- 1.1 phase coordinates ------------------------------------------------------------------


def test_phase_coordinates_recovers_statistics():
    n, j0, j = 1000, 3.0, 1.5
    g = torch.Generator().manual_seed(0)
    W = j0 / n + j / math.sqrt(n) * torch.randn(n, n, generator=g)
    J0, J = phase_coordinates(W)
    assert J0.dtype == torch.float64 and J.dtype == torch.float64 and J.device == W.device
    assert float(J) == pytest.approx(j, rel=COORD_RTOL_J)
    assert float(J0) == pytest.approx(j0, rel=COORD_RTOL_J0)


def test_phase_coordinates_stack_and_fan_in():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(5, 3, 64, 32, generator=g)  # (..., out, in): N = 32
    J0, J = phase_coordinates(W)
    assert J0.shape == (5, 3) and J.shape == (5, 3)
    w = W[2, 1].double()
    assert float(J[2, 1]) == pytest.approx(float(w.std(correction=0) * math.sqrt(32)), rel=1e-12)
    assert float(J0[2, 1]) == pytest.approx(float(w.mean() * 32), rel=1e-12)
    # non-square constant layer: J0 = c * fan-in, J = 0
    J0c, Jc = phase_coordinates(torch.full((10, 40), 0.25))
    assert float(J0c) == pytest.approx(10.0) and float(Jc) == 0.0


def test_zero_coupling_warns_and_returns_inf_nan():
    assert issubclass(ZeroCouplingWarning, RuntimeWarning)
    J0, J = phase_coordinates(torch.zeros(10, 10))  # zero-initialised head: no exception
    with pytest.warns(ZeroCouplingWarning, match="zero coupling"):
        x, y = phase_plane(J0, J)
    assert torch.isnan(x) and torch.isinf(y)
    with pytest.warns(ZeroCouplingWarning):
        x, y = phase_plane(np.array([1.0, 0.5]), np.array([0.0, 0.5]))
    assert np.isposinf(x[0]) and np.isposinf(y[0]) and x[1] == 1.0 and y[1] == 2.0
    with pytest.warns(ZeroCouplingWarning):
        x, y = phase_plane(-2.0, 0.0)
    assert np.isneginf(x) and np.isposinf(y)


def test_phase_plane_canonical_start():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, y = phase_plane(0.0, 0.5)
    assert (float(x), float(y)) == (0.0, 2.0)


# ---- 1.2 order parameters --------------------------------------------------------------------


@pytest.mark.parametrize("J, q_ref, chi_ref", [(1.5, 0.3526, 1.1393), (2.0, 0.5304, 1.3627)])
def test_sanity_table(J, q_ref, chi_ref):
    u, q, c = order_parameters(0.0, J)
    assert abs(float(u)) < 1e-12
    assert float(q) == pytest.approx(q_ref, abs=TABLE_ATOL)
    assert float(c) == pytest.approx(chi_ref, abs=TABLE_ATOL)


def test_ordered_side_chi_is_j_squared():
    J = np.array([0.1, 0.5, 0.9, 0.99, 1.0])
    u, q, c = order_parameters(0.0, J)
    np.testing.assert_allclose(u, 0.0, atol=1e-8)
    np.testing.assert_allclose(q, 0.0, atol=1e-8)
    np.testing.assert_allclose(c, J**2, rtol=EXACT_RTOL)


@pytest.mark.parametrize("J0, J", [(0.0, 1.05), (0.0, 2.0), (1.5, 0.6), (2.0, 1.5), (-2.0, 1.5), (3.0, 0.5)])
def test_fixed_point_under_independent_integrator(J0, J):
    """The solution satisfies u = E tanh(h), q = E tanh^2(h) by Gauss-Hermite (J small here);
    J = 1.05 also checks that critical slowing down does not stop convergence (no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u, q, c = (float(v) for v in order_parameters(J0, J))
    m, s = abs(J0) * u, J * math.sqrt(q)  # J0 < 0: even-step point of the period-2 orbit
    assert gh_expect(np.tanh, m, s) == pytest.approx(u, abs=FIXED_POINT_ATOL)
    assert gh_expect(lambda h: np.tanh(h) ** 2, m, s) == pytest.approx(q, abs=FIXED_POINT_ATOL)
    assert J * J * gh_expect(lambda h: np.cosh(h) ** -4, m, s) == pytest.approx(c, rel=1e-7)
    if J0 == 0 and J > 1:
        assert q > 0.01 and c > 1.0


@pytest.mark.parametrize("J0", [0.0, 30.0, 70.0])
def test_large_coupling_quadrature(J0):
    """J = 50: phi'(h)^2 is a spike of width ~1/50 in z. Stable under doubling the nodes, and
    chi agrees with adaptive scipy quad at the solved (u, q)."""
    J = 50.0
    u1, q1, c1 = order_parameters(J0, J, n_panels=12)
    u2, q2, c2 = order_parameters(J0, J, n_panels=24)
    np.testing.assert_allclose([u1, q1, c1], [u2, q2, c2], rtol=QUAD_DOUBLING_RTOL, atol=1e-12)
    m, s = J0 * float(u1), J * math.sqrt(float(q1))
    ref = J * J * quad_expect(lambda h: math.cosh(h) ** -4 if abs(h) < 300 else 0.0, m, s)
    assert float(c1) == pytest.approx(ref, rel=1e-7)
    assert quad_expect(lambda h: math.tanh(h) ** 2, m, s) == pytest.approx(float(q1), abs=FIXED_POINT_ATOL)


def test_broadcasting_and_input_kinds():
    J0 = np.array([[0.0], [0.5], [-1.0]])  # (3, 1)
    J = np.array([0.5, 1.0, 1.5, 2.0])  # (4,)
    u, q, c = order_parameters(J0, J)
    assert u.shape == q.shape == c.shape == (3, 4)
    assert all(a.dtype == np.float64 for a in (u, q, c))
    u0, q0, c0 = order_parameters(0.0, 2.0)
    assert u0.shape == () and isinstance(u0, np.ndarray)
    ct = chi(torch.tensor([0.0, 0.5]), torch.tensor(2.0))
    np.testing.assert_allclose(ct, [c[0, 3], c[1, 3]], rtol=1e-12)
    assert chi(0.0, [[1.5, 2.0]]).shape == (1, 2)


def test_callable_activation_matches_builtin():
    J0, J = np.meshgrid([-1.5, 0.0, 0.7, 2.5], [0.5, 1.3, 3.0])
    ref = order_parameters(J0, J, "tanh")
    for f in (torch.tanh, lambda x: torch.tanh(x)):
        got = order_parameters(J0, J, f)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, atol=CALLABLE_ATOL)


def test_erf_critical_coupling():
    """erf'(0) = 2/sqrt(pi), so chi = (4/pi) J^2 in the paramagnetic phase and J_c = sqrt(pi)/2."""
    assert critical_coupling(torch.erf) == pytest.approx(math.sqrt(math.pi) / 2, rel=1e-6)
    J = np.array([0.3, 0.8])
    np.testing.assert_allclose(chi(0.0, J, torch.erf), 4 / math.pi * J**2, rtol=EXACT_RTOL)


def test_non_odd_callable_period_two():
    """sigmoid with strongly negative J0: the attractor is a 2-cycle; compare its even-step point
    with plain iteration of the map under Gauss-Hermite."""
    J0, J = -20.0, 0.5
    u, q, _ = (float(v) for v in order_parameters(J0, J, torch.sigmoid))
    sig = lambda h: 1 / (1 + np.exp(-h))  # noqa: E731
    uu, qq = 1.0, 1.0
    for _ in range(400):  # even number of steps: the even-step point
        m, s = J0 * uu, J * math.sqrt(qq)
        uu, qq = gh_expect(sig, m, s), gh_expect(lambda h: sig(h) ** 2, m, s)
    assert (u, q) == pytest.approx((uu, qq), abs=1e-7)
    assert phase_label(J0 / J, 1 / J, torch.sigmoid) == "P2"
    assert phase_label(0.0, 1 / J, torch.sigmoid) == "P"  # mean 1/2 is induced, not sustained


# ---- ReLU --------------------------------------------------------------------------------------


def test_relu_closed_forms():
    assert critical_coupling("relu") == pytest.approx(math.sqrt(2.0))
    J = np.array([0.5, 1.0, math.sqrt(2.0), 3.0])
    u, q, c = order_parameters(0.0, J, "relu")
    np.testing.assert_allclose(c, J**2 / 2, rtol=EXACT_RTOL)
    np.testing.assert_allclose(q, 1.0)  # scale normalisation
    np.testing.assert_allclose(u, 1 / math.sqrt(math.pi), rtol=EXACT_RTOL)  # E relu(z)/sqrt(E relu(z)^2)
    assert float(chi(1e6, 1.0, "relu")) == pytest.approx(1.0, rel=1e-6)  # strongly ferro: all units on


@pytest.mark.parametrize("x", [1.0, -1.0, -6.0])
def test_relu_matches_normalised_iteration(x):
    """Closed-form ratio solution vs plain iteration of the full (u, q) map with the generic
    quadrature and autograd derivatives, renormalising q to 1 each step (x = -6: 2-cycle)."""
    J = 2.0
    act = mf._Act("relu", mf._callable_derivs(torch.relu), False)
    j0, j = np.array([x * J]), np.array([J])
    u, q, es = np.ones(1), np.ones(1), []
    for _ in range(600):
        F, _, e = mf._mf_map(act, j0, j, u, q, 12)
        u, q = F[0] / np.sqrt(F[1]), np.ones(1)
        es.append(e[0])
    uc, qc, cc = order_parameters(x * J, J, "relu")
    assert float(uc) == pytest.approx(u[0], abs=1e-8)
    assert float(cc) == pytest.approx(J * J * math.sqrt(es[-1] * es[-2]), rel=1e-7)


def test_relu_edge_curve():
    y = np.array([0.3, 0.5, 1 / math.sqrt(2), 0.9, 1.0, 1.5])
    e = edge_curve(y, "relu")
    assert e.activation == "relu" and e.segment_inv_j.size == 0
    assert e.at_j0_over_j[2] == pytest.approx(0.0, abs=1e-8)  # J0 = 0 -> J = sqrt 2
    assert np.isnan(e.at_j0_over_j[4:]).all()
    ok = np.isfinite(e.at_j0_over_j)
    np.testing.assert_allclose(chi(e.at_j0_over_j[ok] / y[ok], 1 / y[ok], "relu"), 1.0, rtol=1e-8)
    assert np.all(np.diff(e.at_j0_over_j[ok]) > 0)


# ---- 1.3 edge, distance, phases -----------------------------------------------------------------


def test_tanh_edge_curve():
    y = np.array([0.05, 0.25, 0.5, 0.9, 1.0, 2.0])
    e = edge_curve(y)
    assert isinstance(e, EdgeCurve) and e.activation == "tanh"
    assert e.at_j0_over_j[2] == pytest.approx(1.220, abs=AT_ATOL)
    assert np.isnan(e.at_j0_over_j[4:]).all()  # J <= 1: no AT line
    ok = np.isfinite(e.at_j0_over_j)
    np.testing.assert_allclose(chi(e.at_j0_over_j[ok] / y[ok], 1 / y[ok]), 1.0, atol=1e-6)
    np.testing.assert_allclose(e.at_j0_over_j_negative[ok], -e.at_j0_over_j[ok])
    assert np.all(np.diff(e.at_j0_over_j[ok]) < 0)  # AT line bends out as J grows
    np.testing.assert_allclose(e.segment_inv_j, 1.0)
    assert e.segment_j0_over_j.min() == -1.0 and e.segment_j0_over_j.max() == 1.0
    px, py = e.polyline()
    assert px.shape == py.shape


def test_edge_distance():
    d = edge_distance(0.0, np.array([0.5, 1.0, 2.0]))
    assert d[0] == pytest.approx(math.log(0.5), rel=EXACT_RTOL)  # 0.5 ln J^2 = ln J on the ordered side
    assert d[1] == pytest.approx(0.0, abs=1e-8)
    assert d[2] == pytest.approx(0.5 * math.log(1.3627), abs=1e-3) and d[2] > 0


@pytest.mark.parametrize(
    "x, y, label",
    [
        (0.0, 2.0, "P"),  # canonical start J = 0.5
        (0.5, 1.5, "P"),
        (3.0, 2.0, "F"),  # J0 = 1.5 > 1, J = 0.5
        (2.5, 0.5, "F"),  # beyond the AT line (1.22)
        (0.0, 0.5, "SG"),
        (1.0, 0.5, "SG"),  # mixed region below the AT line: chaotic
        (-3.0, 2.0, "P2"),
        (-2.5, 0.5, "P2"),
    ],
)
def test_phase_labels_tanh(x, y, label):
    assert phase_label(x, y) == label


def test_phase_codes_grid_and_relu():
    x, y = np.meshgrid([-3.0, 0.0, 3.0], [0.5, 2.0])
    lab = phase_label(x, y)
    assert lab.shape == (2, 3)
    assert lab.tolist() == [["P2", "SG", "F"], ["P2", "P", "F"]]
    code = phase_code(x, y)
    assert code.dtype == np.int64 and [PHASES[c] for c in code.ravel()] == lab.ravel().tolist()
    relu = phase_label([0.0, 0.0, 1.0, -6.0], [1.0, 0.5, 1.0, 0.5], "relu")
    assert relu.tolist() == ["P", "SG", "F", "P2"]
    assert phase_label(np.nan, 1.0).item() == "?"
