"""Lyapunov exponents, M1–M5 and attractor classes against analytic ground truths (docs/science/iterated-maps.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stabilityscope.dynamics import lyapunov
from stabilityscope.dynamics.lyapunov import (
    ATTRACTORS,
    STOP_REASONS,
    _cholesky_qr2,
    classify_attractor,
    largest_lyapunov,
    lyapunov_spectrum,
    map_measures,
)
from stabilityscope.dynamics.maps import LayerMap
from stabilityscope.errors import ConfigError

pytestmark = [pytest.mark.filterwarnings("ignore:.*torch.jit.script:FutureWarning"),
              pytest.mark.usefixtures("one_thread")]



# tolerances, in one place
EXACT = 1e-3  # exponents of linear maps (orthogonal, a·Q, diagonal): exact up to rounding/transient
S_RTOL = 0.03  # M1 against the measured values of docs/science/iterated-maps.md ("a few %")
S_CHI_RTOL = 0.02  # M1 against sqrt(χ) of mean-field theory
CROSS = 0.015  # λ_max by QR vs Benettin vs M3 (finite-T fluctuation at N = 400, τ ≈ 100-400)
QR_AGREE = 1e-10  # CholeskyQR2 vs Householder exponents in float64 (rounding only)

# docs/science/iterated-maps.md consistency check (tanh, J0 = 0, T = 500): J → (measured s, sqrt(χ))
S_REFERENCE = {0.5: (0.500, 0.5), 0.9: (0.899, 0.9), 1.5: (1.078, math.sqrt(1.1393)), 2.0: (1.152, math.sqrt(1.3627))}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, n, generator=_gen(seed), dtype=torch.float64))[0]


def _random_tanh(n: int, j: float, seed: int, dtype=torch.float64) -> LayerMap:
    return LayerMap(torch.randn(n, n, generator=_gen(seed), dtype=dtype) * j / math.sqrt(n))


def _name(code: torch.Tensor) -> list[str]:
    return [ATTRACTORS[int(c)] for c in code.flatten()]


@pytest.mark.parametrize("a", [1.0, 0.5, 1.5])
def test_scaled_orthogonal_map_has_all_exponents_ln_a(a):
    """x → a·Q x (identity activation): every exponent is ln a (0 for a pure rotation)."""
    f = LayerMap(a * _orthogonal(8, 0), activation="identity")
    x0 = torch.randn(3, 8, generator=_gen(1), dtype=torch.float64)
    steps = 200 if a == 1.0 else 30  # keep |x| inside the 1e-10 … 1e10 early-stop band
    spec = lyapunov_spectrum(f, x0, steps=steps)
    assert spec.exponents.shape == (3, 8)
    torch.testing.assert_close(spec.exponents, torch.full((3, 8), math.log(a), dtype=torch.float64), atol=EXACT, rtol=0)
    assert STOP_REASONS[int(spec.stop_reason)] == "completed"
    torch.testing.assert_close(largest_lyapunov(f, x0, steps=steps), torch.full((3,), math.log(a), dtype=torch.float64),
                               atol=EXACT, rtol=0)
    m = map_measures(f, x0, steps=steps)
    for value in (m.lyapunov_max, m.jacobian_product_exponent, m.two_trajectory_exponent):
        torch.testing.assert_close(value, torch.full((3,), math.log(a), dtype=torch.float64), atol=EXACT, rtol=0)


def test_early_stop_keeps_exact_exponents():
    """Past the norm caps the run stops, records the step, and still averages the right window."""
    x0 = torch.randn(2, 8, generator=_gen(1), dtype=torch.float64)
    for a, reason, attractor in ((1.5, "diverged", "divergent"), (0.5, "collapsed", "fixed_point")):
        f = LayerMap(a * _orthogonal(8, 0), activation="identity")
        m = map_measures(f, x0, steps=500)
        assert STOP_REASONS[int(m.stop_reason)] == reason and int(m.steps_run) < 80
        torch.testing.assert_close(m.lyapunov_max, torch.full((2,), math.log(a), dtype=torch.float64), atol=EXACT,
                                   rtol=0)
        torch.testing.assert_close(m.jacobian_product_exponent, m.lyapunov_max, atol=EXACT, rtol=0)
        assert _name(m.attractor) == [attractor] * 2
        spec = lyapunov_spectrum(f, x0, k=3, steps=500)
        torch.testing.assert_close(spec.exponents, torch.full((2, 3), math.log(a), dtype=torch.float64), atol=EXACT,
                                   rtol=0)


def test_diagonal_map_exponents_are_sorted_log_moduli():
    d = torch.tensor([1.2, -1.1, 0.9, 0.7, -0.5, 0.3], dtype=torch.float64)
    f = LayerMap(torch.diag(d), activation="identity")
    x0 = torch.randn(2, 6, generator=_gen(2), dtype=torch.float64)
    spec = lyapunov_spectrum(f, x0, steps=100)
    expected = d.abs().log().sort(descending=True).values.expand(2, 6)
    torch.testing.assert_close(spec.exponents, expected, atol=EXACT, rtol=0)
    # the trace converges to the final estimate and is NaN inside the transient
    torch.testing.assert_close(spec.trace[:, -1], spec.exponents, atol=1e-12, rtol=0)
    assert torch.isnan(spec.trace[:, spec.trace_steps <= spec.transient]).all()
    # top-k equals the head of the full spectrum; M2 (2 passes) finds the dominant |d|
    top2 = lyapunov_spectrum(f, x0, k=2, steps=100, reorthonormalize_every=3)
    torch.testing.assert_close(top2.exponents, expected[:, :2], atol=EXACT, rtol=0)
    m = map_measures(f, x0, steps=100, m2_passes=2)
    torch.testing.assert_close(m.jacobian_product_exponent, torch.full((2,), math.log(1.2), dtype=torch.float64),
                               atol=EXACT, rtol=0)


def test_s_squared_matches_mean_field_chi():
    """M1 on random tanh layers, N = 1000, J0 = 0, T = 500: s ≈ docs/science/iterated-maps.md values, s² ≈ χ."""
    n, js = 1000, list(S_REFERENCE)
    w = torch.stack([torch.randn(n, n, generator=_gen(10 + i)) * j / math.sqrt(n) for i, j in enumerate(js)])
    x0 = torch.randn(4, n, generator=_gen(20))
    m = map_measures(LayerMap(w), x0, steps=500, m2_passes=0)
    measured = torch.tensor([S_REFERENCE[j][0] for j in js], dtype=torch.float64)
    sqrt_chi = torch.tensor([S_REFERENCE[j][1] for j in js], dtype=torch.float64)
    torch.testing.assert_close(m.s_mean, measured, rtol=S_RTOL, atol=0)
    torch.testing.assert_close(m.s_mean, sqrt_chi, rtol=S_CHI_RTOL, atol=0)
    assert m.s_std.shape == (4,)
    # ordered maps collapse to 0 early (cheap tracking); chaotic ones run all T steps
    assert [STOP_REASONS[int(r)] for r in m.stop_reason] == ["collapsed", "collapsed", "completed", "completed"]
    assert _name(m.attractor) == ["fixed_point"] * 8 + ["chaotic"] * 8
    # M4: twin orbits merge in the ordered phase and separate to O(sqrt(N)) in the chaotic one
    assert (m.asymptotic_distance[:2] < 1e-6).all() and (m.asymptotic_distance[2:] > 10).all()


def test_largest_exponent_qr_benettin_and_two_trajectory_agree_in_chaos():
    """J = 2 tanh: λ_max by QR, by Benettin, and by M3 measured before saturation agree.

    M3 is compared before saturation: the twin orbit starts on the attractor (after 200 steps),
    δ = 1e-10 per entry in float64, and T = 100 keeps d_t ≤ 1e-1 ≪ sqrt(2N) (saturation). The
    full-length M3 (T = 500) saturates and must underestimate λ_max.
    """
    f = _random_tanh(400, 2.0, seed=1)
    x0 = torch.randn(2, 400, generator=_gen(2), dtype=torch.float64)
    qr = lyapunov_spectrum(f, x0, k=3, steps=600, transient=200).exponents[:, 0]
    benettin = largest_lyapunov(f, x0, steps=600, transient=200)
    torch.testing.assert_close(qr, benettin, atol=CROSS / 3, rtol=0)
    assert (qr > 0.1).all()
    m = map_measures(f, x0, steps=500)
    torch.testing.assert_close(m.lyapunov_max, qr, atol=CROSS, rtol=0)
    torch.testing.assert_close(m.jacobian_product_exponent, qr, atol=CROSS, rtol=0)
    assert (m.two_trajectory_exponent < qr / 2).all()  # saturated

    on_attractor = x0
    for _ in range(200):
        on_attractor = f(on_attractor)
    early = map_measures(f, on_attractor, steps=100, perturbation=1e-10, lyapunov=False)
    assert (early.separation[:, -1] < 0.1).all()
    torch.testing.assert_close(early.two_trajectory_exponent, qr, atol=CROSS, rtol=0)


@pytest.mark.parametrize("case, attractor, period", [
    ("contraction", "fixed_point", 1),
    ("cycle3", "periodic", 3),
    ("cycle3_flip", "periodic", 6),
    ("irrational_rotation", "quasi_periodic", 0),
    ("chaos_j3", "chaotic", 0),
    ("expansion", "divergent", 0),
])
def test_attractor_classification(case, attractor, period):
    g = _gen(5)
    if case == "contraction":
        f, n = LayerMap(0.6 * _orthogonal(10, 3), torch.randn(10, generator=g, dtype=torch.float64), "tanh"), 10
    elif case.startswith("cycle3"):  # cyclic permutation (P³ = I); one sign flip gives P³ = −I
        p = torch.roll(torch.eye(3, dtype=torch.float64), 1, 0)
        if case.endswith("flip"):
            p[0] = -p[0]
        f, n = LayerMap(p, activation="identity"), 3
    elif case == "irrational_rotation":  # rotation by 2π·(golden ratio): a torus, no finite period
        th = math.pi * (math.sqrt(5) - 1)
        r = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
        f, n = LayerMap(r, activation="identity"), 2
    elif case == "chaos_j3":
        f, n = _random_tanh(200, 3.0, seed=6), 200
    else:
        f, n = LayerMap(1.3 * _orthogonal(6, 4), activation="identity"), 6
    x0 = torch.randn(3, n, generator=g, dtype=torch.float64).abs()
    m = map_measures(f, x0, steps=500)
    assert _name(m.attractor) == [attractor] * 3
    assert m.period.tolist() == [period] * 3
    if attractor == "periodic":  # M5: a period-L cycle returns L dots
        assert len(torch.unique(m.poincare[0, :, 0].round(decimals=8))) == period


def test_classify_attractor_contracting_onto_unresolved_cycle():
    """λ_max < 0 while the tail still moves: the period is read off the decaying mismatch."""
    t = torch.arange(64, dtype=torch.float64)
    # a period-2 cycle (±1) approached at rate e^{-0.05 t} with a rotating transient on top
    base = torch.stack([(-1.0) ** t, torch.zeros(64)], -1)
    transient = 0.5 * torch.exp(-0.05 * t)[:, None] * torch.stack([torch.cos(2.1 * t), torch.sin(2.1 * t)], -1)
    tail = (base + transient)[None]  # (B=1, n=64, N=2)
    codes, periods = classify_attractor(tail, torch.tensor([-0.05], dtype=torch.float64))
    assert _name(codes) == ["periodic"] and periods.tolist() == [2]
    codes, periods = classify_attractor(tail, torch.tensor([0.2], dtype=torch.float64))
    assert _name(codes) == ["chaotic"] and periods.tolist() == [0]


def _mean_coupling_tanh(n: int, j0: float, j: float, seed: int, dtype=torch.float64) -> LayerMap:
    """x → tanh(W x), W = (J0/N)·11ᵀ + (J/√N)·G: the mean/variance split
    (docs/science/weight-structure.md)."""
    g = torch.randn(n, n, generator=_gen(seed), dtype=torch.float64)
    w = torch.full((n, n), j0 / n, dtype=torch.float64) + g * j / math.sqrt(n)
    return LayerMap(w.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sign_flipping_collapse_is_a_fixed_point(dtype):
    """x → tanh(W x), no bias, W's largest eigenvalue μ real and negative with |μ| < 1 (the trained hidden
    layer of the canonical run): every orbit decays to 0 while flipping sign. That is the fixed point 0,
    not a period-2 cycle, and λ_max = ln|μ| since ∂F(0) = W."""
    n = 100
    f = _mean_coupling_tanh(n, -0.75, 0.3, seed=11, dtype=dtype)
    eig = torch.linalg.eigvals(f.weight.double())
    mu = eig[eig.abs().argmax()]
    assert abs(mu.imag) < 1e-12 and -1 < mu.real < -0.5  # the rank-one outlier ≈ J0 sits outside the bulk (radius J)
    x0 = torch.rand(4, n, generator=_gen(12), dtype=torch.float64).to(dtype)  # non-negative, like pixels
    m = map_measures(f, x0, steps=500)
    assert STOP_REASONS[int(m.stop_reason)] == "collapsed"
    assert _name(m.attractor) == ["fixed_point"] * 4 and m.period.tolist() == [1] * 4
    torch.testing.assert_close(m.lyapunov_max, torch.full((4,), math.log(-mu.real), dtype=torch.float64),
                               atol=EXACT, rtol=0)
    # the approach flips sign every step: M5's X_t and X_{t+1} have opposite signs throughout the window
    pts = m.poincare[~m.poincare.isnan().any(-1)]
    assert len(pts) > 20 and (pts[:, 0] * pts[:, 1] < 0).all()


def test_mean_coupling_below_minus_one_is_a_period_2_cycle():
    """J0/J < −1 (docs/science/mean-field.md): the mean flips sign every step, m_{t+1} ≈ tanh(J0·m_t), on a stable
    period-2 cycle {x_a, x_b}. Its exponent is ½ ln |λ_max(∂F(x_b)·∂F(x_a))|, computed here from the two
    cycle points independently of map_measures; M5 shows two dots."""
    n = 100
    f = _mean_coupling_tanh(n, -2.0, 0.5, seed=13)
    x0 = torch.rand(3, n, generator=_gen(14), dtype=torch.float64)
    m = map_measures(f, x0, steps=500)
    assert STOP_REASONS[int(m.stop_reason)] == "completed"
    assert _name(m.attractor) == ["periodic"] * 3 and m.period.tolist() == [2] * 3
    x_a = m.orbit_tail[:, -1]  # (B, N)
    x_b = f(x_a)
    torch.testing.assert_close(f(x_b), x_a, atol=1e-12, rtol=0)
    assert ((x_a.mean(-1) * x_b.mean(-1)) < 0).all() and (x_a - x_b).norm(dim=-1).min() > 1
    cycle = torch.linalg.eigvals(f.jacobian(x_b) @ f.jacobian(x_a)).abs().max(-1).values  # (B,)
    torch.testing.assert_close(m.lyapunov_max, 0.5 * cycle.log(), atol=EXACT, rtol=0)
    for b in range(3):
        assert len(torch.unique(m.poincare[b, :, 0].round(decimals=8))) == 2


@pytest.mark.parametrize("start_norm", [1.0, 3e-5, 1e-8])
def test_classify_attractor_sign_flipping_decay_at_every_scale(start_norm):
    """x_t = x* + (−0.75)^t·v, whatever the size of v relative to the tolerances (the canonical run's tails
    start near 1e-5 to 1e-4 and end at the 1e-10 collapse norm), is a fixed point; a period-2 cycle with the same
    sign-flipping transient on top stays a period-2 cycle. Also with the tail NaN-padded (an early stop)."""
    n_tail, n = 64, 784
    t = torch.arange(n_tail, dtype=torch.float64)[:, None]
    v = torch.randn(n, generator=_gen(15), dtype=torch.float64)
    v = v / v.norm() * start_norm
    decay = (-0.75) ** t * v  # (n_tail, N)
    lam = torch.tensor([math.log(0.75)] * 3, dtype=torch.float64)
    x_star = torch.rand(n, generator=_gen(16), dtype=torch.float64)
    cycle = (-1.0) ** t * x_star
    padded = decay.clone()
    padded[:30] = float("nan")
    tails = torch.stack([decay, x_star + decay, padded])  # (B=3, n_tail, N)
    codes, periods = classify_attractor(tails, lam)
    assert _name(codes) == ["fixed_point"] * 3 and periods.tolist() == [1] * 3
    codes, periods = classify_attractor((cycle + decay)[None], lam[:1])
    assert _name(codes) == ["periodic"] and periods.tolist() == [2]


def test_converge_tol_extrapolates_exactly():
    """A map with a non-zero fixed point (bias) stops early and reproduces the full-T averages."""
    g = _gen(3)
    a = torch.randn(60, 60, generator=g, dtype=torch.float64)
    s = (a + a.T) / 2
    s = s / torch.linalg.eigvalsh(s).abs().max()  # symmetric: real dominant eigenvalue at x*
    f = LayerMap(0.8 * s, torch.randn(60, generator=g, dtype=torch.float64) * 0.5)
    x0 = torch.randn(4, 60, generator=g, dtype=torch.float64)
    full = map_measures(f, x0, steps=500)
    fast = map_measures(f, x0, steps=500, converge_tol=1e-6)
    assert STOP_REASONS[int(fast.stop_reason)] == "converged" and int(fast.steps_run) < 500
    for name in ("s", "jacobian_product_exponent", "asymptotic_distance", "lyapunov_max", "poincare", "attractor"):
        torch.testing.assert_close(getattr(fast, name), getattr(full, name), atol=1e-6, rtol=0, equal_nan=True)
    assert _name(fast.attractor) == ["fixed_point"] * 4



class _Counting(LayerMap):
    """A LayerMap that counts its full steps and its linearisations."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.full_steps = self.linearizations = 0

    def tracked_step(self, x, x_other, v):
        self.full_steps += 1
        return super().tracked_step(x, x_other, v)

    def linearization(self, x):
        self.linearizations += 1
        return super().linearization(x)


