"""Analytic ground truths for the oscillation–diffusion readings (EOC-optimality v1, SCIENCE.md §2.1)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from stabilityscope.dynamics.weight_structure import (
    ONLINE_STEP_KEYS,
    RADIUS_METHODS,
    RADIUS_RTOL,
    WEIGHT_STRUCTURE_KEYS,
    diffusion_exponent,
    displacement_from_init,
    eigen_summary,
    estimate_spectral_radius,
    increment_autocorrelation,
    mean_squared_displacement,
    mean_variance_split,
    online_step_stats,
    oscillation_of_mean,
    symmetric_antisymmetric,
    weight_structure_summary,
)

# Tolerances in one place.
N_BIG = 1000  # matrix size for the random-matrix laws
REL_SA = 0.03  # ||S|| vs ||A|| for i.i.d. W
REL_RADIUS = 0.05  # circular law, finite N
REL_NORM2 = 0.05  # spectral norm ≈ 2J
REL_MSD = 0.10  # random-walk MSD vs τσ²MN
ABS_EXPONENT = 0.1  # random-walk diffusion exponent vs 1
EXACT = 1e-9  # float64 identities


def gaussian(M: int, N: int, J0: float, J: float, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """Entries Normal(J0/N, J²/N), float64: the EOC-training random layer (§1.1)."""
    g = torch.Generator().manual_seed(seed)
    return J0 / N + J / math.sqrt(N) * torch.randn(*batch, M, N, generator=g, dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def iid_w() -> torch.Tensor:
    return gaussian(N_BIG, N_BIG, 0.0, 0.7, seed=0)


@pytest.fixture(scope="module")
def iid_summary(iid_w: torch.Tensor) -> dict[str, torch.Tensor]:
    """One eigendecomposition of the N = 1000 matrix (≈ 0.6 s), shared by the spectral tests."""
    return weight_structure_summary(iid_w)


# ------------------------------------------------------------------ reading 1: mean/variance split


@pytest.mark.parametrize(("M", "J0", "J"), [(N_BIG, 2.0, 0.8), (N_BIG, -1.5, 1.3), (300, 0.5, 0.5)])
def test_split_recovers_j0_j(M: int, J0: float, J: float) -> None:
    W = gaussian(M, N_BIG, J0, J, seed=1)
    s = mean_variance_split(W)
    # J0's estimator has std J·√(N/M)/√N·… ≈ J/√M·√(N)/√N; 5σ is below 0.2 here.
    assert abs(float(s.J0) - J0) < 5 * J / math.sqrt(M)
    assert float(s.J) == pytest.approx(J, rel=0.01)
    mean_part = s.J0 / N_BIG * torch.ones(M, N_BIG, dtype=W.dtype)
    assert float(s.mean_part_norm) == pytest.approx(float(torch.linalg.matrix_norm(mean_part)), rel=EXACT)
    assert float(s.random_part_norm) == pytest.approx(
        float(torch.linalg.matrix_norm(W - mean_part)), rel=EXACT
    )
    assert float(s.random_part_norm) == pytest.approx(float(s.J) * math.sqrt(M), rel=EXACT)
    assert float(s.mean_to_random_ratio) == pytest.approx(
        abs(float(s.J0)) / (float(s.J) * math.sqrt(N_BIG)), rel=EXACT
    )
    assert bool(s.mean_map_oscillates) == (J0 < -1)


def test_mean_map_flips_sign_in_a_real_network() -> None:
    """J0 = −2 with weak disorder: the population mean of x_{t+1} = tanh(W x_t) has period 2,
    ±m* with m* = tanh(2 m*) ≈ 0.9575 (the mean map m ↦ tanh(J0·m))."""
    N = 1000
    W = gaussian(N, N, -2.0, 0.2, seed=2)
    s = mean_variance_split(W)
    assert bool(s.mean_map_oscillates) and float(s.mean_map_multiplier) == pytest.approx(-2.0, abs=0.1)
    x = 0.3 + 0.1 * torch.randn(N, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    means = []
    for _ in range(60):
        x = torch.tanh(W @ x)
        means.append(float(x.mean()))
    tail = torch.tensor(means[-20:])
    assert bool((tail[1:] * tail[:-1] < 0).all())  # flips every step
    m_star = 0.9575
    assert float(tail.abs().mean()) == pytest.approx(m_star, abs=0.03)
    assert not bool(mean_variance_split(gaussian(N, N, -0.5, 0.2, seed=2)).mean_map_oscillates)


def test_zero_matrix_warns_not_raises() -> None:
    with pytest.warns(RuntimeWarning):
        s = mean_variance_split(torch.zeros(5, 7))
    assert float(s.J) == 0 and float(s.J0) == 0 and math.isnan(float(s.mean_to_random_ratio))


# ------------------------------------------------------------------ reading 3: S/A split, spectrum


def test_iid_sym_equals_antisym(iid_w: torch.Tensor) -> None:
    sa = symmetric_antisymmetric(iid_w)
    assert float(sa.antisym_ratio) == pytest.approx(1.0, rel=REL_SA)
    # ||W||² = ||S||² + ||A||² exactly
    total = float(torch.linalg.matrix_norm(iid_w)) ** 2
    assert float(sa.sym_norm) ** 2 + float(sa.antisym_norm) ** 2 == pytest.approx(total, rel=EXACT)


def test_circular_law_radius_and_norm(iid_summary: dict[str, torch.Tensor]) -> None:
    assert float(iid_summary["spectral_radius"]) == pytest.approx(0.7, rel=REL_RADIUS)
    assert float(iid_summary["spectral_norm"]) == pytest.approx(2 * 0.7, rel=REL_NORM2)
    # all but ≈ √(2N/π) ≈ 25 eigenvalues of a real Ginibre matrix are complex
    n_real = N_BIG * (1 - float(iid_summary["complex_fraction"]))
    assert 10 <= n_real <= 45


def test_mean_part_outlier_eigenvalue() -> None:
    """Rank-one mean part with J0 = 3 > J = 1: one real outlier ≈ J0 sets the radius."""
    es = eigen_summary(gaussian(N_BIG, N_BIG, 3.0, 1.0, seed=4), return_eigenvalues=True)
    assert float(es.spectral_radius) == pytest.approx(3.0, rel=REL_RADIUS)
    top = es.eigenvalues[es.eigenvalues.abs().argmax()]
    assert float(top.real) == pytest.approx(3.0, rel=REL_RADIUS) and abs(float(top.imag)) < 1e-8
    second = es.eigenvalues.abs().sort().values[-2]
    assert float(second) == pytest.approx(1.0, rel=REL_RADIUS)  # the bulk is still the unit disc


@pytest.mark.parametrize(("dtype", "rel"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_symmetric_matrix_is_all_relaxation(dtype: torch.dtype, rel: float) -> None:
    """float32 with ``dtype=None`` exercises the √eps(float32) tolerance on complex eigenvalues."""
    G = gaussian(200, 200, 0.0, 1.0, seed=5).to(dtype)
    S = (G + G.mT) / 2
    sa, es = symmetric_antisymmetric(S), eigen_summary(S, dtype=None)
    assert float(sa.antisym_norm) == 0 and float(sa.antisym_ratio) == 0
    assert float(es.complex_fraction) == 0
    assert float(es.spectral_radius) == pytest.approx(float(es.spectral_norm), rel=rel)  # normal matrix


def test_antisymmetric_matrix_is_all_rotation() -> None:
    G = gaussian(200, 200, 0.0, 1.0, seed=6)
    A = (G - G.mT) / 2
    sa, es = symmetric_antisymmetric(A), eigen_summary(A, return_eigenvalues=True)
    assert float(sa.sym_norm) == 0 and math.isinf(float(sa.antisym_ratio))
    assert float(es.eigenvalues.real.abs().max()) < 1e-10 * float(es.spectral_radius)
    assert float(es.complex_fraction) == 1.0  # even N: no zero eigenvalue


def test_rotation_matrices_are_complex() -> None:
    theta = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    c, s = torch.cos(theta), torch.sin(theta)
    R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (3, 2, 2)
    es = eigen_summary(R)
    assert torch.equal(es.complex_fraction, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(es.spectral_radius, torch.ones(3, dtype=torch.float64))
    # a 100-dim rotation: block-diagonal 2×2 rotations in a random orthonormal basis
    g = torch.Generator().manual_seed(7)
    angles = 0.1 + (math.pi - 0.2) * torch.rand(50, generator=g, dtype=torch.float64)
    blocks = torch.block_diag(
        *[
            torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
            for a in angles.tolist()
        ]
    )
    Q, _ = torch.linalg.qr(torch.randn(100, 100, generator=g, dtype=torch.float64))
    es = eigen_summary(Q @ blocks @ Q.mT)
    assert float(es.complex_fraction) == 1.0
    assert float(es.spectral_radius) == pytest.approx(1.0, abs=1e-10)


def test_square_required() -> None:
    with pytest.raises(ValueError, match="square"):
        eigen_summary(torch.randn(3, 4))
    with pytest.raises(ValueError, match="square"):
        symmetric_antisymmetric(torch.randn(3, 4))


# ------------------------------------------------------------------ summary


def test_summary_keys_and_values(iid_w: torch.Tensor, iid_summary: dict[str, torch.Tensor]) -> None:
    s = iid_summary
    assert tuple(s) == WEIGHT_STRUCTURE_KEYS
    assert all(v.shape == () and v.dtype == iid_w.dtype for v in s.values())
    sa = symmetric_antisymmetric(iid_w)
    assert float(s["sym_norm"]) == float(sa.sym_norm) and float(s["antisym_norm"]) == float(sa.antisym_norm)
    assert float(s["spectral_radius"]) == pytest.approx(0.7, rel=REL_RADIUS)
    assert float(s["antisym_ratio"]) == pytest.approx(1.0, rel=REL_SA)
    assert float(s["j"]) == pytest.approx(0.7, rel=0.01)
    assert float(s["mean_map_oscillates"]) == 0.0


def test_summary_non_square_and_zero() -> None:
    W = gaussian(10, 784, 0.0, 0.5, seed=8)
    s = weight_structure_summary(W)
    for key in ("sym_norm", "antisym_norm", "antisym_ratio", "spectral_radius", "complex_fraction"):
        assert math.isnan(float(s[key])), key
    assert float(s["spectral_norm"]) == pytest.approx(float(torch.linalg.svdvals(W)[0]), rel=EXACT)
    z = weight_structure_summary(torch.zeros(6, 6))  # zero-initialised head: NaN/inf, no exception
    assert float(z["j"]) == 0 and float(z["spectral_radius"]) == 0 and float(z["complex_fraction"]) == 0


def test_summary_batched_equals_per_matrix() -> None:
    Ws = gaussian(40, 40, 0.5, 1.2, seed=9, batch=(2, 3))  # (2, 3, 40, 40)
    batched = weight_structure_summary(Ws)
    for a, b in itertools.product(range(2), range(3)):
        single = weight_structure_summary(Ws[a, b])
        for key in WEIGHT_STRUCTURE_KEYS:
            assert batched[key].shape == (2, 3)
            torch.testing.assert_close(
                batched[key][a, b], single[key], rtol=1e-10, atol=1e-12, equal_nan=True
            )


# ------------------------------------------------------------------ reading 2: trajectories


def random_walk(T: int, M: int, N: int, sigma: float, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    W0 = gaussian(M, N, 0.0, 0.5, seed=seed + 100, batch=batch)
    steps = sigma * torch.randn(T - 1, *batch, M, N, generator=g, dtype=torch.float64)
    return torch.cat([W0.unsqueeze(0), W0 + steps.cumsum(0)])  # (T, ..., M, N)


def naive_msd(weights: torch.Tensor, epochs: list[float]) -> dict[float, torch.Tensor]:
    out: dict[float, list[torch.Tensor]] = {}
    for i, j in itertools.combinations(range(len(epochs)), 2):
        out.setdefault(epochs[j] - epochs[i], []).append(((weights[j] - weights[i]) ** 2).sum((-2, -1)))
    return {lag: torch.stack(v).mean(0) for lag, v in out.items()}


def test_random_walk_msd_is_diffusive() -> None:
    T, M, N, sigma = 200, 20, 30, 0.1
    lags, msd = mean_squared_displacement(random_walk(T, M, N, sigma, seed=10))
    assert torch.equal(lags, torch.arange(1, T, dtype=torch.float64))
    expected = lags * sigma**2 * M * N
    fit = lags <= T // 4
    assert torch.allclose(msd[fit], expected[fit], rtol=REL_MSD)
    assert float(diffusion_exponent(lags, msd, max_lag=T // 4)) == pytest.approx(1.0, abs=ABS_EXPONENT)


def test_random_walk_float32_far_from_origin() -> None:
    """Tiny steps on large weights in float32: centring keeps the Gram identity accurate."""
    T, M, N, sigma = 100, 20, 30, 1e-3
    traj = (random_walk(T, M, N, sigma, seed=11) + 10.0).to(torch.float32)
    _, msd = mean_squared_displacement(traj, lags=[1, 5, 20])
    expected = torch.tensor([1, 5, 20], dtype=torch.float64) * sigma**2 * M * N
    assert torch.allclose(msd.double(), expected, rtol=REL_MSD)


def test_j_squared_grows_linearly_on_a_random_walk() -> None:
    """EOC-training's J² ∝ epoch is diffusion: J²(t) − J²(0) ≈ σ²·N·t for a square random walk."""
    T, N, sigma = 200, 100, 0.01
    traj = random_walk(T, N, N, sigma, seed=12)
    J2 = mean_variance_split(traj).J ** 2  # (T,)
    t = torch.arange(T, dtype=torch.float64)
    slope = float(((J2 - J2[0]) * t).sum() / (t * t).sum())
    assert slope == pytest.approx(sigma**2 * N, rel=REL_MSD)


