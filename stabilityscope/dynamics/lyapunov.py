"""Asymptotic measures and Lyapunov exponents of an iterated map (EOC-optimality, docs/science/iterated-maps.md).

Given F: R^N → R^N (:mod:`stabilityscope.dynamics.maps`) and start states x0 (the original: the first 100
test images), iterate x_{t+1} = F(x_t) for T steps and measure

- M1 ``s``: normalised asymptotic Jacobian norm ||∂F(x_T)||_F / sqrt(N) (edge: s = 1);
- M2 ``jacobian_product_exponent``: (1/τ) ln |λ_max(J_{T-1} ⋯ J_{T/2})| (edge: 0);
- M3 ``two_trajectory_exponent``: (1/t) ln(d_t/d_0) of a perturbed twin orbit (edge: 0);
- M4 ``asymptotic_distance``: mean of d_t over the second half of the orbit (edge: ~0);
- M5 ``poincare``: the return map (X_t, X_{t+1}), X_t = <x_t, m̂> (dots, closed curve or cloud);
- the largest Lyapunov exponent by Benettin's renormalised tangent vector, the top-k Lyapunov
  spectrum by QR re-orthonormalisation (not in the original; both are ours, docs/science/iterated-maps.md), and the
  attractor class: fixed point, period-L cycle, quasi-periodic torus, chaos, divergence.

Everything is batched over start states B and over stacked maps L, and runs on the states' device.

Conventions shared by all estimators (finite-T caveats in each docstring):
    J_t = ∂F(x_t); the chain-rule derivative of F^τ at x_a is J_{a+τ-1} ⋯ J_a.
    Early stop: a map stops once the mean state norm over its B start states exceeds 1e10
    ("diverged") or falls below 1e-10 ("collapsed", e.g. tanh(Wx) contracting to 0 in the ordered
    phase), as in EOC-optimality. Its time averages then use the steps it ran: the window is the
    second half [t_end/2, t_end) of the orbit actually computed (t_end = steps run).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from stabilityscope.dynamics.maps import IteratedMap
from stabilityscope.errors import ConfigError

# "near_identity" is assigned only to residual maps x + f(x) (trunk blocks) by :func:`near_identity`.
ATTRACTORS = ("fixed_point", "periodic", "quasi_periodic", "chaotic", "divergent", "drifting", "near_identity")
STOP_REASONS = ("completed", "diverged", "collapsed", "converged")

DIVERGENCE_NORM = 1e10  # mean state norm above which a map is stopped as diverged (EOC-optimality)
COLLAPSE_NORM = 1e-10  # mean state norm below which a map is stopped as collapsed (EOC-optimality)
LAMBDA_TOL = 1e-2  # |λ_max| below this counts as zero: finite-T Benettin error on a torus is ~1/T
PERIOD_RTOL = 1e-3  # x_{t+L} ≈ x_t means ||x_{t+L} − x_t|| ≤ PERIOD_ATOL + PERIOD_RTOL·||x_t||
# Absolute floor of that test: the collapse norm, below which a state counts as the origin. A larger floor
# (it was 1e-6·sqrt(N) ≈ 3e-5 at N = 784) let an orbit flipping sign on its way to 0, x_t ∝ (−0.75)^t,
# pass as a period-2 cycle while its norm was still 1e5 times the collapse norm: ||x_{t+2} − x_t|| =
# 0.44·||x_t|| fell under the floor a few steps before ||x_{t+1} − x_t|| = 1.75·||x_t|| did.
PERIOD_ATOL = COLLAPSE_NORM
MAX_PERIOD = 32  # longest cycle searched for; the orbit tail holds 2·MAX_PERIOD states
HOLD_CHECK = 8  # map_measures(hold_tol=...): steps between two checks whether a map's orbits have settled
# An orbit "drifts" (escapes slowly; never chaos, never the edge) when along its tail the norm rises at
# >= DRIFT_MONOTONE of the steps, by >= DRIFT_GROWTH overall, at steps that do not shrink (the last step
# >= half the first). A residual map x + f(x) with a bounded branch does this: |x| grows ~linearly and
# its Jacobian I + ∂f tends to the identity, so s → 1 and λ_max → 0 whatever the weights.
DRIFT_MONOTONE = 0.9
DRIFT_GROWTH = 0.05
# A residual map x + f(x) whose steps along the orbit's tail stay below this fraction of the state (and do
# not shrink towards a fixed point) is an Euler step of the flow dx/dt = f(x): s − 1 and λ_max are O(‖∂f‖)
# there by construction (near_identity).
NEAR_IDENTITY_STEP = 0.05
QR_METHODS = ("auto", "cholesky", "householder")  # re-orthonormalisation of lyapunov_spectrum
CHOLESKY_QR_TOL = 0.1  # CholeskyQR2 is accepted when ||R2 − I||_F ≤ this (first pass nearly orthonormal)
R_MAX = 64  # longest stretch between re-orthonormalisations that reorthonormalize_every="auto" picks
ROUNDING_TOL = 1e-8  # "auto"'s default budget for the spectrum's estimated rounding error, float64 ...
ROUNDING_TOL_LOW = 1e-4  # ... and below it (float32: (r + 1)·sqrt(N)·eps is already ~7e-6 at r = 1, N = 784)
REFLECTOR_FRAME = 2 / 3  # a Householder frame with k ≥ this·N stays as reflectors (ormqr, see jvp_reflectors)


@dataclass(frozen=True)
class MapMeasures:
    """M1–M5, λ_max and the attractor class of every orbit; per start state shape (..., B).

    Leading shape (...) is that of the states F returns: () for one map, (L,) for a stack.
    """

    s: Tensor  # M1 ||∂F(x_T)||_F / sqrt(N), (..., B)
    jacobian_product_exponent: Tensor  # M2, (..., B); NaN when lyapunov=False or m2_passes=0
    two_trajectory_exponent: Tensor  # M3 (1/t) ln(d_t/d_0) at the final t, (..., B)
    asymptotic_distance: Tensor  # M4 mean d_t over [t_end/2, t_end), (..., B)
    poincare: Tensor  # M5 (X_t, X_{t+1}) for t in [t_end/2, t_end), (..., B, n_t, 2), NaN-padded
    lyapunov_max: Tensor  # Benettin λ_max over [t_end/2, t_end), (..., B); NaN when lyapunov=False
    attractor: Tensor  # index into ATTRACTORS, (..., B) int64
    period: Tensor  # cycle length (1 fixed point, L ≥ 2 cycle, 0 none/unresolved), (..., B) int64
    separation: Tensor  # d_t for t = 0..T, (..., B, T + 1) (extrapolated/frozen after a stop)
    orbit_tail: Tensor  # last ≤ 2·max_period states of each orbit, (..., B, n_tail, N), NaN-padded in front
    steps_run: Tensor  # steps actually iterated per map, (...) int64
    stop_reason: Tensor  # index into STOP_REASONS per map, (...) int64
    steps: int  # T asked for
    perturbation: float  # std of each entry of δ
    seed: int

    @property
    def s_mean(self) -> Tensor:
        """Mean of M1 over start states, (...)."""
        return self.s.mean(-1)

    @property
    def s_std(self) -> Tensor:
        """Standard deviation of M1 over start states, (...) (0 for a single start state)."""
        return self.s.std(-1, correction=1 if self.s.shape[-1] > 1 else 0)

    @property
    def attractor_names(self) -> np.ndarray:
        """The attractor classes as strings, same shape as ``attractor``."""
        return np.asarray(ATTRACTORS, dtype=object)[self.attractor.cpu().numpy()]


@dataclass(frozen=True)
class LyapunovSpectrum:
    """Top-k Lyapunov exponents and their convergence trace.

    An exponent is −inf when its direction was exactly singular (R_ii = 0 at some step: a dead ReLU
    unit, a rank-deficient W, or a float32 frame whose weakest directions fell below rounding), and
    NaN only where nothing was measured; sorting puts NaN last, never first.
    """

    exponents: Tensor  # (..., B, k), sorted descending, NaN last
    trace: Tensor  # running estimates at trace_steps, (..., B, n_records, k); NaN inside the transient
    trace_steps: Tensor  # (n_records,) step of each record
    steps: int
    transient: int
    steps_run: Tensor  # (...) int64
    stop_reason: Tensor  # index into STOP_REASONS, (...) int64
    rounding_error: Tensor  # estimated rounding error of the exponents (largest over directions), (..., B)
    qr_steps: int  # re-orthonormalisations done (all maps together)


def _descending_order(x: Tensor) -> Tensor:
    """Indices sorting the last axis largest first, −inf after every finite value and NaN after −inf."""
    key = torch.where(x.isnan(), torch.full_like(x, -math.inf), x)
    order = key.argsort(dim=-1, descending=True, stable=True)
    nan_last = x.gather(-1, order).isnan().to(torch.int8).argsort(dim=-1, stable=True)  # NaN behind −inf
    return order.gather(-1, nan_last)


def _sort_descending(x: Tensor) -> Tensor:
    """Sorted along the last axis, largest first, −inf after every finite value and NaN after −inf."""
    return x.gather(-1, _descending_order(x))


def _mean_log(c: Tensor, c_start: Tensor, span: Tensor) -> Tensor:
    """(c − c_start)/span for running sums of ln R_ii, −inf where a direction was ever singular.

    A singular step adds ln 0 = −inf to the running sum; if that happened before ``c_start`` was taken,
    −inf − (−inf) would be NaN, but the exponent of a direction that collapsed is −inf.
    """
    return torch.where(c.isneginf(), -math.inf, (c - c_start) / span)


def _canonical(F: IteratedMap, x0: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """States as (L, B, N) with L the flattened leading shape F returns, and that leading shape."""
    x = F.broadcast_states(x0)
    if x.dim() < 2:
        raise ValueError(f"start states must be (B, N) or (..., B, N), got shape {tuple(x0.shape)}")
    if not x.is_floating_point():
        raise TypeError("start states must be a floating-point tensor")
    lead = tuple(x.shape[:-2])
    return x.reshape(-1, *x.shape[-2:]), lead


def _norm_stop(x: Tensor) -> Tensor:
    """Per map (L,): 0 running, 1 diverged (mean norm > 1e10 or non-finite), 2 collapsed (< 1e-10)."""
    mean_norm = x.norm(dim=-1).mean(-1)  # (L,)
    code = torch.zeros_like(mean_norm, dtype=torch.int64)
    code = torch.where(mean_norm < COLLAPSE_NORM, 2, code)
    return torch.where((mean_norm > DIVERGENCE_NORM) | ~torch.isfinite(mean_norm), 1, code)


def _normalise(v: Tensor) -> tuple[Tensor, Tensor]:
    """Columns of v (..., N, k) scaled to unit norm, and their norms (..., 1, k).

    A column mapped exactly to 0 (a singular Jacobian) keeps norm 0, so its log-growth is −inf.
    """
    n = v.norm(dim=-2, keepdim=True)
    return v / n.clamp_min(torch.finfo(v.dtype).tiny), n


def _log_diagonal(h: Tensor) -> Tensor:
    """ln |R_ii| (..., k) from geqrf's output, whose upper triangle is R; float64 logs so that a float32
    R_ii near its underflow keeps its digits. |R_ii| only: Q's column signs never reach an exponent."""
    return h.diagonal(dim1=-2, dim2=-1).abs().double().log()


