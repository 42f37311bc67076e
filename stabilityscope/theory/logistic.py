"""Logistic-map reference: period doubling, Lyapunov exponent and the information of a cycle.

``x_{t+1} = r x_t (1 - x_t)`` is the textbook route from order to chaos (docs/science/iterated-maps.md,
the analogy used by EOC-optimality): period doublings at r = 3, 1 + sqrt 6 ~ 3.449490,
~3.544090, ~3.564407, accumulating at r_inf ~ 3.5699456 where the Lyapunov exponent
``lambda = <ln |r (1 - 2 x_t)|>`` reaches 0 from below; ``lambda(4) = ln 2``. The number of
distinct asymptotic states, ``log2(period)`` bits, is the information the orbit can hold; it
grows without bound towards the edge r_inf.

Everything is vectorised over an array of r (one Python loop over time steps only). numpy
input runs in numpy; a torch tensor runs in torch float64 on its own device (CUDA included)
and results come back as tensors.

Example::

    >>> r = np.array([2.8, 3.2, 3.5, 3.56, 3.9])
    >>> period, bits = detect_period(logistic_orbit(r))
    >>> period.tolist()
    [1, 2, 4, 8, 0]
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

__all__ = [
    "PERIOD_DOUBLINGS",
    "R_INFINITY",
    "bifurcation_data",
    "detect_period",
    "logistic_lyapunov",
    "logistic_orbit",
    "period_doubling_points",
]

ArrayLike = Union[float, np.ndarray, torch.Tensor]

R_INFINITY = 3.5699456  # accumulation point of the period doublings: onset of chaos
PERIOD_DOUBLINGS = (3.0, 1.0 + math.sqrt(6.0), 3.544090, 3.564407)  # reference r_1..r_4 (docs/science/iterated-maps.md)

_BLOCK = 1024  # time steps per block when the orbit is stored (one log/abs per block, not per step)


def _as_r(r: ArrayLike) -> tuple[np.ndarray | torch.Tensor, bool]:
    """r as a 1-D float64 array (numpy) or tensor (torch, its device); flag = torch input."""
    if isinstance(r, torch.Tensor):
        return r.detach().to(torch.float64).reshape(-1), True
    return np.asarray(r, dtype=np.float64).reshape(-1), False


def _full_like(r: np.ndarray | torch.Tensor, value: float) -> np.ndarray | torch.Tensor:
    return torch.full_like(r, value) if isinstance(r, torch.Tensor) else np.full_like(r, value)


def _advance(r, x, n: int):
    """n steps of the map, nothing stored: (n_r,) -> (n_r,)."""
    for _ in range(n):
        x = r * x * (1.0 - x)
    return x


def _record(r, x, n: int):
    """n steps, states stored: returns (x_final, orbit (n_r, n)) with orbit[:, t] = x_{t+1}."""
    if isinstance(r, torch.Tensor):
        out = torch.empty((n, r.shape[0]), dtype=torch.float64, device=r.device)  # (T, n_r): rows contiguous
    else:
        out = np.empty((n, r.shape[0]))
    for t in range(n):
        x = r * x * (1.0 - x)
        out[t] = x
    return x, out.T


def logistic_orbit(
    r: ArrayLike, x0: float = 0.5, steps: int = 256, transient: int = 20_000
) -> np.ndarray | torch.Tensor:
    """Asymptotic states of the logistic map for every r at once (bifurcation-diagram data).

    ``x0 = 1/2`` is the critical point: by Singer's theorem its orbit is attracted to the stable
    cycle whenever one exists, so it is the standard start for bifurcation diagrams (at the
    single value r = 4 it lands on the fixed point 0: 1/2 -> 1 -> 0). Near a bifurcation
    convergence is slow (the multiplier is close to -1), hence the long default transient.

    Args:
        r: parameters, any shape (flattened); numpy/float or torch.
        x0: start state, in (0, 1).
        steps: states kept after the transient.
        transient: steps discarded first.

    Returns:
        (len(r), steps) float64 states ``x_{transient+1} ... x_{transient+steps}``.
    """
    rr, is_torch = _as_r(r)
    x = _advance(rr, _full_like(rr, x0), transient)
    _, orbit = _record(rr, x, steps)
    return orbit.contiguous() if is_torch else np.ascontiguousarray(orbit)


def logistic_lyapunov(
    r: ArrayLike, x0: float = 0.3, steps: int = 100_000, transient: int = 1_000
) -> np.ndarray | torch.Tensor:
    """Lyapunov exponent ``lambda(r) = mean_t ln |r (1 - 2 x_t)|`` after a transient (nats/step).

    ``x0 = 0.3`` (not the critical point 1/2, whose orbit dies at r = 4 and whose derivative
    vanishes at superstable r). Exactly superstable orbits still give -inf (the true value).
    The error of the time average decays like 1/sqrt(steps) in chaos and like 1/steps in
    periodic windows; at r_inf convergence to 0 is slow.

    Args:
        r: parameters, any shape (flattened); numpy/float or torch.
        x0: start state, in (0, 1).
        steps: steps averaged.
        transient: steps discarded first.

    Returns:
        (len(r),) float64 exponents.
    """
    rr, is_torch = _as_r(r)
    x = _advance(rr, _full_like(rr, x0), transient)
    total = _full_like(rr, 0.0)
    done = 0
    while done < steps:
        n = min(_BLOCK, steps - done)
        x, block = _record(rr, x, n)  # (n_r, n)
        # the derivative at x_t, for t = transient+1 ... (the shift by one step is immaterial)
        deriv = (rr[:, None] * (1.0 - 2.0 * block)).abs() if is_torch else np.abs(rr[:, None] * (1.0 - 2.0 * block))
        with np.errstate(divide="ignore"):
            total = total + (deriv.log().sum(1) if is_torch else np.log(deriv).sum(1))
        done += n
    return total / steps


def detect_period(
    orbit: np.ndarray | torch.Tensor, max_period: int = 64, tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest period p <= max_period with ``|x_{t+p} - x_t| < tol`` over the whole stored orbit.

    Args:
        orbit: (n, T) asymptotic states (from :func:`logistic_orbit`), T >= 2 * max_period.
        max_period: longest period tested.
        tol: absolute tolerance (states lie in [0, 1]).

    Returns:
        ``(period, bits)``: int64 (n,) with 0 where no period <= max_period fits (chaos, a longer
        cycle or an unconverged orbit), and float64 (n,) ``log2(period)``, the information a cycle
        holds, NaN where period is 0.
    """
    x = orbit.detach().to("cpu", torch.float64).numpy() if isinstance(orbit, torch.Tensor) else np.asarray(orbit, float)
    n, t = x.shape
    if t < 2 * max_period:
        raise ValueError(f"orbit has {t} steps; need at least 2*max_period = {2 * max_period}")
    period = np.zeros(n, dtype=np.int64)
    for p in range(1, max_period + 1):
        fits = np.abs(x[:, p:] - x[:, :-p]).max(axis=1) < tol  # (n,)
        period = np.where((period == 0) & fits, p, period)
    with np.errstate(divide="ignore"):
        bits = np.where(period > 0, np.log2(np.maximum(period, 1)), np.nan)
    return period, bits