def test_ballistic_path() -> None:
    T = 30
    W0, V = gaussian(8, 9, 0.0, 1.0, seed=13), gaussian(8, 9, 0.0, 0.1, seed=14)
    t = torch.arange(T, dtype=torch.float64).view(T, 1, 1)
    traj = W0 + t * V
    lags, msd = mean_squared_displacement(traj)
    assert torch.allclose(msd, lags**2 * (V**2).sum(), rtol=1e-9)
    assert float(diffusion_exponent(lags, msd)) == pytest.approx(2.0, abs=1e-9)
    assert torch.allclose(displacement_from_init(traj), t.view(T) * torch.linalg.matrix_norm(V), rtol=1e-12)
    assert float(increment_autocorrelation(traj).mean) == pytest.approx(1.0, abs=1e-12)


def test_alternating_path_oscillates() -> None:
    T = 21
    W0, V = gaussian(8, 9, 0.0, 1.0, seed=15), gaussian(8, 9, 0.0, 0.1, seed=16)
    sign = torch.tensor([(-1.0) ** k for k in range(T)], dtype=torch.float64).view(T, 1, 1)
    traj = W0 + sign * V
    ac = increment_autocorrelation(traj)
    assert ac.cosine.shape == (T - 2,)
    assert torch.allclose(ac.cosine, torch.full((T - 2,), -1.0, dtype=torch.float64), atol=1e-12)
    assert float(increment_autocorrelation(traj, lag=2).mean) == pytest.approx(1.0, abs=1e-12)
    _, msd = mean_squared_displacement(traj)
    assert torch.allclose(msd[1::2], torch.zeros_like(msd[1::2]), atol=1e-9)  # even lags return
    assert torch.allclose(msd[0::2], torch.full_like(msd[0::2], 4 * float((V**2).sum())), rtol=1e-9)