def _rotating_contraction(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b): a contraction whose dominant eigenvalues are a complex pair 0.8·e^{±0.9i} of a non-normal block,
    so the tangent growth at the fixed point oscillates step after step and converge_tol never stops it."""
    g = _gen(seed)
    q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    d = torch.diag(0.5 * torch.rand(n, generator=g, dtype=torch.float64))
    # a non-normal block (a rotation would keep |J v| = 0.8 exactly): eigenvalues 0.8·e^{±0.9i}, yet |J v|/|v|
    # swings between 0.57 and 1.74 times 0.8 as v turns (the singular values of the block)
    d[:2, :2] = 0.8 * torch.tensor([[math.cos(0.9), -2 * math.sin(0.9)], [math.sin(0.9) / 2, math.cos(0.9)]])
    return q @ d @ q.T, torch.randn(n, generator=g, dtype=torch.float64) * 0.5


def test_hold_tol_holds_settled_orbits_and_iterates_only_the_tangent():
    # a fixed point with a rotating dominant pair: λ_max = ln 0.8 exactly (identity activation: J = W)
    w, b = _rotating_contraction(60, 21)
    x0 = torch.randn(4, 60, generator=_gen(22), dtype=torch.float64)
    full = map_measures(LayerMap(w, b, "identity"), x0, steps=400)
    f = _Counting(w, b, "identity")
    held = map_measures(f, x0, steps=400, hold_tol=1e-9)
    assert f.linearizations == 1 and f.full_steps < 150  # held after the orbits settled, long before T
    assert int(held.steps_run) == 400 and STOP_REASONS[int(held.stop_reason)] == "completed"
    for name in ("s", "jacobian_product_exponent", "asymptotic_distance", "lyapunov_max", "poincare"):
        torch.testing.assert_close(getattr(held, name), getattr(full, name), atol=1e-8, rtol=0, equal_nan=True)
    assert (held.attractor == full.attractor).all() and _name(held.attractor) == ["fixed_point"] * 4
    # the Benettin estimate over [T/2, T) of a rotating pair: ln 0.8 up to O(1/τ)
    assert float(held.lyapunov_max.mean()) == pytest.approx(math.log(0.8), abs=0.02)
    # converge_tol alone never stops this map: the tangent growth oscillates
    assert int(map_measures(LayerMap(w, b, "identity"), x0, steps=400, converge_tol=1e-6).steps_run) == 400


def test_hold_tol_leaves_a_chaotic_map_untouched():
    g = _gen(23)
    f = _Counting(torch.randn(80, 80, generator=g, dtype=torch.float64) * 1.5 / math.sqrt(80))
    x0 = torch.randn(3, 80, generator=g, dtype=torch.float64)
    full = map_measures(LayerMap(f.weight), x0, steps=300)
    held = map_measures(f, x0, steps=300, hold_tol=1e-5)
    assert f.linearizations == 0 and f.full_steps == 300
    for name in ("lyapunov_max", "jacobian_product_exponent", "two_trajectory_exponent", "asymptotic_distance"):
        assert torch.equal(getattr(held, name), getattr(full, name))


def test_a_held_stack_gives_each_map_its_own_numbers():
    # two settling maps and one chaotic: the stack is never all held, yet each settling map is held as alone
    w1, b1 = _rotating_contraction(60, 24)
    w2, b2 = _rotating_contraction(60, 25)
    g = _gen(26)
    w3 = torch.randn(60, 60, generator=g, dtype=torch.float64) * 1.5 / math.sqrt(60)
    b3 = torch.zeros(60, dtype=torch.float64)
    x0 = torch.randn(3, 60, generator=g, dtype=torch.float64)
    stack = map_measures(LayerMap([w1, w2, w3], [b1, b2, b3], "tanh"), x0, steps=300, hold_tol=1e-9)
    for i, (w, b) in enumerate([(w1, b1), (w2, b2), (w3, b3)]):
        one = map_measures(LayerMap(w, b, "tanh"), x0, steps=300, hold_tol=1e-9)
        tol = 1e-8 if i < 2 else 0.05  # the chaotic map amplifies bmm-vs-mm rounding
        torch.testing.assert_close(stack.lyapunov_max[i], one.lyapunov_max, atol=tol, rtol=0)
        torch.testing.assert_close(stack.asymptotic_distance[i], one.asymptotic_distance,
                                   atol=1e-8 if i < 2 else math.inf, rtol=0)

def test_stacked_maps_equal_one_at_a_time():
    """L maps in one call (ordered/collapsing, chaotic, biased) give each map's own results."""
    g = _gen(7)
    n = 80
    ws = [torch.randn(n, n, generator=g, dtype=torch.float64) * j / math.sqrt(n) for j in (0.5, 2.0, 1.2)]
    bs = [torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64),
          torch.randn(n, generator=g, dtype=torch.float64) * 0.2]
    x0 = torch.randn(3, n, generator=g, dtype=torch.float64)
    stack = LayerMap(ws, bs)
    ms = map_measures(stack, x0, steps=300, m2_passes=2)
    ss = lyapunov_spectrum(stack, x0, k=4, steps=300)
    assert ms.s.shape == (3, 3) and ms.poincare.shape[:2] == (3, 3) and ss.exponents.shape == (3, 3, 4)
    assert STOP_REASONS[int(ms.stop_reason[0])] == "collapsed"
    for l in range(3):
        one = LayerMap(ws[l], bs[l])
        m = map_measures(one, x0, steps=300, m2_passes=2)
        assert int(ms.steps_run[l]) == int(m.steps_run)
        # the chaotic map amplifies bmm-vs-mm rounding differences, so exponents get a tolerance
        for name in ("s", "jacobian_product_exponent", "two_trajectory_exponent", "lyapunov_max"):
            torch.testing.assert_close(getattr(ms, name)[l], getattr(m, name), atol=1e-2, rtol=0)
        torch.testing.assert_close(ms.attractor[l], m.attractor)
        torch.testing.assert_close(ss.exponents[l], lyapunov_spectrum(one, x0, k=4, steps=300).exponents,
                                   atol=1e-2, rtol=0)