def _householder_qr(v: Tensor) -> tuple[Tensor, Tensor]:
    """Q (..., N, k) with orthonormal columns and ln |R_ii| (..., k) of v = Q R (Householder).

    geqrf + orgqr called directly: ``torch.linalg.qr`` runs the same two LAPACK routines but also
    copies R out, and measured ~2x slower for (16, 784, 32) frames. Q is not sign-fixed: flipping a
    column of v flips the same Householder reflector's sign exactly, so every later |R_ii| is unchanged.
    """
    h, tau = torch.geqrf(v)
    return torch.linalg.householder_product(h, tau), _log_diagonal(h)


def _cholesky_pass(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One CholeskyQR pass: G = vᵀv = L Lᵀ, Q = v L⁻ᵀ. Returns Q, L (R = Lᵀ) and cholesky_ex's info."""
    chol, info = torch.linalg.cholesky_ex(v.mT @ v)
    return torch.linalg.solve_triangular(chol.mT, v, upper=True, left=False), chol, info


def _cholesky_qr2(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CholeskyQR2 of v (..., N, k): Q, ln R_ii (R = R2 R1, R_ii > 0) and an ok mask (...).

    The first pass squares the condition number (Gram matrix), so it loses orthogonality like
    κ(v)²·eps; the second pass, on the nearly orthonormal Q1, restores it to O(eps) and
    R2 ≈ I. An element is not ok when either Cholesky fails (info ≠ 0: v rank-deficient or
    κ(v) ≳ eps^(-1/2)) or Q1 was too far from orthonormal (||R2 − I||_F > CHOLESKY_QR_TOL, NaN
    included); its Q and ln R_ii are then meaningless and must be replaced.
    """
    q1, l1, info1 = _cholesky_pass(v)
    q, l2, info2 = _cholesky_pass(q1)
    eye = torch.eye(v.shape[-1], device=v.device, dtype=v.dtype)
    dev = torch.linalg.matrix_norm(l2 - eye)  # Frobenius ≥ spectral: κ(Q1) ≤ (1 + tol)/(1 − tol)
    ok = (info1 == 0) & (info2 == 0) & (dev <= CHOLESKY_QR_TOL)
    log_r = l1.diagonal(dim1=-2, dim2=-1).double().log() + l2.diagonal(dim1=-2, dim2=-1).double().log()
    return q, log_r, ok


def _resolve_qr_method(qr_method: str, device: torch.device, r: int | str) -> str:
    """The method "auto" stands for: CholeskyQR2 on CUDA with QR every step or r = "auto", else Householder.

    Under r = "auto" the blocks are kept short enough that ln(||v_j||/R_jj) stays ≲ 15 (float64),
    well inside CholeskyQR2's range cond(V) ≲ eps^(-1/2); elements outside it fall back anyway.
    """
    if qr_method != "auto":
        return qr_method
    return "cholesky" if torch.device(device).type == "cuda" and r in (1, "auto") else "householder"


def _reorthonormalise(v: Tensor, method: str, reflectors: bool = False
                      ) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None, Tensor]:
    """Re-orthonormalise v = J·Q (..., N, k), k ≥ 2: (Q, None, ln |R_ii|) or (None, (w, tau), ln |R_ii|).

    With ``reflectors`` (Householder only) the new frame stays as geqrf's Householder reflectors
    (w, tau), for :meth:`IteratedMap.jvp_reflectors`, and Q is never formed. "cholesky" runs
    CholeskyQR2 on the whole batch and redoes the elements where it is not ok (singular or too
    ill-conditioned v) with Householder QR, so they get exactly the Householder result
    (−inf/very negative ln R_ii of singular Jacobians included).
    """
    if method == "householder":
        if reflectors:
            h, tau = torch.geqrf(v)
            return None, (h, tau), _log_diagonal(h)
        q, log_r = _householder_qr(v)
        return q, None, log_r
    q, log_r, ok = _cholesky_qr2(v)
    if not bool(ok.all()):
        bad = ~ok
        q[bad], log_r[bad] = _householder_qr(v[bad])
    return q, None, log_r


def _rounding_estimate(log_r: Tensor, log_v: Tensor, block: int, n: int, dtype: torch.dtype) -> Tensor:
    """Estimated rounding error of each ln R_jj of one re-orthonormalisation, (..., k) float64.

    V = J_{t−1} ⋯ J_{t−block} Q (block products, then Householder QR) is computed with a columnwise
    backward error of about (block + 1)·sqrt(N)·eps·||v_j|| (each GEMM and the QR, random rounding
    over N terms), and R_jj, the part of v_j off the span of v_1..v_{j−1}, moves by at most that, so

        |δ ln R_jj| ≲ (block + 1)·sqrt(N)·eps·||v_j|| / R_jj,   ||v_j||/R_jj ≈ e^{block·(λ_1 − λ_j)}

    once the frame has aligned. An estimate (first order, typical rather than worst-case
    constants), capped at 1e3: beyond ~1 the direction is below the rounding floor altogether.
    A direction with R_jj = 0 exactly (a singular Jacobian) is dynamics, not rounding: estimate 0.
    Rounding also moves error between neighbouring directions, so one direction's estimate does
    not bound its own exponent (single exponents exceeded theirs up to 80-fold); the largest over
    the spectrum is the figure to use. Against QR every step, the largest change of any exponent,
    divided by the two runs' largest estimates, was ≤ 0.06 on random tanh maps (N = 40–100,
    J = 1.5–4, blocks r = 2–6, 120 steps) and 0.01–8 under "auto" (N = 48–784, J = 1.5–3); the
    changes themselves stayed ≤ 1.5e-9 under the default budget of 1e-8. An estimate, not a bound.
    """
    prefix = math.log((block + 1) * math.sqrt(n) * torch.finfo(dtype).eps)
    est = torch.exp((prefix + log_v - log_r).clamp_max(math.log(1e3)))
    return torch.where(log_r.isneginf(), 0.0, est)


@dataclass
class _BlockLength:
    """The block length r of reorthonormalize_every="auto", updated after every QR.

    With S = max_j ln(||v_j||/R_jj) over the block just done (all running maps and start states) the
    estimated error rate per step (``_rounding_estimate``) is e(b) = (b + 1)·sqrt(N)·eps·e^S / b.
    Its average over the run must stay ≤ tol, and S fluctuates from block to block on chaotic orbits
    (by ~±3 at N = 784, a factor 20 in e). So r halves when a block's e exceeds tol or the running
    average exceeds tol/2, and doubles after a full block (b = r) whose prediction at 2r, taking
    S(2r) ≈ 2·S(r), is ≤ tol/8 and keeps the running average ≤ tol/2. Each halving makes the next
    doubling wait for ``backoff`` QRs, and doubles that wait (up to 64), so a length that keeps
    failing is not retried every other block. Column norms grow like e^{r λ_1}, so r only doubles
    while every |ln ||v_j|||, |ln R_jj| stays within a quarter of the dtype's exponent range. Exactly
    singular directions (R_jj = 0) carry no rounding error and are left out.
    """

    tol: float
    n: int
    dtype: torch.dtype
    r: int = 1
    wait: int = 0  # QRs before a doubling may be tried again
    backoff: int = 1  # the wait the next halving imposes
    spent: float = 0.0  # Σ e·b over the blocks so far
    steps: int = 0  # Σ b

    def update(self, block: int, log_v: Tensor, log_r: Tensor, active: Tensor) -> int:
        """The next r from ln ||v_j||, ln R_jj (L, B, k) of the block of length ``block``; active (L,)."""
        live = active[:, None, None] & log_r.isfinite()
        if not bool(live.any()):
            return self.r
        s = max(float(torch.where(live, log_v - log_r, 0).amax()), 0.0)
        big = float(torch.where(live, torch.maximum(log_v.abs(), log_r.abs()), 0).amax())
        c = math.sqrt(self.n) * torch.finfo(self.dtype).eps
        span = math.log(torch.finfo(self.dtype).max)
        rate = (block + 1) * c * math.exp(min(s, 700.0)) / block
        self.spent, self.steps = self.spent + rate * block, self.steps + block
        if rate > self.tol or self.spent / self.steps > self.tol / 2 or big > span / 2:
            if self.r > 1:
                self.r, self.wait, self.backoff = self.r // 2, self.backoff, min(2 * self.backoff, 64)
        elif self.wait > 0:
            self.wait -= 1
        elif block == self.r and 2 * self.r <= R_MAX and 2 * big <= span / 4:
            ahead = (2 * self.r + 1) * c * math.exp(min(2 * s, 700.0))  # predicted e·b of a block of 2r
            average = (self.spent + ahead) / (self.steps + 2 * self.r)
            if ahead / (2 * self.r) <= self.tol / 8 and average <= self.tol / 2:
                self.r *= 2
        return self.r


def _gather_orbit(orbit: dict[int, Tensor], idx: list[int]) -> Tensor:
    """States x_{idx[l]} of map l from the stored orbit, (L, B, N)."""
    if all(i == idx[0] for i in idx):
        return orbit[idx[0]]
    return torch.stack([orbit[i][l] for l, i in enumerate(idx)])


def map_measures(F: IteratedMap, x0: Tensor, steps: int = 500, *, perturbation: float = 1e-4, seed: int = 0,
                 lyapunov: bool = True, converge_tol: float | None = None, hold_tol: float | None = None,
                 m2_passes: int = 1, max_period: int = MAX_PERIOD, lambda_tol: float = LAMBDA_TOL) -> MapMeasures:
    """M1–M5, Benettin λ_max and the attractor class from one shared reference orbit (EOC-optimality).

    Per step the reference orbit x_t, the perturbed orbit x'_t = F^t(x0 + δ) and the tangent vectors
    advance together: one F evaluation each for x and x', one jvp for the Benettin vector and, from
    T/2 on, the M2 vector as its second column (for a LayerMap: one matrix product for all of them).
    Windowed quantities use the second half of the orbit, [t_end/2, t_end), with t_end = T (or the
    step of an early stop).

    Estimator caveats::

        - Finite T and transients: every time average uses only the second half of the orbit; slow
          transients near the edge (critical slowing down) still bias all measures at T = 500.
        - Start states: the original used real test inputs; measures are per start state, and a
          map with several attractors gives different values for different x0.
        - M1 ``s`` is a one-point estimate at x_T. For large random W it equals sqrt(χ) of the
          mean-field theory (docs/science/iterated-maps.md consistency check); for a single map it is not an
          exponent, and λ_max ≈ ln s only holds in the chaotic regime (v2's claim).
        - M2 estimates ln |λ_max(P)|/τ of the product P = J_{t_end−1} ⋯ J_a over the window by
          power iteration with renormalisation at every step (never a raw product, which
          overflows). Pass 1 applies P to a fresh random unit vector u0 started at a = T/2 (in
          the main loop); passes 2.. replay the stored window orbit (τ jvps each) on the vector
          left by the previous pass, and the last pass's log-growth ln ||P u|| is the estimate.
          With one pass (default) the estimate is ln(||P u0||)/τ = ln σ_1(P)/τ + ln|<u0, r_1>|/τ,
          which differs from ln |λ_max(P)|/τ = ln σ_1(P)/τ + ln|<l_1, r_1>|/τ (l_1, r_1 the top
          singular vectors) by O(ln N / τ); more passes converge like |λ_2/λ_1|^passes of P,
          exponentially fast in τ on chaotic orbits, not at all for a complex leading pair
          (rotations), where the O(1/τ) ambiguity is intrinsic. M2 and Benettin's λ_max both tend
          to λ_1 as τ → ∞; M2 starts from a random vector at T/2 (no transient for its
          alignment), Benettin's vector has been aligning since t = 0.
          Maps stopped early (norm caps, convergence) get M2 over their own window by replay.
          Memory: the states of the current window are kept for that, ≈ T/2·L·B·N values.
        - M3 uses d_0 = ||x'_0 − x_0|| as represented in the state dtype. It saturates once d_t
          reaches the attractor size (≈ sqrt(2N) for tanh chaos), so at large t it reads
          ln(d_sat/d_0)/t and strongly underestimates chaotic exponents; it also includes the
          alignment transient of the random δ. Prefer ``lyapunov_max``; use M3 before saturation
          (small t, or the slope of ln ``separation``) to cross-check it. In float32, δ entries
          much below ~1e-6·|x| are lost to rounding; use float64 states for tiny perturbations.
        - Benettin λ_max: one tangent vector renormalised every step, the first half of the
          orbit discarded as transient (the same window as M2, M4, M5). Its finite-T error is
          ~O(1/τ) on tori and ~O(1/sqrt(τ)) fluctuations on chaotic orbits.

    Args:
        F: the map; stacked maps are measured side by side.
        x0: start states (B, N) or (..., B, N).
        steps: T.
        perturbation: std of each entry of δ ~ Normal(0, perturbation²·I).
        seed: seeds δ and the tangent start vectors (shared by all maps of a stack, so a stack
            gives the same numbers as its maps one at a time).
        lyapunov: track the tangent vector (λ_max and M2); if False the attractor is classified
            with M3 in place of λ_max.
        converge_tol: if given, a map whose every orbit has reached a fixed point stops early:
            relative change of x_t and x'_t below tol, |Δ d_t| ≤ tol·d_t (+ rounding), and the
            tangent log-growth changing by less than tol. From then on every summand of the time
            averages (d_t, X_t, log-growth) is constant, so the remaining steps are filled in with
            their last values: the averages over T are extrapolated exactly (up to tol); M2
            replays the fixed point for the missing steps. Such maps report stop_reason
            "converged" and use the full window [T/2, T).
        hold_tol: if given (and ``lyapunov``), a map whose every orbit has reached a fixed point to this
            tolerance (the state conditions of ``converge_tol``: x_t, x'_t and d_t settled, whatever the
            tangent does) is held there: x_t and x'_t keep their values, so d_t, X_t and the orbit tail are
            constant from then on (they differ from the moving orbit's by less than ``hold_tol``
            relative, and d_t has collapsed to rounding), while the tangent columns keep being iterated,
            at the Jacobian of the held state. Once every running map of the stack is held, a step costs
            only the tangent columns (:meth:`IteratedMap.linearization`): one row of three on a
            LayerMap. This saves time on maps whose fixed point has a complex dominant pair, where the
            tangent growth oscillates and ``converge_tol`` never stops them. λ_max and M2 are still
            averages over every step (differing from the unheld ones by the states' residual motion);
            the stop reasons and steps run are unchanged: the maps still run all T steps. Checked every
            ``HOLD_CHECK`` steps.
        m2_passes: power-iteration passes for M2 (0 disables M2 and the orbit storage; passes
            beyond the first replay the stored window, τ jvps each).
        max_period: longest cycle searched for by :func:`classify_attractor`.
        lambda_tol: |λ| below this counts as zero for the classification.

    Returns:
        A :class:`~stabilityscope.dynamics.lyapunov.MapMeasures`.
    """
    if steps < 2:
        raise ValueError(f"steps must be ≥ 2, got {steps}")
    x, lead = _canonical(F, x0)  # (L, B, N)
    run = _TrackedOrbits.start(x, steps, perturbation, seed, lyapunov and m2_passes > 0, 2 * max_period)
    for t in range(steps):
        run.advance(F, t, lyapunov, converge_tol, hold_tol if lyapunov else None)
        if not bool(run.active.any()):
            break

    t_end = torch.where((run.stop == 0) | (run.stop == 3), steps, run.steps_run)  # (L,) end of each window
    m3, m4, poincare, lam, sep_full = _window_averages(run, t_end, lyapunov)
    m2 = _m2_estimate(F, run, t_end, m2_passes) if run.use_m2 else torch.full_like(m3, float("nan"))
    s = F.jacobian_norm(run.x).to(torch.float64) / math.sqrt(run.x.shape[-1])  # M1 at x_T (frozen at a stop)
    orbit_tail = _orbit_tail(run.orbit, run.steps_run, run.n_tail)  # (L, B, n_tail, N)
    divergent = (run.stop == 1).to(x.device)[:, None].expand(m3.shape)
    codes, periods = classify_attractor(orbit_tail, lam if lyapunov else m3, tol=lambda_tol,
                                        max_period=max_period, divergent=divergent)

    def out(t: Tensor) -> Tensor:
        return t.reshape(*lead, *t.shape[1:])

    return MapMeasures(
        s=out(s), jacobian_product_exponent=out(m2), two_trajectory_exponent=out(m3),
        asymptotic_distance=out(m4), poincare=out(poincare), lyapunov_max=out(lam),
        attractor=out(codes), period=out(periods), separation=out(sep_full.permute(1, 2, 0)),
        orbit_tail=out(orbit_tail), steps_run=run.steps_run.reshape(lead), stop_reason=run.stop.reshape(lead),
        steps=steps, perturbation=perturbation, seed=seed)


@dataclass
class _TrackedOrbits:
    """The loop state of :func:`map_measures`: the reference orbit x_t, its perturbed twin x'_t, the
    Benettin tangent column v and (from T/2) the M2 column u of L maps × B start states, with the
    per-step records d_t, X_t and ln ||J_t v_t|| and the early-stop bookkeeping (on the CPU: one sync
    per step)."""

    x: Tensor  # (L, B, N) x_t
    xp: Tensor  # (L, B, N) x'_t
    v: Tensor  # (L, B, N, 1) unit Benettin vector
    u: Tensor  # (L, B, N, 1) unit M2 vector (joins the tangent columns at m2_start)
    u0: Tensor  # (B, N) the M2 start draw (replayed passes restart from it)
    m_hat: Tensor  # (L, N) Poincaré axis: the normalised mean start state
    sep: Tensor  # (T + 1, L, B) d_t, float64
    proj: Tensor  # (T + 1, L, B) X_t = <x_t, m̂>, float64
    growth: Tensor  # (T, L, B) ln ||J_t v_t||, float64
    m2_log: Tensor  # (L, B) ln ||P u0|| accumulated in the loop, float64
    orbit: dict[int, Tensor]  # x_t, kept only while some window or tail may still need it
    active: Tensor  # (L,) bool, CPU
    active_dev: Tensor  # the same on the states' device
    steps_run: Tensor  # (L,) int64, CPU
    stop: Tensor  # (L,) index into STOP_REASONS, CPU
    steps: int
    use_m2: bool
    m2_start: int  # the M2 vector joins here: window [T/2, T)
    n_tail: int
    held: Tensor = None  # (L,) bool, CPU: both orbits held at their fixed point (hold_tol)
    held_dev: Tensor = None
    tangent_map: Optional[Callable[[Tensor], Tensor]] = None  # v ↦ J(x)·v once every running map is held

    @classmethod
    def start(cls, x: Tensor, steps: int, perturbation: float, seed: int, use_m2: bool,
              n_tail: int) -> "_TrackedOrbits":
        L, B, N = x.shape
        dev, dt = x.device, x.dtype
        gen = torch.Generator(device=dev).manual_seed(seed)
        # draws are (B, N) and shared across maps, so stacked and one-at-a-time runs see the same δ
        delta = torch.randn(B, N, generator=gen, device=dev, dtype=dt) * perturbation
        v0 = torch.randn(B, N, generator=gen, device=dev, dtype=dt)
        u0 = torch.randn(B, N, generator=gen, device=dev, dtype=dt)
        xp = x + delta
        m = x.mean(1)
        m_hat = m / m.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dt).tiny)  # (L, N)
        f64 = dict(device=dev, dtype=torch.float64)
        sep = torch.empty(steps + 1, L, B, **f64)
        proj = torch.empty(steps + 1, L, B, **f64)
        sep[0] = (xp - x).norm(dim=-1)
        proj[0] = (x * m_hat[:, None]).sum(-1)
        active = torch.ones(L, dtype=torch.bool)
        return cls(x=x, xp=xp, v=_normalise(v0.expand(L, B, N).unsqueeze(-1))[0],
                   u=_normalise(u0.expand(L, B, N).unsqueeze(-1))[0], u0=u0, m_hat=m_hat, sep=sep, proj=proj,
                   growth=torch.zeros(steps, L, B, **f64), m2_log=torch.zeros(L, B, **f64), orbit={0: x},
                   active=active, active_dev=active.to(dev), steps_run=torch.zeros(L, dtype=torch.int64),
                   stop=torch.zeros(L, dtype=torch.int64), steps=steps, use_m2=use_m2, m2_start=steps // 2,
                   n_tail=n_tail, held=torch.zeros(L, dtype=torch.bool),
                   held_dev=torch.zeros(L, dtype=torch.bool, device=dev))

    def advance(self, F: IteratedMap, t: int, lyapunov: bool, converge_tol: float | None,
                hold_tol: float | None = None) -> None:
        """Step t → t + 1 of every running map: states, tangent columns, records, stops, orbit pruning."""
        with_u = self.use_m2 and t >= self.m2_start
        v_new = u_new = None
        if lyapunov:
            cols = torch.cat([self.v, self.u], -1) if with_u else self.v
            if self.tangent_map is not None:  # every running map is held: only the tangent columns move
                fx, fxp, jv = self.x, self.xp, self.tangent_map(cols)
            else:
                fx, fxp, jv = F.tracked_step(self.x, self.xp, cols)
            cols, gn = _normalise(jv)
            v_new = cols[..., :1]
            self.growth[t] = gn[..., 0, 0].log()  # (L, B)
            if with_u:
                u_new = cols[..., 1:]
                self.m2_log += torch.where(self.active_dev[:, None], gn[..., 0, 1].log().to(torch.float64), 0)
        else:
            fx, fxp = F(self.x), F(self.xp)
        converged = self._converged(t, fx, fxp, lyapunov, converge_tol)
        settle = None  # checked every HOLD_CHECK steps: on a chaotic orbit the check is pure overhead
        if hold_tol is not None and t % HOLD_CHECK == HOLD_CHECK - 1 and self.tangent_map is None:
            settle = self._settled(t, fx, fxp, hold_tol) & self.active & ~self.held
        self._move(fx, fxp, v_new, u_new if with_u else None, lyapunov)
        self.sep[t + 1] = (self.xp - self.x).norm(dim=-1)
        self.proj[t + 1] = (self.x * self.m_hat[:, None]).sum(-1)
        self.orbit[t + 1] = self.x
        self._update_stops(t, converged)
        if settle is not None:
            self._hold(F, settle)
        self._prune_orbit(t)

    def _settled(self, t: int, fx: Tensor, fxp: Tensor, tol: float) -> Tensor:
        """(L,) CPU bool: both orbits of every start state are at a fixed point to ``tol`` (relative change
        of x_t and x'_t, and of d_t beyond rounding), whatever the tangent columns do."""
        if t < 1:
            return torch.zeros(fx.shape[0], dtype=torch.bool)
        x, xp = self.x, self.xp
        eps = torch.finfo(x.dtype).eps
        xn, xpn = x.norm(dim=-1), xp.norm(dim=-1)
        ok = ((fx - x).norm(dim=-1) <= tol * xn) & ((fxp - xp).norm(dim=-1) <= tol * xpn)
        ok &= ((fxp - fx).norm(dim=-1) - self.sep[t]).abs() <= tol * self.sep[t] + 8 * eps * (xn + xpn)
        return ok.all(-1).cpu()

    def _converged(self, t: int, fx: Tensor, fxp: Tensor, lyapunov: bool, converge_tol: float | None) -> Tensor:
        """(L,) CPU bool: every orbit of the map has reached a fixed point to ``converge_tol``."""
        if converge_tol is None or t < 1:
            return torch.zeros(fx.shape[0], dtype=torch.bool)
        ok = self._settled(t, fx, fxp, converge_tol)
        if lyapunov:
            ok &= ((self.growth[t] - self.growth[t - 1]).abs() <= converge_tol).all(-1).cpu()
        return ok

    def _hold(self, F: IteratedMap, newly: Tensor) -> None:
        """Hold the maps ``newly`` at their (just taken) states; once every running map is held, the
        tangent columns are advanced by the linearisation at those states alone."""
        if bool(newly.any()):
            self.held = self.held | newly
            self.held_dev = self.held.to(self.x.device)
        if self.tangent_map is None and bool(self.active.any()) and bool((self.held | ~self.active).all()):
            self.tangent_map = F.linearization(self.x)

    def _move(self, fx: Tensor, fxp: Tensor, v_new: Tensor | None, u_new: Tensor | None, lyapunov: bool) -> None:
        """Take the new states and tangent columns; stopped maps stay frozen at their last state, held maps
        keep their states and take the new tangent columns."""
        if bool(self.active.all()) and not bool(self.held.any()):
            self.x, self.xp = fx, fxp
            if lyapunov:
                self.v = v_new
                self.u = u_new if u_new is not None else self.u
            return
        a3 = self.active_dev[:, None, None]
        if self.tangent_map is None:  # else no running state moves
            moving = (self.active_dev & ~self.held_dev)[:, None, None]
            self.x, self.xp = torch.where(moving, fx, self.x), torch.where(moving, fxp, self.xp)
        if lyapunov:
            self.v = torch.where(a3[..., None], v_new, self.v)
            self.u = torch.where(a3[..., None], u_new, self.u) if u_new is not None else self.u

    def _update_stops(self, t: int, converged: Tensor) -> None:
        """Stop the maps whose mean norm left [1e-10, 1e10] (or became non-finite) or that converged."""
        code = _norm_stop(self.x).cpu()
        code = torch.where((code == 0) & converged, 3, code)
        newly = self.active & (code > 0)
        self.steps_run = torch.where(self.active, t + 1, self.steps_run)
        if bool(newly.any()):
            self.stop = torch.where(newly, code, self.stop)
            self.active = self.active & ~newly
            self.active_dev = self.active.to(self.x.device)

    def _prune_orbit(self, t: int) -> None:
        """Drop the states no window (from s_l/2) or tail (the last n_tail) can still need."""
        active, steps_run = self.active, self.steps_run
        t_end_if = torch.where(active | (self.stop == 3), self.steps, steps_run)
        need = torch.minimum(t_end_if // 2 if self.use_m2 else steps_run, steps_run - self.n_tail + 1)
        need = torch.where(active, torch.minimum(torch.tensor((t + 1) // 2 if self.use_m2 else t + 1), need), need)
        keep_from = int(need.clamp_min(0).min())
        for old in [i for i in self.orbit if i < keep_from]:
            del self.orbit[old]


def _window_averages(run: _TrackedOrbits, t_end: Tensor, lyapunov: bool
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """M3, M4, M5, Benettin λ_max over each map's window [t_end/2, t_end), and d_t for t = 0..T.

    Converged maps: the summands after the stop equal their last values (exact extrapolation).
    Returns (m3 (L, B), m4 (L, B), poincare (L, B, n_t, 2), λ_max (L, B), separation (T + 1, L, B)).
    """
    steps, (_, L, B) = run.steps, run.sep.shape
    dev = run.x.device
    a = t_end // 2
    last = run.steps_run.to(dev)
    ts = torch.arange(steps + 1, device=dev)[:, None]  # (T+1, 1)
    sep_full = run.sep.gather(0, torch.minimum(ts, last).unsqueeze(-1).expand(-1, -1, B))  # (T+1, L, B)
    proj_full = run.proj.gather(0, torch.minimum(ts, last).unsqueeze(-1).expand(-1, -1, B))
    t_end_d, a_d = t_end.to(dev), a.to(dev)
    in_window = (ts >= a_d) & (ts < t_end_d)  # (T+1, L)
    count = (t_end_d - a_d).to(torch.float64)[:, None]  # (L, 1)

    d0 = sep_full[0]
    d_end = sep_full.gather(0, t_end_d[None, :, None].expand(1, -1, B))[0]
    m3 = torch.log(d_end / d0) / t_end_d[:, None]
    m4 = torch.where(in_window[..., None], sep_full, 0).sum(0) / count

    n_t = int((t_end - a).max())
    j = torch.arange(n_t, device=dev)[:, None]  # (n_t, 1)
    idx = (a_d + j).clamp_max(steps - 1)  # (n_t, L)
    valid = j < (t_end_d - a_d)
    x_t = proj_full.gather(0, idx.unsqueeze(-1).expand(-1, -1, B))
    x_t1 = proj_full.gather(0, (idx + 1).unsqueeze(-1).expand(-1, -1, B))
    poincare = torch.stack([x_t, x_t1], -1).masked_fill(~valid[..., None, None], float("nan"))
    poincare = poincare.permute(1, 2, 0, 3)  # (L, B, n_t, 2)

    lam = torch.full((L, B), float("nan"), device=dev, dtype=torch.float64)
    if lyapunov:
        g_full = run.growth.gather(0, torch.minimum(ts[:-1], last - 1).unsqueeze(-1).expand(-1, -1, B))
        lam = torch.where(in_window[:-1, :, None], g_full, 0).sum(0) / count
    return m3, m4, poincare, lam, sep_full


def _m2_estimate(F: IteratedMap, run: _TrackedOrbits, t_end: Tensor, m2_passes: int) -> Tensor:
    """M2 (L, B): pass 1 ran in the loop for completed maps; stopped maps (own window) replay every pass."""
    L, B, N = run.x.shape
    dev = run.x.device
    replay = run.stop != 0
    m2 = run.m2_log / (run.steps - run.m2_start)
    if m2_passes > 1 or bool(replay.any()):
        u_start = torch.where(replay.to(dev)[:, None, None, None],
                              _normalise(run.u0.expand(L, B, N).unsqueeze(-1))[0], run.u)
        passes = torch.where(replay, m2_passes, m2_passes - 1)
        m2 = torch.where(passes.to(dev)[:, None] > 0,
                         _jacobian_product_exponent(F, run.orbit, u_start, passes, t_end // 2, t_end, run.steps_run),
                         m2)
    return m2


def _orbit_tail(orbit: dict[int, Tensor], steps_run: Tensor, n_tail: int) -> Tensor:
    """The last n_tail states x_t, t ≤ s_l, of each map's window [s_l/2, s_l]; (L, B, n_tail, N).

    A window shorter than n_tail (an early stop) is NaN-padded in front.
    """
    ends = steps_run.tolist()
    first = [max(e // 2, e - n_tail + 1) for e in ends]  # earliest step inside map l's window
    rows = []
    for i in range(n_tail):
        want = [e - n_tail + 1 + i for e in ends]
        states = _gather_orbit(orbit, [max(w, f) for w, f in zip(want, first)])
        pad = torch.tensor([w < f for w, f in zip(want, first)], device=states.device)
        rows.append(states.masked_fill(pad[:, None, None], float("nan")))
    return torch.stack(rows, dim=2)


def _jacobian_product_exponent(F: IteratedMap, orbit: dict[int, Tensor], u: Tensor, passes: Tensor, a: Tensor,
                               t_end: Tensor, steps_run: Tensor) -> Tensor:
    """M2 by power iteration on P = J_{t_end−1} ⋯ J_a, replaying the stored orbit; (L, B).

    Map l runs its last passes[l] passes, starting from the unit vectors u (L, B, N, 1). Each pass
    applies P with renormalisation at every step; the last pass's accumulated log-growth is
    ln ||P u|| ≈ ln |λ_max(P)|. Maps with passes[l] = 0 are left untouched (result meaningless).
    """
    L = a.shape[0]
    dev = u.device
    tau = t_end - a  # (L,)
    n_pass = int(passes.max())
    logsum = torch.zeros(u.shape[:2], device=dev, dtype=torch.float64)
    for p in range(n_pass):
        in_pass = p >= n_pass - passes  # (L,) this map's pass has started
        logsum = torch.where(in_pass.to(dev)[:, None], 0.0, logsum)
        for j in range(int(tau[in_pass].max())):
            live = in_pass & (j < tau)
            idx = [min(int(a[l]) + j, int(steps_run[l])) for l in range(L)]  # converged: replay x*
            _, ju = F.jvp(_gather_orbit(orbit, idx), u)
            u_new, n = _normalise(ju)
            live_d = live.to(dev)
            logsum = logsum + torch.where(live_d[:, None], n[..., 0, 0].log().to(torch.float64), 0)
            u = torch.where(live_d[:, None, None, None], u_new, u)
    return logsum / tau.to(dev, torch.float64)[:, None]


def classify_attractor(orbit_tail: Tensor, lambda_max: Tensor, *, tol: float = LAMBDA_TOL,
                       max_period: int = MAX_PERIOD, rtol: float = PERIOD_RTOL, atol: float = PERIOD_ATOL,
                       divergent: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Attractor class and cycle length of each orbit (EOC-optimality v2, docs/science/iterated-maps.md).

    With the mismatch e_L(t) = ||x_{t+L} − x_t|| along the tail and "within tolerance" meaning
    e_L(t) ≤ atol + rtol·||x_t||, the decision per orbit is::

        1. divergent: the last state is non-finite or has norm ≥ 1e10 (or ``divergent`` is set);
           drifting: not divergent and no period found (step 2), but along the tail the norm rises
           at >= 90% of the steps and by >= 5% overall at steps that do not shrink (the last step
           at least half the first): a slow escape, the identity regime of a residual map with a
           bounded branch (its Jacobian tends to I, so λ_max → 0 and s → 1 there by construction,
           not because the map sits at an edge); an orbit creeping to a point too slowly to tell
           within T steps reads so too;
        2. the period is the smallest L ≤ max_period for which the orbit
           a. has reached an L-cycle: e_L within tolerance over the whole tail (any λ_max), or
           b. is contracting onto one (λ_max < −tol only): e_L decays along the tail at least at
              rate λ_max/2, i.e. ln(e_L(last)/e_L(first))/span ≤ λ_max/2, or e_L is within
              tolerance at the tail's last state;
           L = 1 → fixed point, L ≥ 2 → period-L cycle. A contracting orbit that converges to a
           point is a fixed point whatever the sign pattern of its approach: x_t ≈ x* + μ^t·v with
           μ < 0 (or complex) has e_1(t) = |1 − μ|·|μ|^t·||v|| decaying at rate ln|μ| ≈ λ_max, so
           L = 1 qualifies by (b) before L = 2 can;
        3. no period found and λ_max > tol → chaotic;
        4. no period found and |λ_max| ≤ tol → quasi-periodic (the Neimark–Sacker torus); also for
           a NaN λ_max (no evidence either way);
        5. no period found and λ_max < −tol → periodic with period 0: a stable cycle longer than
           max_period, or one approached too irregularly to resolve.

    Caveats: rtol is relative, and the absolute floor atol defaults to the collapse norm 1e-10, so
    a state is resolved from the origin down to where map_measures stops an orbit as collapsed.
    A cycle whose points differ by less than ~rtol·||x|| (or atol) is read as the shorter cycle.
    A slowly contracting orbit with |λ_max| ≤ tol (critical slowing down at the edge, e.g. sign
    flips with |μ| within 1e-2 of 1) has no decay test; it is labelled by (a) alone, so it reads as
    a cycle only once e_L ≤ rtol·||x_t||, else as quasi-periodic. A period longer than max_period,
    or a torus whose rotation number is within ~rtol of a rational p/L, cannot be told from
    quasi-periodicity at this tail length. ``tol`` sets the band around λ = 0; finite-T Benettin
    estimates on a torus are ~1/T off zero.

    Args:
        orbit_tail: (..., B, n, N) last states of each orbit, optionally NaN-padded in front.
        lambda_max: (..., B) largest Lyapunov exponent estimate.
        tol: |λ| ≤ tol counts as zero.
        max_period: longest cycle searched for (needs n > max_period).
        rtol: relative tolerance of x_{t+L} ≈ x_t.
        atol: absolute tolerance on the norm ||x_{t+L} − x_t||.
        divergent: optional (..., B) bool mask of orbits known to have diverged.

    Returns:
        (codes, periods): int64 tensors (..., B); codes index ATTRACTORS, periods are 1 for fixed
        points, L for cycles, 0 otherwise.
    """
    n = orbit_tail.shape[-2]
    lam = lambda_max.to(orbit_tail.device)
    last = orbit_tail[..., -1, :]
    last_norm = last.norm(dim=-1)
    div = ~torch.isfinite(last_norm) | (last_norm >= DIVERGENCE_NORM)
    if divergent is not None:
        div = div | divergent.to(div.device)
    norms = orbit_tail.norm(dim=-1)  # (..., B, n)
    contracting = lam < -tol
    period = torch.zeros(lam.shape, dtype=torch.int64, device=lam.device)
    for p in range(1, min(max_period, n - 1) + 1):
        diff = (orbit_tail[..., p:, :] - orbit_tail[..., :-p, :]).norm(dim=-1)  # e_p(t), (..., B, n − p)
        valid = torch.isfinite(diff)
        within = diff <= atol + rtol * norms[..., :-p]  # False where NaN
        reached = torch.where(valid, within, True).all(-1) & valid.any(-1)
        # decay rate of ln e_p from the first valid entry (NaN padding sits in front) to the last
        first = (~valid).sum(-1)
        span = (diff.shape[-1] - 1 - first).to(lam.dtype)
        d_first = diff.gather(-1, first.clamp_max(diff.shape[-1] - 1).unsqueeze(-1))[..., 0]
        rate = torch.log(diff[..., -1] / d_first).to(lam.dtype) / span.clamp_min(1)
        decays = (span >= 1) & (rate <= lam / 2)  # NaN rate (0/0: both ends exactly equal) is False
        approached = contracting & valid[..., -1] & (decays | within[..., -1])
        period = torch.where((period == 0) & (reached | approached), p, period)
        if bool((period > 0).all()):  # every orbit has its (smallest) period: longer L change nothing
            break

    codes = torch.full(lam.shape, ATTRACTORS.index("quasi_periodic"), dtype=torch.int64, device=lam.device)
    codes = torch.where(contracting, ATTRACTORS.index("periodic"), codes)  # step 5: period 0
    codes = torch.where(lam > tol, ATTRACTORS.index("chaotic"), codes)
    codes = torch.where(period >= 2, ATTRACTORS.index("periodic"), codes)
    codes = torch.where(period == 1, ATTRACTORS.index("fixed_point"), codes)
    codes = torch.where(_drifting(orbit_tail, norms) & (period == 0), ATTRACTORS.index("drifting"), codes)
    codes = torch.where(div, ATTRACTORS.index("divergent"), codes)
    period = torch.where(div, 0, period)
    return codes, period


def relative_step(orbit_tail: Tensor) -> tuple[Tensor, Tensor]:
    """Median ‖x_{t+1} − x_t‖ / ‖x_t‖ along each orbit's tail, and whether the steps shrink (the last below
    half the first: the orbit settles), each (..., B); NaN padding in front is skipped."""
    step = (orbit_tail[..., 1:, :] - orbit_tail[..., :-1, :]).norm(dim=-1)  # (..., B, n − 1)
    rel = step / orbit_tail[..., :-1, :].norm(dim=-1)
    valid = torch.isfinite(rel)
    median = torch.where(valid, rel, torch.nan).nanmedian(-1).values
    first = (~valid).sum(-1).clamp_max(step.shape[-1] - 1)
    s_first = step.gather(-1, first.unsqueeze(-1))[..., 0]
    return median, step[..., -1] < 0.5 * s_first


def near_identity(orbit_tail: Tensor, codes: Tensor, tol: float = NEAR_IDENTITY_STEP) -> Tensor:
    """Attractor codes of a *residual* map x + f(x) with its identity regime labelled ``near_identity``.

    Where the orbit's steps stay below ``tol`` of the state along its tail and do not shrink, the map
    acts as one Euler step of the flow dx/dt = f(x): its Jacobian is I + ∂f, so s ≈ 1 and λ_max ≈ 0
    whatever the weights, and the class that :func:`classify_attractor` gave (a "fixed point" within its
    tolerance, a torus, weak chaos) says nothing about an edge. Divergent and drifting orbits keep
    their labels. Only for residual maps: a plain map creeping to a fixed point near the edge moves
    slowly too, and is correctly a fixed point or a torus.

    Args:
        orbit_tail: (..., B, n, N) as :class:`MapMeasures` keeps it.
        codes: (..., B) indices into ATTRACTORS.
        tol: the relative step below which the map counts as near the identity.
    """
    median, shrinking = relative_step(orbit_tail)
    keep = (codes == ATTRACTORS.index("divergent")) | (codes == ATTRACTORS.index("drifting"))
    hit = (median < tol) & ~shrinking & ~keep
    return torch.where(hit.to(codes.device), ATTRACTORS.index("near_identity"), codes)


def _drifting(orbit_tail: Tensor, norms: Tensor) -> Tensor:
    """The drift test of :func:`classify_attractor` (step 1), (..., B) bool; NaN padding in front is skipped."""
    valid = torch.isfinite(norms)  # (..., B, n)
    rises = (norms[..., 1:] > norms[..., :-1]) & valid[..., :-1] & valid[..., 1:]
    n_steps = (valid[..., :-1] & valid[..., 1:]).sum(-1)
    first = (~valid).sum(-1).clamp_max(norms.shape[-1] - 1)  # index of the first valid state
    r_first = norms.gather(-1, first.unsqueeze(-1))[..., 0]
    step = (orbit_tail[..., 1:, :] - orbit_tail[..., :-1, :]).norm(dim=-1)  # (..., B, n − 1)
    s_first = step.gather(-1, first.clamp_max(step.shape[-1] - 1).unsqueeze(-1))[..., 0]
    return ((n_steps >= 8) & (rises.sum(-1) >= DRIFT_MONOTONE * n_steps)
            & (norms[..., -1] >= (1 + DRIFT_GROWTH) * r_first) & (step[..., -1] >= 0.5 * s_first))


def lyapunov_spectrum(F: IteratedMap, x0: Tensor, k: int | None = None, steps: int = 500,
                      transient: int | None = None, reorthonormalize_every: int | str = "auto", *, seed: int = 0,
                      record_every: int | None = None, qr_method: str = "auto",
                      rounding_tol: float | None = None) -> LyapunovSpectrum:
    """Top-k Lyapunov exponents by QR re-orthonormalisation of k tangent vectors (Benettin et al.).

    V = J(x_{t−1}) ⋯ J(x_{t−b}) Q = Q' R over a block of b steps, and λ_i = (1/(t_end − a)) Σ ln |R_ii| over
    the blocks after the transient a. The diagonal of a product of triangular factors is the product of
    their diagonals, so in exact arithmetic blocks of any length give the same sums as a QR every step;
    only rounding differs (``rounding_error``). One batched QR per block handles all maps and start
    states at once (``qr_method``). The tangent start frame is a seeded random orthonormal (N, k)
    frame, shared by all maps and start states.

    Cost per step (LayerMap): 2N²k flops for J·Q, plus per QR ~4Nk² − 4/3 k³ (Householder geqrf and
    orgqr). A Householder frame with k ≥ 2N/3 is kept as geqrf's reflectors and J·Q is formed by
    ormqr (:meth:`IteratedMap.jvp_reflectors`): at k = N, 2N³ + 4/3 N³ flops per step instead of
    2N³ + 8/3 N³. That is the floor of this algorithm at r = 1 (one GEMM-sized product and one QR
    without Q); longer blocks leave 2N³ per step plus 4/3 N³ per block. benchmarks/bench_lyapunov.py
    measures both against the machine's GEMM rate.

    Caveats: finite T (statistical error ~1/sqrt(T − a) on chaotic orbits, ~1/(T − a) on regular
    ones); the transient must cover both the orbit's approach to the attractor and the frame's
    alignment with the Oseledets directions; exponents of nearly degenerate pairs converge
    slowly; a singular Jacobian gives −inf. Blocks longer than one step lose the weaker directions
    to rounding when exponents are spread by more than ~ln(1/(sqrt(N)·eps))/r (and may overflow):
    "auto" keeps r where the estimated error stays within ``rounding_tol``. Early-stopped maps (norm
    caps, see the module docstring) average over [min(transient, g), t_end) with g the last record
    step ≤ t_end/2; the frames of stopped maps keep being propagated from their frozen state, and
    nothing reads them.

    Args:
        F: the map (stacks are measured side by side).
        x0: start states (B, N) or (..., B, N).
        k: number of exponents (None: all N).
        steps: total steps T, transient included.
        transient: steps discarded before averaging (None: T/2).
        reorthonormalize_every: QR every r steps (an int ≥ 1), or "auto" (default): blocks start at
            r = 1 and double or halve after each QR so that the estimated rounding error of the
            spectrum (``rounding_error``, ``_rounding_estimate``) stays within ``rounding_tol``,
            up to r = 64 (``_BlockLength``). A QR is always done at record steps, at the end of
            the transient and at the end. The estimate per block is (r + 1)·sqrt(N)·eps·max_j
            ||v_j||/R_jj with ||v_j||/R_jj ≈ e^{r(λ_1 − λ_j)}, so a spread λ_1 − λ_k of D per step
            allows r ≈ ln(tol/(sqrt(N)·eps))/D: r = 2 for most blocks of all 784 exponents of a
            J = 1.5 tanh layer (D ≈ 5.6) in float64, the record spacing for its top 32 (D ≈ 0.04),
            and r = 1 wherever one step alone exceeds the budget (float32 full spectra, directions
            at the rounding floor).
        seed: seeds the start frame.
        record_every: steps between trace records (None: ~T/100 and a multiple of r for a fixed r,
            ~T/25 for "auto", whose blocks records would otherwise cut short); every record, the
            transient boundary and the last step force a QR.
        qr_method: how J·Q is re-orthonormalised (k ≥ 2; k = 1 is a plain normalisation):
            "householder": batched LAPACK geqrf + orgqr (orgqr skipped for reflector frames, above).
            "cholesky": CholeskyQR2, G = VᵀV = R1ᵀR1, Q1 = V R1⁻¹ (triangular solve), the same
            again on Q1 giving Q and R2, ln R_ii = ln R1_ii + ln R2_ii; GEMM/Cholesky/triangular
            solves only. It squares the condition number of V = J Q in the first pass, which is
            harmless with r = 1: Q is orthonormal, so cond(V) ≤ cond(J), and fine up to
            cond(J) ≈ eps^(-1/2) (~1e8 in float64, ~4e3 in float32). Every map/start state
            where a Cholesky fails (info ≠ 0: a singular Jacobian, e.g. ReLU dead units or a
            rank-deficient W) or the first pass left Q1 too far from orthonormal is redone with
            Householder QR, so it gets exactly the Householder result. Both methods agree to
            rounding in float64: ≲5e-13 on random tanh maps with J = 1.5–2 (N = 100–784), ~4e-10
            at J = 3 (N = 100), where cond(J) nears eps^(-1/2) and some steps fall back. With
            r > 1 the frame is V = J_t⋯J_{t−r+1} Q, whose condition number can reach cond(J)^r,
            so more steps fall back ("auto" keeps ln cond ≲ 15 in float64).
            "auto" (default): "cholesky" on CUDA with r = 1 or "auto", else "householder". On CPU
            (MKL, one thread) CholeskyQR2 measured slower than geqrf + orgqr: 5.8 against 4.3 ms for
            16 frames of 784×32, 78 against 40 ms for one 784×784 frame (float64), as its ~6.7 N³
            flops on a square frame against ~2.7 N³ predict. (The CUDA choice follows the usual GPU
            picture, batched GEMM/Cholesky far ahead of batched geqrf/orgqr.)
        rounding_tol: the bound "auto" keeps on each exponent's estimated rounding error (None: 1e-9
            for float64, 1e-5 below it).

    Returns:
        A :class:`~stabilityscope.dynamics.lyapunov.LyapunovSpectrum`.
    """
    x, lead = _canonical(F, x0)
    L, B, N = x.shape
    k, transient, r, auto, grid = _spectrum_schedule(N, k, steps, transient, reorthonormalize_every, qr_method,
                                                     record_every)
    dt = x.dtype
    tol = (ROUNDING_TOL if dt == torch.float64 else ROUNDING_TOL_LOW) if rounding_tol is None else rounding_tol
    if not tol > 0:
        raise ConfigError(f"rounding_tol must be > 0, got {rounding_tol!r}")
    method = _resolve_qr_method(qr_method, x.device, reorthonormalize_every)
    run = _FrameRun.start(x, k, seed, method, r, _BlockLength(tol, N, dt) if auto else None, transient)
    grid_set = set(grid)
    for t in range(steps):
        run.advance(F, t, grid_set)
        if not bool(run.active.any()):
            break

    exps, rounding, trace = _spectrum_averages(run, steps, transient, grid)
    n_limited = int(run.limited.any(dim=(0, 1)).sum())
    if n_limited:
        floor = math.exp(_rounding_floor(dt, N))
        warnings.warn(f"lyapunov_spectrum: the weakest {n_limited} of the {k} exponents reached the {dt} rounding "
                      f"floor (per-step contraction relative to the leading direction below eps·sqrt(N) = "
                      f"{floor:.2g}); they are bounded by precision, not measured."
                      + (" Use float64 states and weights for them." if dt != torch.float64 else ""),
                      RuntimeWarning, stacklevel=2)
    return LyapunovSpectrum(
        exponents=exps.reshape(*lead, B, k), trace=trace.reshape(*lead, *trace.shape[1:]),
        trace_steps=torch.tensor(grid), steps=steps, transient=transient,
        steps_run=run.steps_run.reshape(lead), stop_reason=run.stop.reshape(lead),
        rounding_error=rounding.reshape(*lead, B), qr_steps=run.qr_steps)


def _spectrum_schedule(N: int, k: int | None, steps: int, transient: int | None, reorthonormalize_every: int | str,
                       qr_method: str, record_every: int | None) -> tuple[int, int, int, bool, list[int]]:
    """Validated options of :func:`lyapunov_spectrum`: (k, transient, first r, auto, sorted record grid)."""
    k = N if k is None else int(k)
    if not 1 <= k <= N:
        raise ConfigError(f"k must be in [1, N={N}], got {k}")
    transient = steps // 2 if transient is None else int(transient)
    if not 0 <= transient < steps:
        raise ConfigError(f"transient must be in [0, steps={steps}), got {transient}")
    auto = reorthonormalize_every == "auto"
    if not auto and (isinstance(reorthonormalize_every, bool) or not isinstance(reorthonormalize_every, int)
                     or reorthonormalize_every < 1):
        raise ConfigError(f"reorthonormalize_every must be an int ≥ 1 or 'auto', got {reorthonormalize_every!r}")
    r = 1 if auto else reorthonormalize_every
    if qr_method not in QR_METHODS:
        raise ConfigError(f"qr_method must be one of {QR_METHODS}, got {qr_method!r}")
    if record_every is None:  # records force a QR: with a fixed r they fall on its multiples
        record_every = max(1, steps // 25) if auto else r * max(1, steps // (100 * r))
    grid = sorted(set(range(0, steps + 1, int(record_every))) | {transient, steps})
    return k, transient, r, auto, grid


def _rounding_floor(dtype: torch.dtype, n: int) -> float:
    """ln(eps·sqrt(N)): Householder QR resolves R_ii only down to ~eps·sqrt(N)·R_11; below that a
    direction's ln R_ii is rounding, not dynamics."""
    return math.log(torch.finfo(dtype).eps * math.sqrt(n))


@dataclass
class _FrameRun:
    """The loop state of :func:`lyapunov_spectrum`: states x_t of L maps × B start states, their tangent
    frame (explicit columns q, or geqrf's reflectors for wide Householder frames), the running sums of
    ln |R_ii| and of the blocks' rounding estimates, their snapshots at the record steps, and the
    early-stop bookkeeping (on the CPU)."""

    x: Tensor  # (L, B, N)
    q: Tensor | None  # (L, B, N, k) orthonormal columns, or un-normalised inside a block
    reflectors: tuple[Tensor, Tensor] | None  # the frame as geqrf's (w, tau), for wide Householder frames
    c: Tensor  # (L, B, k) running Σ ln |R_ii|, float64
    err: Tensor  # (L, B, k) running Σ of the blocks' rounding estimates, float64
    snaps: dict[int, tuple[Tensor, Tensor]]  # (c, err) at the record steps
    limited: Tensor  # (L, B, k) bool: reached the rounding floor after the transient
    active: Tensor  # (L,) bool, CPU
    active_dev: Tensor
    steps_run: Tensor  # (L,) int64, CPU
    stop: Tensor  # (L,) index into STOP_REASONS, CPU
    method: str  # resolved qr_method
    reflect: bool  # keep Householder frames as reflectors (k ≥ REFLECTOR_FRAME·N)
    r: int  # the current block length
    control: _BlockLength | None  # adapts r under reorthonormalize_every="auto"
    transient: int
    floor: float  # _rounding_floor
    block: int = 0  # steps since the last QR
    qr_steps: int = 0  # QRs done

    @classmethod
    def start(cls, x: Tensor, k: int, seed: int, method: str, r: int, control: _BlockLength | None,
              transient: int) -> "_FrameRun":
        L, B, N = x.shape
        dev, dt = x.device, x.dtype
        reflect = method == "householder" and k >= 2 and k >= REFLECTOR_FRAME * N
        gen = torch.Generator(device=dev).manual_seed(seed)
        h0, tau0 = torch.geqrf(torch.randn(B, N, k, generator=gen, device=dev, dtype=dt))
        # the start frame too stays as reflectors on the reflector path, which so skips its orgqr (4/3 N³ at
        # k = N, a fixed cost that weighs on short orbits); Q0 is the matrix torch.linalg.qr returns (geqrf +
        # orgqr), and the explicit frame is formed only where it is used
        reflectors = (h0.expand(L, B, N, k), tau0.expand(L, B, k)) if reflect else None
        q = None if reflect else torch.linalg.householder_product(h0, tau0).expand(L, B, N, k)
        f64 = dict(device=dev, dtype=torch.float64)
        c, err = torch.zeros(L, B, k, **f64), torch.zeros(L, B, k, **f64)
        active = torch.ones(L, dtype=torch.bool)
        return cls(x=x, q=q, reflectors=reflectors, c=c, err=err, snaps={0: (c, err)},
                   limited=torch.zeros(L, B, k, device=dev, dtype=torch.bool), active=active,
                   active_dev=active.to(dev), steps_run=torch.zeros(L, dtype=torch.int64),
                   stop=torch.zeros(L, dtype=torch.int64), method=method, reflect=reflect, r=r, control=control,
                   transient=transient, floor=_rounding_floor(dt, N))

    def advance(self, F: IteratedMap, t: int, grid: set[int]) -> None:
        """Step t → t + 1: J·frame, a QR where a block ends (length r, a record step or a new stop)."""
        if self.reflectors is None:
            fx, jq = F.jvp(self.x, self.q)  # (L, B, N), (L, B, N, k)
        else:
            fx, jq = F.jvp_reflectors(self.x, *self.reflectors)
        self.block += 1
        code = _norm_stop(fx).cpu()
        newly = self.active & (code > 0)
        t1 = t + 1
        if self.block >= self.r or t1 in grid or bool(newly.any()):
            self._reorthonormalise(jq, t1)
        else:
            self.q, self.reflectors = jq, None
        active, active_dev = self.active, self.active_dev  # stopped maps stay frozen
        self.x = fx if bool(active.all()) else torch.where(active_dev[:, None, None], fx, self.x)
        self.steps_run = torch.where(active, t1, self.steps_run)
        if bool(newly.any()):
            self.stop = torch.where(newly, code, self.stop)
            self.active = active & ~newly
            self.active_dev = self.active.to(fx.device)
        if t1 in grid:
            self.snaps[t1] = (self.c, self.err)

    def _reorthonormalise(self, jq: Tensor, t1: int) -> None:
        """End a block: the new frame, Σ ln |R_ii|, the rounding estimate and the next r."""
        k, N = jq.shape[-1], jq.shape[-2]
        log_v = jq.norm(dim=-2).double().log()  # ln ||v_j||, (L, B, k)
        live = self.active_dev[:, None, None]
        if k == 1:  # R_11 = ||v_1||
            (self.q, _), self.reflectors, log_r = _normalise(jq), None, log_v
        else:
            self.q, self.reflectors, log_r = _reorthonormalise(jq, self.method, self.reflect)  # log_r (L, B, k)
            if t1 > self.transient:
                # an exactly singular direction (ln R_ii = −inf) is dynamics, not rounding
                self.limited |= live & ((log_r - log_r[..., :1]) < self.floor) & log_r.isfinite()
        self.c = self.c + torch.where(live, log_r, 0)
        self.err = self.err + torch.where(live, _rounding_estimate(log_r, log_v, self.block, N, jq.dtype), 0)
        if self.control is not None:
            self.r = self.control.update(self.block, log_v, log_r, self.active_dev)
        self.block, self.qr_steps = 0, self.qr_steps + 1


def _spectrum_averages(run: _FrameRun, steps: int, transient: int, grid: list[int]
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted exponents (L, B, k), rounding estimates (L, B) and the trace (L, B, n_records, k).

    Each map averages over [a, t_end): a = the transient, or for an early-stopped map min(transient, g)
    with g the last record step ≤ t_end/2.
    """
    c, snaps, stop = run.c, run.snaps, run.stop
    L, dev = c.shape[0], c.device
    t_end = torch.where(stop == 0, steps, run.steps_run)
    starts = []
    for l in range(L):
        te = int(t_end[l])
        if stop[l] == 0:
            starts.append(transient)
        else:
            starts.append(min(transient, max(g for g in grid if g <= te // 2)))
    c_start = torch.stack([snaps[s][0][l] for l, s in enumerate(starts)])  # (L, B, k)
    err_start = torch.stack([snaps[s][1][l] for l, s in enumerate(starts)])
    a = torch.tensor(starts, device=dev)
    t_end_d = t_end.to(dev)
    span = (t_end_d - a).to(torch.float64)[:, None, None]
    exps = _mean_log(c, c_start, span)
    exps = exps.gather(-1, _descending_order(exps))
    # per-direction estimates, time-averaged; their max over the spectrum bounds every exponent: rounding
    # moves error between neighbouring directions, so one direction's own estimate does not bound it
    rounding = ((run.err - err_start) / span).amax(-1)

    records = []
    for g in grid:
        if g in snaps:
            est = _mean_log(snaps[g][0], c_start, (g - a).clamp_min(1).to(torch.float64)[:, None, None])
            ok = (g > a) & (g <= t_end_d)
            est = est.masked_fill(~ok[:, None, None], float("nan"))
        else:
            est = torch.full_like(c, float("nan"))
        records.append(_sort_descending(est))
    return exps, rounding, torch.stack(records, dim=2)


def largest_lyapunov(F: IteratedMap, x0: Tensor, steps: int = 500, transient: int | None = None, *,
                     seed: int = 0) -> Tensor:
    """Benettin's largest Lyapunov exponent: one tangent vector renormalised every step, (..., B).

    Same estimator as ``lyapunov_spectrum(k=1)``; transient defaults to T/2. Caveats there.
    """
    return lyapunov_spectrum(F, x0, k=1, steps=steps, transient=transient, seed=seed).exponents[..., 0]