def test_gram_msd_equals_naive_loop_irregular_epochs() -> None:
    epochs = [0.0, 1.0, 2.0, 4.0, 5.0, 8.0]
    traj = random_walk(len(epochs), 4, 5, 0.3, seed=17, batch=(3,))  # (T, 3, 4, 5)
    lags, msd = mean_squared_displacement(traj, epochs=epochs)
    naive = naive_msd(traj, epochs)
    assert sorted(naive) == lags.tolist()
    for k, lag in enumerate(lags.tolist()):
        torch.testing.assert_close(msd[..., k], naive[lag], rtol=1e-9, atol=1e-12)
    _, sub = mean_squared_displacement(traj, lags=[3.0, 100.0], epochs=epochs)
    torch.testing.assert_close(sub[..., 0], naive[3.0], rtol=1e-9, atol=1e-12)
    assert bool(torch.isnan(sub[..., 1]).all())  # no pair 100 epochs apart


def test_trajectory_functions_batched_equal_per_matrix() -> None:
    traj = random_walk(12, 6, 7, 0.2, seed=18, batch=(2, 3))  # (T, 2, 3, 6, 7)
    lags, msd = mean_squared_displacement(traj)
    exps = diffusion_exponent(lags, msd)
    disp = displacement_from_init(traj)
    ac = increment_autocorrelation(traj)
    assert msd.shape == (2, 3, 11) and exps.shape == (2, 3) and disp.shape == (12, 2, 3)
    for a, b in itertools.product(range(2), range(3)):
        _, m1 = mean_squared_displacement(traj[:, a, b])
        torch.testing.assert_close(msd[a, b], m1, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(exps[a, b], diffusion_exponent(lags, m1))
        torch.testing.assert_close(disp[:, a, b], displacement_from_init(traj[:, a, b]))
        torch.testing.assert_close(ac.cosine[:, a, b], increment_autocorrelation(traj[:, a, b]).cosine)


def test_online_matches_offline() -> None:
    T = 7
    traj = random_walk(T, 5, 6, 0.2, seed=19, batch=(2,))  # (T, 2, 5, 6)
    disp = displacement_from_init(traj)
    cos = increment_autocorrelation(traj).cosine
    prev, prev_inc = None, None
    for t in range(T):
        stats = online_step_stats(traj[t], prev, traj[0], prev_inc)
        assert tuple(stats) == ONLINE_STEP_KEYS
        torch.testing.assert_close(stats["displacement_from_init"], disp[t])
        if t == 0:
            assert bool(torch.isnan(stats["step_displacement"]).all())
        else:
            torch.testing.assert_close(
                stats["step_displacement"], torch.linalg.matrix_norm(traj[t] - traj[t - 1])
            )
        if t < 2:
            assert bool(torch.isnan(stats["increment_cosine"]).all())
        else:
            torch.testing.assert_close(stats["increment_cosine"], cos[t - 2])
        prev_inc = None if prev is None else traj[t] - prev
        prev = traj[t]


def test_oscillation_of_mean() -> None:
    n_inc = 30
    alternating = torch.tensor([0.1 * (-1) ** k for k in range(n_inc + 1)], dtype=torch.float64).cumsum(0)
    osc = oscillation_of_mean(alternating)
    assert float(osc.sign_change_fraction) == 1.0
    assert float(osc.increment_autocorrelation) == pytest.approx(-(n_inc - 1) / n_inc, abs=0.02)
    monotone = oscillation_of_mean(torch.linspace(0, 1, 20) ** 2)
    assert float(monotone.sign_change_fraction) == 0.0 and float(monotone.increment_autocorrelation) > 0
    walk = torch.randn(4001, 3, generator=torch.Generator().manual_seed(20), dtype=torch.float64).cumsum(0)
    rw = oscillation_of_mean(walk)  # batched over the trailing dim
    assert rw.sign_change_fraction.shape == (3,)
    assert torch.allclose(rw.sign_change_fraction, torch.full((3,), 0.5, dtype=torch.float64), atol=0.05)
    assert bool((rw.increment_autocorrelation.abs() < 0.08).all())


def test_oscillating_mean_from_weights() -> None:
    """J0(t) taken from a weight trajectory whose mean part flips each checkpoint."""
    T, N = 15, 50
    W0 = gaussian(N, N, 0.0, 0.5, seed=21)
    sign = torch.tensor([(-1.0) ** k for k in range(T)], dtype=torch.float64).view(T, 1, 1)
    traj = W0 + sign * (0.8 / N) * torch.ones(N, N, dtype=torch.float64)
    J0 = mean_variance_split(traj).J0
    assert float(oscillation_of_mean(J0).sign_change_fraction) == 1.0


# ---------------------------------------------------------------------------------------------
# The checked filtered spectral radius (estimate_spectral_radius) against exactly known radii
# ---------------------------------------------------------------------------------------------

N_FILTER = 320  # ≥ FILTER_MIN_N, so "auto" tries the filter; small enough for float64 eig in the test
EXACT32 = N_FILTER * torch.finfo(torch.float32).eps  # float32 geev: backward error ≲ N·eps·||W|| (LAPACK)


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]