def period_doubling_points(
    n_points: int = 4,
    *,
    r_min: float = 2.9,
    r_max: float = R_INFINITY,
    n_scan: int = 512,
    n_per_round: int = 32,
    n_rounds: int = 4,
    transient: int = 100_000,
    tol: float = 1e-6,
) -> np.ndarray:
    """The first ``n_points`` period-doubling parameters r_k (period 2^(k-1) -> 2^k), numerically.

    A scan of ``n_scan`` r values brackets each r_k; then all brackets are refined together by
    multisection (``n_per_round`` points per bracket per round, one vectorised orbit each round).
    A point counts as doubled unless its detected period is <= 2^(k-1).

    Caveat: just below r_k the flip multiplier is close to -1 and the transient decays like
    ``exp(-c (r_k - r) t)``; an orbit that has not settled to within ``tol`` looks doubled, so
    estimates are biased low by about ``ln(1/tol) / (c * transient)``. The defaults keep that
    below 1e-4 for k <= 4 (tested against the reference values above to 1e-3).

    Args:
        n_points: how many doublings to locate (r_k crowd towards r_inf like 4.669^-k;
            beyond ~6 float64 and the transient no longer resolve them).
        r_min, r_max: scan interval (r_min below r_1 = 3).
        n_scan: scan resolution.
        n_per_round, n_rounds: multisection settings; final bracket = scan step / n_per_round^n_rounds.
        transient: steps discarded before detecting the period.
        tol: period-detection tolerance.

    Returns:
        (n_points,) float64 estimates (midpoints of the final brackets).
    """
    keep = 4 * 2**n_points  # room for two full periods of the longest cycle tested
    max_period = 2**n_points

    def period_of(r: np.ndarray) -> np.ndarray:
        return detect_period(logistic_orbit(r, steps=keep, transient=transient), max_period, tol)[0]

    scan = np.linspace(r_min, r_max, n_scan)
    per = period_of(scan)
    k = np.arange(1, n_points + 1)
    doubled = (per[None, :] == 0) | (per[None, :] >= 2 ** k[:, None])  # (n_points, n_scan)
    first = doubled.argmax(axis=1)  # first scan index with the doubling done
    if np.any(~doubled.any(axis=1)) or np.any(first == 0):
        raise RuntimeError("period_doubling_points: scan interval does not bracket every doubling")
    lo, hi = scan[first - 1], scan[first]
    frac = np.linspace(0.0, 1.0, n_per_round + 2)[1:-1]  # interior points of each bracket
    for _ in range(n_rounds):
        grid = lo[:, None] + (hi - lo)[:, None] * frac[None, :]  # (n_points, n_per_round)
        pg = period_of(grid.ravel()).reshape(grid.shape)
        dg = (pg == 0) | (pg >= 2 ** k[:, None])
        # first doubled point per bracket (assume one switch); none doubled -> upper end
        idx = np.where(dg.any(axis=1), dg.argmax(axis=1), n_per_round)
        edges = np.concatenate([lo[:, None], grid, hi[:, None]], axis=1)  # (n_points, n_per_round + 2)
        rows = np.arange(n_points)
        lo, hi = edges[rows, idx], edges[rows, idx + 1]
    return 0.5 * (lo + hi)


def bifurcation_data(
    r_min: float = 2.5,
    r_max: float = 4.0,
    n_r: int = 1000,
    *,
    steps: int = 200,
    transient: int = 2_000,
    x0: float = 0.5,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(r, states) for a bifurcation diagram: r (n_r,) and states (n_r, steps), numpy.

    ``device`` runs the iteration in torch there (e.g. "cuda" for very large n_r).
    """
    r = np.linspace(r_min, r_max, n_r)
    if device is not None:
        states = logistic_orbit(torch.as_tensor(r, device=device), x0, steps, transient).cpu().numpy()
    else:
        states = logistic_orbit(r, x0, steps, transient)
    return r, states