def test_poincare_and_shapes():
    """(..., B, N) start states with a single map: every leading index is its own orbit family."""
    f = LayerMap(0.5 * _orthogonal(5, 8), activation="identity")  # collapses at t ≈ 35
    m = map_measures(f, torch.randn(2, 3, 5, generator=_gen(9), dtype=torch.float64), steps=500)
    n_run = m.steps_run.tolist()
    assert m.s.shape == (2, 3) and m.steps_run.shape == (2,) and n_run[0] != n_run[1]
    assert m.separation.shape == (2, 3, 501)
    assert m.poincare.shape == (2, 3, max(n - n // 2 for n in n_run), 2)
    for i, n in enumerate(n_run):  # the shorter window is NaN-padded at the end
        pts = m.poincare[i, :, : n - n // 2]
        assert not pts.isnan().any() and m.poincare[i, :, n - n // 2:].isnan().all()
        # (X_t, X_{t+1}) pairs chain: the second coordinate is the next first coordinate
        torch.testing.assert_close(pts[:, 1:, 0], pts[:, :-1, 1])
    assert m.attractor_names.shape == (2, 3)


def _spectra(f: LayerMap, x0: torch.Tensor, **kw):
    """lyapunov_spectrum by CholeskyQR2 and by Householder QR, same arguments (QR every step unless given)."""
    kw.setdefault("reorthonormalize_every", 1)
    return (lyapunov_spectrum(f, x0, qr_method="cholesky", **kw),
            lyapunov_spectrum(f, x0, qr_method="householder", **kw))


def _assert_same_spectrum(chol, house, atol=QR_AGREE):
    torch.testing.assert_close(chol.exponents, house.exponents, atol=atol, rtol=0, equal_nan=True)
    torch.testing.assert_close(chol.trace, house.trace, atol=atol, rtol=0, equal_nan=True)
    assert torch.equal(chol.steps_run, house.steps_run) and torch.equal(chol.stop_reason, house.stop_reason)


def test_cholesky_qr2_factorises_and_flags_singular_input():
    """CholeskyQR2 on one batch: a well-conditioned element is factorised to rounding (orthonormal
    Q, positive R diagonal equal to Householder's), a rank-deficient one is flagged not ok."""
    v = torch.randn(2, 50, 20, generator=_gen(0), dtype=torch.float64)
    v[1, :, -1] = v[1, :, 0] + v[1, :, 1]  # exact rank deficiency
    q, log_r, ok = _cholesky_qr2(v)
    assert ok.tolist() == [True, False]
    torch.testing.assert_close(q[0].mT @ q[0], torch.eye(20, dtype=torch.float64), atol=1e-13, rtol=0)
    q_h, r_h = torch.linalg.qr(v[0])
    sign = torch.sign(r_h.diagonal())
    torch.testing.assert_close(log_r[0], r_h.diagonal().abs().log(), atol=1e-12, rtol=0)
    torch.testing.assert_close(q[0], q_h * sign, atol=1e-12, rtol=0)
    # q R reproduces v: R from Q's projections, with the triangular structure Householder has
    torch.testing.assert_close(q[0] @ (q[0].mT @ v[0]).triu(), v[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("j, k", [(1.5, None), (2.0, None), (2.0, 10)])
def test_cholesky_qr2_matches_householder_on_chaotic_tanh(j, k):
    """Random tanh maps (chaotic for J > 1): every exponent and the trace agree to rounding."""
    f = _random_tanh(100, j, seed=11)
    x0 = torch.randn(2, 100, generator=_gen(12), dtype=torch.float64)
    _, jq = f.jvp(f(f(x0)), _orthogonal(100, 20)[:, :k])
    assert _cholesky_qr2(jq)[2].all()  # CholeskyQR2 itself runs here, no fallback
    chol, house = _spectra(f, x0, k=k, steps=300)
    assert chol.exponents[:, 0].min() > 0.01  # chaotic
    _assert_same_spectrum(chol, house)
    # qr_method "auto" is Householder on the CPU: bit-identical
    auto = lyapunov_spectrum(f, x0, k=k, steps=300, reorthonormalize_every=1)
    assert torch.equal(auto.exponents, house.exponents)


@pytest.mark.parametrize("case", ["orthogonal", "scaled_0.5", "scaled_1.5", "diagonal"])
def test_cholesky_qr2_analytic_exponents(case):
    """Orthogonal → 0, a·Q → ln a, diag(d) → sorted ln|d| with CholeskyQR2, as with Householder."""
    x0 = torch.randn(3, 8, generator=_gen(1), dtype=torch.float64)
    if case == "diagonal":
        d = torch.tensor([1.2, -1.1, 0.9, 0.7, -0.5, 0.3, 1.05, -0.8], dtype=torch.float64)
        f, steps = LayerMap(torch.diag(d), activation="identity"), 100
        expected = d.abs().log().sort(descending=True).values
    else:
        a = 1.0 if case == "orthogonal" else float(case.split("_")[1])
        f, steps, expected = LayerMap(a * _orthogonal(8, 0), activation="identity"), 200 if a == 1.0 else 30, \
            torch.full((8,), math.log(a), dtype=torch.float64)
    chol, house = _spectra(f, x0, steps=steps)
    torch.testing.assert_close(chol.exponents, expected.expand(3, 8), atol=EXACT, rtol=0)
    _assert_same_spectrum(chol, house)
    top3, house3 = _spectra(f, x0, k=3, steps=steps, reorthonormalize_every=2)
    _assert_same_spectrum(top3, house3)


@pytest.fixture
def explicit_frames(monkeypatch):
    """Householder frames always formed as Q (no reflector frames), as CholeskyQR2's fallback forms them,
    so that a fallback reproduces the Householder run bit for bit, rounding-floor exponents included."""
    monkeypatch.setattr(lyapunov, "REFLECTOR_FRAME", math.inf)


@pytest.mark.usefixtures("explicit_frames")
def test_cholesky_qr2_falls_back_on_singular_jacobians():
    """ReLU (dead units: J = diag(1[Wx > 0]) W is singular). With k = N every step's J·Q is
    singular, so every step falls back to Householder and the result is Householder's, −inf
    and NaN entries included (a direction mapped exactly to 0 has ln R_ii = −inf). With k below
    the rank, CholeskyQR2 itself runs and agrees to rounding."""
    n = 40
    f = LayerMap(torch.randn(n, n, generator=_gen(13), dtype=torch.float64) * 2 / math.sqrt(n), activation="relu")
    x0 = torch.randn(2, n, generator=_gen(14), dtype=torch.float64)
    chol, house = _spectra(f, x0, steps=100)
    _assert_same_spectrum(chol, house, atol=0)
    assert (house.exponents.isnan() | (house.exponents < -20)).any()  # the singular directions
    _, jq = f.jvp(x0, _orthogonal(n, 15)[:, :5])
    assert _cholesky_qr2(jq)[2].all()  # k = 5 < rank: no fallback needed
    _assert_same_spectrum(*_spectra(f, x0, k=5, steps=100))


@pytest.mark.usefixtures("explicit_frames")
def test_cholesky_qr2_fallback_is_per_map():
    """A stack of a chaotic tanh map and a rank-deficient one (zero rows in W): the healthy map
    keeps CholeskyQR2, the singular one falls back; each matches Householder."""
    n = 30
    w_ok = torch.randn(n, n, generator=_gen(16), dtype=torch.float64) * 2 / math.sqrt(n)
    w_low = torch.randn(n, n, generator=_gen(17), dtype=torch.float64) * 2 / math.sqrt(n)
    w_low[:3] = 0  # rank n − 3: three exponents are −inf/rounding-level
    stack = LayerMap([w_ok, w_low])
    x0 = torch.randn(2, n, generator=_gen(18), dtype=torch.float64)
    _, jq = stack.jvp(x0, _orthogonal(n, 19))
    assert _cholesky_qr2(jq)[2].tolist() == [[True, True], [False, False]]
    chol, house = _spectra(stack, x0, steps=150)
    assert (chol.exponents[0, :, 0] > 0.01).all()
    _assert_same_spectrum(chol, house)
    low = house.exponents[1, :, -3:]
    assert (low.isnan() | (low < -20)).all() and (house.exponents[1, :, :-3] > -20).all()


def test_qr_method_is_validated():
    f = LayerMap(_orthogonal(4, 0), activation="identity")
    with pytest.raises(ValueError, match="qr_method"):
        lyapunov_spectrum(f, torch.randn(1, 4, dtype=torch.float64), steps=10, qr_method="givens")


# ------------------------------------------------------------------- fast paths against the plain loop

LOOP_AGREE = 1e-8  # float64 exponents of the fast paths against the plain per-step numpy loop


def _numpy_loop(w: torch.Tensor, x0: torch.Tensor, q0: torch.Tensor, steps: int, transient: int) -> torch.Tensor:
    """The plain method, independent of the library: J_t = diag(1 − tanh²) W formed explicitly and
    np.linalg.qr of J_t Q every step, float64; x0 (B, N), q0 (B, N, k) → sorted exponents (B, k)."""
    out = []
    for x, q in zip(x0.numpy(), q0.numpy()):
        logsum = np.zeros(q.shape[1])
        for t in range(steps):
            y = np.tanh(w.numpy() @ x)
            q, r = np.linalg.qr(((1 - y * y)[:, None] * w.numpy()) @ q)
            if t >= transient:
                logsum += np.log(np.abs(np.diag(r)))
            x = y
        out.append(np.sort(logsum / (steps - transient))[::-1])
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize("k", [None, 40, 6])
def test_fast_paths_equal_the_plain_loop(k):
    """Reflector frames (k ≥ 2N/3: J·Q by ormqr, no Q formed), explicit frames, QR every step and the
    default "auto" blocks all give the plain loop's exponents to 1e-8 in float64 (tanh, J = 2,
    N = 48: chaotic, λ_1 ≈ 0.1, so 60 steps amplify rounding differences of the orbit only ~e^6)."""
    n, b, steps = 48, 2, 60
    f = _random_tanh(n, 2.0, seed=21)
    x0 = torch.randn(b, n, generator=_gen(22), dtype=torch.float64)
    kk = n if k is None else k
    q0 = torch.linalg.qr(torch.randn(b, n, kk, generator=_gen(0), dtype=torch.float64))[0]  # the library's frame
    ref = _numpy_loop(f.weight, x0, q0, steps, steps // 2)
    assert ref[:, 0].min() > 0.02  # chaotic
    every = lyapunov_spectrum(f, x0, k=k, steps=steps, reorthonormalize_every=1)
    auto = lyapunov_spectrum(f, x0, k=k, steps=steps)
    assert every.qr_steps == steps and auto.qr_steps < steps  # "auto" took longer blocks
    for spec in (every, auto):
        torch.testing.assert_close(spec.exponents, ref, atol=LOOP_AGREE, rtol=0)
        assert (spec.rounding_error <= lyapunov.ROUNDING_TOL).all()


@pytest.mark.parametrize("k", [None, 6])
def test_short_orbit_equals_the_plain_loop(k):
    """The short orbit of the benchmark (60 steps, transient 20), where the start frame is kept as
    reflectors (no orgqr): the plain loop's exponents to 1e-8, by default and with a QR every step."""
    n, b, steps, transient = 48, 2, 60, 20
    f = _random_tanh(n, 2.0, seed=23)
    x0 = torch.randn(b, n, generator=_gen(24), dtype=torch.float64)
    kk = n if k is None else k
    q0 = torch.linalg.qr(torch.randn(b, n, kk, generator=_gen(0), dtype=torch.float64))[0]  # the library's frame
    ref = _numpy_loop(f.weight, x0, q0, steps, transient)
    assert ref[:, 0].min() > 0.02  # chaotic
    for r in ("auto", 1):
        spec = lyapunov_spectrum(f, x0, k=k, steps=steps, transient=transient, reorthonormalize_every=r)
        torch.testing.assert_close(spec.exponents, ref, atol=LOOP_AGREE, rtol=0)


def test_rounding_estimate_covers_the_error_of_long_blocks():
    """Longer blocks lose the weak directions to rounding, and rounding_error says by how much: against
    QR every step, no exponent of a J = 3 tanh map moves by more than the two runs' estimates, and at
    r = 6 (a spread of ~10 per step, far past what "auto" allows) the estimate and the change are large."""
    f = _random_tanh(40, 3.0, seed=27)
    x0 = torch.randn(2, 40, generator=_gen(28), dtype=torch.float64)
    one = lyapunov_spectrum(f, x0, steps=120, reorthonormalize_every=1)
    assert one.rounding_error.shape == (2,) and one.rounding_error.max() < 1e-9
    for r in (2, 3, 6):
        spec = lyapunov_spectrum(f, x0, steps=120, reorthonormalize_every=r, record_every=r)
        change = (spec.exponents - one.exponents).abs().amax(-1)  # (B,) largest over the spectrum
        assert (change <= spec.rounding_error + one.rounding_error).all(), r
    assert change.min() > 1e-2 and spec.rounding_error.min() > change.max()
    auto = lyapunov_spectrum(f, x0, steps=120, record_every=6)
    assert (auto.rounding_error <= lyapunov.ROUNDING_TOL).all()
    assert ((auto.exponents - one.exponents).abs().amax(-1) <= auto.rounding_error + one.rounding_error).all()


def test_auto_keeps_qr_every_step_where_one_step_exceeds_the_budget():
    """float32 full spectrum: one step's estimate (2·sqrt(N)·eps·e^{λ_1 − λ_N}) already exceeds the 1e-4
    budget, so "auto" never lengthens a block and reproduces QR every step bit for bit; the top 4 of the
    same map spread little per step, and "auto" does lengthen their blocks, within the 1e-4 budget."""
    f = _random_tanh(64, 2.0, seed=25, dtype=torch.float32)
    x0 = torch.randn(2, 64, generator=_gen(26))
    auto = lyapunov_spectrum(f, x0, steps=80)
    every = lyapunov_spectrum(f, x0, steps=80, reorthonormalize_every=1, record_every=3)
    assert auto.qr_steps == 80 and torch.equal(auto.exponents, every.exponents)
    assert (auto.rounding_error > lyapunov.ROUNDING_TOL_LOW).all()  # the budget one step already exceeds
    top = lyapunov_spectrum(f, x0, k=4, steps=80)
    assert top.qr_steps < 40 and (top.rounding_error <= lyapunov.ROUNDING_TOL_LOW).all()
    top_every = lyapunov_spectrum(f, x0, k=4, steps=80, reorthonormalize_every=1)
    torch.testing.assert_close(top.exponents, top_every.exponents, atol=lyapunov.ROUNDING_TOL_LOW, rtol=0)


def test_block_options_are_validated():
    f = LayerMap(_orthogonal(4, 0), activation="identity")
    x0 = torch.randn(1, 4, dtype=torch.float64)
    for bad in ("fast", 0, 1.5, True):
        with pytest.raises(ConfigError, match="reorthonormalize_every"):
            lyapunov_spectrum(f, x0, steps=10, reorthonormalize_every=bad)
    with pytest.raises(ConfigError, match="rounding_tol"):
        lyapunov_spectrum(f, x0, steps=10, rounding_tol=0.0)