def _normal_with_eigenvalues(moduli: torch.Tensor, angles: torch.Tensor, seed: int) -> torch.Tensor:
    """Q·blockdiag(r_i R(θ_i))·Qᵀ: a real normal matrix with eigenvalues r_i e^{±iθ_i}, (2n, 2n) float64."""
    n = len(moduli)
    D = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    c, s = moduli * torch.cos(angles), moduli * torch.sin(angles)
    i = torch.arange(n) * 2
    D[i, i], D[i + 1, i + 1], D[i, i + 1], D[i + 1, i] = c, c, -s, s
    Q = _orthogonal(2 * n, seed)
    return Q @ D @ Q.T


def _top_condition(A: torch.Tensor) -> tuple[float, float]:
    """ρ(A) and the condition number 1/|yᴴx| of the eigenvalue that sets it (float64, unit x, y)."""
    lam, X = torch.linalg.eig(A)
    mu, Y = torch.linalg.eig(A.mT)  # left eigenvectors: eigenvectors of Aᵀ at the conjugate eigenvalue
    i = int(lam.abs().argmax())
    j = int((mu - lam[i].conj()).abs().argmin())
    x, y = X[:, i] / X[:, i].norm(), Y[:, j] / Y[:, j].norm()
    return float(lam.abs().max()), 1.0 / float((y.conj() @ x).abs())


def _assert_within_stated_accuracy(A: torch.Tensor, est, rtol: float) -> None:
    """The documented guarantee: a filtered value is within κ(λ)·η·ρ̂ of the top eigenvalue (first order;
    a factor 2 covers the second-order term and float32 rounding), η ≤ rtol; an exact one is geev's."""
    rho, kappa = _top_condition(A)
    got = float(est.radius)
    if int(est.method) == RADIUS_METHODS.index("filtered"):
        eta = float(est.residual)
        assert eta <= rtol
        assert abs(got - rho) <= 2 * kappa * eta * got + 1e-6 * rho
    else:
        assert math.isnan(float(est.residual))
        assert got == pytest.approx(rho, rel=kappa * EXACT32)  # float32 geev of a float64 matrix


@pytest.mark.parametrize("J, seed", [(0.5, 0), (1.0, 1), (1.5, 2), (2.0, 3)])
def test_filtered_radius_of_random_matrices(J: float, seed: int) -> None:
    # Ginibre: the top of the spectrum is crowded near the circle |λ| = J (ARPACK k = 1 was 2.4% off)
    W = gaussian(N_FILTER, N_FILTER, 0.0, J, seed)
    est = estimate_spectral_radius(W)
    assert RADIUS_METHODS[int(est.method)] == "filtered"  # converges here: the fast path is exercised
    _assert_within_stated_accuracy(W, est, RADIUS_RTOL)
    assert float(est.radius) == pytest.approx(float(torch.linalg.eigvals(W).abs().max()), rel=RADIUS_RTOL)


def test_filtered_radius_batched_equals_one_at_a_time() -> None:
    W = gaussian(N_FILTER, N_FILTER, 0.3, 1.2, 7, batch=(3,))
    est = estimate_spectral_radius(W)
    for i in range(3):
        one = estimate_spectral_radius(W[i])
        assert int(one.method) == int(est.method[i])
        assert float(one.radius) == pytest.approx(float(est.radius[i]), rel=1e-6)


def test_filtered_radius_of_a_crowded_normal_spectrum() -> None:
    # 160 complex pairs with moduli in [0.999, 1], one exactly 1: normal, so any accepted θ is within η·θ
    # of an eigenvalue (Bauer–Fike, κ = 1) and the stated accuracy is a bound
    g = torch.Generator().manual_seed(3)
    moduli = 0.999 + 0.001 * torch.rand(N_FILTER // 2, generator=g, dtype=torch.float64)
    moduli[17] = 1.0
    angles = math.pi * torch.rand(N_FILTER // 2, generator=g, dtype=torch.float64)
    est = estimate_spectral_radius(_normal_with_eigenvalues(moduli, angles, 4))
    assert abs(float(est.radius) - 1.0) <= RADIUS_RTOL


def test_filtered_radius_of_rotation_blocks_with_set_radii() -> None:
    # a rotation-block spectrum well below the top pair r = 1.3 at angle 0.7: the filter isolates it
    g = torch.Generator().manual_seed(5)
    moduli = 0.2 + 0.9 * torch.rand(N_FILTER // 2, generator=g, dtype=torch.float64)  # ≤ 1.1
    moduli[0] = 1.3
    angles = math.pi * torch.rand(N_FILTER // 2, generator=g, dtype=torch.float64)
    angles[0] = 0.7
    W = _normal_with_eigenvalues(moduli, angles, 6)
    est = estimate_spectral_radius(W)
    assert RADIUS_METHODS[int(est.method)] == "filtered"
    assert float(est.radius) == pytest.approx(1.3, rel=float(est.residual) + 1e-6)


def test_filtered_radius_of_low_rank_plus_noise() -> None:
    # a trained-like layer: a random bulk (J = 0.5) and a rank-one outlier u vᵀ with eigenvalue vᵀu = 2
    g = torch.Generator().manual_seed(8)
    u = torch.randn(N_FILTER, 1, generator=g, dtype=torch.float64)
    v = 2.0 * u / float(u.T @ u)
    W = gaussian(N_FILTER, N_FILTER, 0.0, 0.5, 9) + u @ v.T
    est = estimate_spectral_radius(W)
    assert RADIUS_METHODS[int(est.method)] == "filtered"
    _assert_within_stated_accuracy(W, est, RADIUS_RTOL)


def test_radius_of_triangular_matrices_is_the_largest_diagonal_entry() -> None:
    # eigenvalues = the diagonal exactly; a random strictly upper part makes them badly conditioned
    g = torch.Generator().manual_seed(10)
    d = 0.8 * (2 * torch.rand(N_FILTER, generator=g, dtype=torch.float64) - 1)
    d[123] = -0.95
    W = torch.diag(d) + torch.triu(torch.randn(N_FILTER, N_FILTER, generator=g, dtype=torch.float64), 1) * 0.02
    est = estimate_spectral_radius(W)
    if RADIUS_METHODS[int(est.method)] == "filtered":
        _assert_within_stated_accuracy(W, est, RADIUS_RTOL)
    else:  # Hessenberg QR on a triangular matrix deflates at once: the diagonal, rounded to float32
        assert float(est.radius) == pytest.approx(0.95, rel=torch.finfo(torch.float32).eps)


def test_radius_falls_back_to_the_full_decomposition_where_the_check_fails() -> None:
    # the cyclic permutation: all N eigenvalues are roots of unity, |λ| = 1, so no power separates them;
    # Ritz values of a non-invariant subspace lie inside the circle with large residuals: fall back
    P = torch.roll(torch.eye(N_FILTER, dtype=torch.float64), 1, dims=0)
    G = gaussian(N_FILTER, N_FILTER, 0.0, 1.0, 11)
    est = estimate_spectral_radius(torch.stack([P, G]))
    assert [RADIUS_METHODS[int(m)] for m in est.method] == ["exact", "filtered"]
    assert float(est.radius[0]) == pytest.approx(1.0, rel=EXACT32)  # normal: κ = 1
    assert math.isnan(float(est.residual[0])) and float(est.residual[1]) <= RADIUS_RTOL


def test_radius_edge_cases() -> None:
    small = gaussian(64, 64, 0.0, 1.0, 12)  # N < FILTER_MIN_N: always the full decomposition
    est = estimate_spectral_radius(small)
    assert RADIUS_METHODS[int(est.method)] == "exact"
    assert float(est.radius) == pytest.approx(float(torch.linalg.eigvals(small).abs().max()), rel=_top_condition(small)[1] * EXACT32)
    W = gaussian(N_FILTER, N_FILTER, 0.0, 1.0, 13, batch=(3,))
    W[1] = 0.0  # a zero matrix: radius 0 (no filter: it has no direction to amplify)
    W[2, 5, 7] = math.nan  # non-finite entries: NaN, never a LAPACK crash
    est = estimate_spectral_radius(W)
    assert float(est.radius[1]) == 0.0 and math.isnan(float(est.radius[2]))
    assert est.radius.dtype == torch.float64 and est.radius.shape == (3,)
    exact = estimate_spectral_radius(W[0], method="exact")
    assert RADIUS_METHODS[int(exact.method)] == "exact"
    assert float(exact.radius) == pytest.approx(float(est.radius[0]), rel=RADIUS_RTOL)
    with pytest.raises(ValueError, match="method"):
        estimate_spectral_radius(W, method="arnoldi")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectral_norm_from_the_gram_matrix_equals_the_largest_singular_value(dtype: torch.dtype) -> None:
    """eigen_summary's σ_max from eigvalsh(WᵀW) is within its stated N·eps/2 of the SVD's (a non-normal W
    with a mean part, so σ_max is well above the spectral radius)."""
    W = gaussian(300, 300, 2.0, 1.0, seed=14)
    es = eigen_summary(W.to(dtype), dtype=None)
    want = float(torch.linalg.svdvals(W)[0])
    assert float(es.spectral_norm) == pytest.approx(want, rel=300 * torch.finfo(dtype).eps / 2)
