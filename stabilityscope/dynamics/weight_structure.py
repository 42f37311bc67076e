"""Oscillation–diffusion structure in the weights (EOC-optimality v1, docs/science/weight-structure.md).

EOC-optimality v1 says fully connected layers reach the stability transition by "self-adjusting
an oscillation–diffusion process embedded in the weights". The exact definition was not
recovered, so this module implements three readings of the claim. Each is **an interpretation**,
chosen by this project, not a reproduction of the paper's definition:

1. **Mean/variance split** (interpretation 1). ``W = (J0/N)·11ᵀ + (J/√N)·G`` with ``G`` zero-mean,
   unit-variance. The rank-one mean part drives the population mean ``m_{t+1} ≈ φ(J0·m_t)``,
   which for odd φ (tanh) flips sign every step (period 2, "oscillation") when ``J0·φ'(0) < −1``;
   the random part of variance ``J²`` spreads trajectories apart ("diffusion", chaos as J grows;
   EOC-training's picture, docs/science/mean-field.md). See :func:`mean_variance_split`.
2. **Across training** (interpretation 2). The weights as a trajectory ``W(t)`` over checkpoints.
   Diffusion: the mean squared displacement ``MSD(τ) = ⟨||W(t+τ) − W(t)||²_F⟩_t`` and its growth
   exponent (1 = diffusive, 2 = ballistic; EOC-training's ``J² ∝ epoch`` is exactly diffusive
   growth of ``||W(t) − W(0)||²`` when increments are uncorrelated with ``W(0)``), and
   ``||W(t) − W(0)||_F`` (the original logged it). Oscillation: the cosine between successive
   increments (negative = oscillating) and the oscillation of ``J0(t)``. See
   :func:`mean_squared_displacement`, :func:`diffusion_exponent`, :func:`displacement_from_init`,
   :func:`increment_autocorrelation`, :func:`oscillation_of_mean`, :func:`online_step_stats`.
3. **Symmetric/antisymmetric split and spectrum** (interpretation 3). ``S = (W + Wᵀ)/2`` has a
   real spectrum (relaxation), ``A = (W − Wᵀ)/2`` an imaginary one (rotation, i.e. oscillation).
   We report ``||S||_F``, ``||A||_F``, their ratio, and the spectrum of ``W``: spectral radius vs
   spectral norm and the fraction of complex eigenvalues. For i.i.d. ``W`` with statistics
   ``(J0 = 0, J)``: ``||S|| ≈ ||A||``, spectral radius ``≈ J`` (circular law), spectral norm
   ``≈ 2J``; a mean part with ``|J0| > J`` adds one real outlier eigenvalue ``≈ J0``.
   See :func:`symmetric_antisymmetric`, :func:`eigen_summary`.

:func:`weight_structure_summary` gathers every per-matrix scalar of readings 1 and 3 under the
stable names in :data:`WEIGHT_STRUCTURE_KEYS` (HDF5 dataset names of the run trace).

Conventions: weights use torch's ``(out, in)`` layout, so ``N = fan-in = W.shape[-1]``. Every
function is batched over leading dimensions (stacks ``(..., M, N)`` of layers or checkpoints) with
tensor ops only, and follows the input's device. For a non-square ``M×N`` layer the split of
reading 1 still applies, but the statistics then describe the *mean-field surrogate* (a random
square ``N×N`` matrix with the same entry statistics, docs/science/mean-field.md), not an iterated map of the layer.

Example::

    >>> W = torch.randn(784, 784) * 0.5 / 784**0.5    # J = 0.5, J0 = 0
    >>> s = weight_structure_summary(W)
    >>> float(s["spectral_radius"])                    # ≈ 0.5 (circular law)

Cost (measured on 2 idle CPU cores, torch 2.14 + MKL): ``torch.linalg.eigvals`` of a 784×784
matrix takes ≈ 0.31 s in float64 (≈ 0.22 s in float32), 1000×1000 ≈ 0.53 s in float64; the
spectral norm (``svdvals``) ≈ 0.09 s. Everything else is negligible. Caveat: when other processes
load the cores, MKL's multithreaded eigensolver degrades badly (measured 1.6–4 s for 784×784 and
13–40 s for 1000×1000 with 2 threads, against 0.7 s and ≈ 1 s with ``torch.set_num_threads(1)``);
this module leaves the thread count to the caller.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "WEIGHT_STRUCTURE_KEYS",
    "ONLINE_STEP_KEYS",
    "MeanVarianceSplit",
    "MSDResult",
    "IncrementAutocorrelation",
    "MeanOscillation",
    "SymAntisymSplit",
    "EigenSummary",
    "mean_variance_split",
    "mean_squared_displacement",
    "diffusion_exponent",
    "displacement_from_init",
    "increment_autocorrelation",
    "oscillation_of_mean",
    "online_step_stats",
    "symmetric_antisymmetric",
    "eigen_summary",
    "spectral_radius",
    "estimate_spectral_radius",
    "SpectralRadius",
    "RADIUS_METHODS",
    "weight_structure_summary",
]

#: Keys of :func:`weight_structure_summary`, in a fixed order (HDF5 dataset names).
WEIGHT_STRUCTURE_KEYS: tuple[str, ...] = (
    "j0",
    "j",
    "mean_part_norm",
    "random_part_norm",
    "mean_to_random_ratio",
    "mean_map_multiplier",
    "mean_map_oscillates",
    "sym_norm",
    "antisym_norm",
    "antisym_ratio",
    "spectral_radius",
    "spectral_norm",
    "complex_fraction",
)

#: Keys of :func:`online_step_stats`, in a fixed order (HDF5 dataset names).
ONLINE_STEP_KEYS: tuple[str, ...] = (
    "displacement_from_init",
    "step_displacement",
    "increment_cosine",
)


def _check_matrix(W: Tensor, name: str = "W") -> None:
    if W.ndim < 2:
        raise ValueError(f"{name} must have shape (..., M, N); got {tuple(W.shape)}")


def _check_square(W: Tensor) -> None:
    _check_matrix(W)
    if W.shape[-1] != W.shape[-2]:
        raise ValueError(
            f"reading 3 (symmetric/antisymmetric split, eigenvalues) needs square matrices; "
            f"got (..., {W.shape[-2]}, {W.shape[-1]}). Non-square layers have no iterated map "
            "(docs/science/iterated-maps.md)."
        )


def _float(W: Tensor) -> Tensor:
    return W if W.is_floating_point() else W.to(torch.get_default_dtype())


# ---------------------------------------------------------------------------------------------
# Interpretation 1: mean/variance split
# ---------------------------------------------------------------------------------------------


@dataclass
class MeanVarianceSplit:
    """``W = (J0/N)·11ᵀ + (J/√N)·G``: interpretation 1 of EOC-optimality v1. Tensors of shape (...)."""

    J0: Tensor  # mean(W)·N: coupling of the rank-one mean part (docs/science/mean-field.md)
    J: Tensor  # std(W)·√N (population std): strength of the random part (docs/science/mean-field.md)
    mean_part_norm: Tensor  # ||(J0/N)·11ᵀ||_F = |J0|·√(M/N); rank one, so also its spectral norm
    random_part_norm: Tensor  # ||W − (J0/N)·11ᵀ||_F = J·√M
    mean_to_random_ratio: Tensor  # mean_part_norm / random_part_norm = |J0|/(J·√N); inf/NaN if J = 0
    mean_map_multiplier: Tensor  # J0·φ'(0): slope of the linearised mean map m ↦ φ(J0·m) at m = 0
    mean_map_oscillates: Tensor  # bool: multiplier < −1, sustained period-2 flip of the mean


def mean_variance_split(W: Tensor, phi_slope_at_zero: float = 1.0) -> MeanVarianceSplit:
    """Split ``W`` into its rank-one mean part and its random part (an interpretation of v1).

    Interpretation 1 of the oscillation–diffusion claim of EOC-optimality v1 (docs/science/weight-structure.md),
    using the coordinates of EOC-training (docs/science/mean-field.md): ``J0 = mean(W)·N``, ``J = std(W)·√N``.
    The mean part alone gives the population-mean map ``m_{t+1} ≈ φ(J0·m_t)``. Its slope at
    ``m = 0`` is ``J0·φ'(0)``: below −1 the zero mean is unstable with a negative multiplier, so
    for odd φ (tanh) the mean settles on a period-2 orbit that flips sign every step (the
    "oscillation"); between −1 and 0 the flips are damped. The multiplier is the paramagnetic
    (q = 0) linearisation; when the random part is strong (q > 0) the effective slope
    ``J0·⟨φ'(h)⟩`` is smaller in magnitude, so the flag is then optimistic. The phase diagram of
    docs/science/mean-field.md states the period-2 region as ``J0/J < −1``, which matches at the edge ``J = 1``.
    For non-odd φ (ReLU) the flag has no meaning.

    For a non-square ``M×N`` layer the split still holds entrywise, but ``J0``, ``J`` and the
    mean-map quantities describe the mean-field surrogate (square ``N×N`` random matrix with the
    same entry statistics), since a non-square layer cannot be iterated.

    Args:
        W: weights ``(..., M, N)``, torch layout ``(out, in)``; ``N`` = fan-in.
        phi_slope_at_zero: ``φ'(0)`` of the activation (1 for tanh).

    Returns:
        A :class:`MeanVarianceSplit` of tensors with shape ``W.shape[:-2]``. ``J = 0`` (e.g. a
        zero-initialised head) gives an infinite or NaN ratio with a warning, never an exception.
    """
    _check_matrix(W)
    W = _float(W)
    M, N = W.shape[-2], W.shape[-1]
    flat = W.flatten(-2)  # (..., M·N)
    mean = flat.mean(-1)
    std = flat.std(-1, correction=0)  # population std: G then has exactly mean 0, variance 1
    J0 = mean * N
    J = std * math.sqrt(N)
    mean_part_norm = J0.abs() * math.sqrt(M / N)  # |J0|/N · ||11ᵀ||_F, ||11ᵀ||_F = √(MN)
    random_part_norm = std * math.sqrt(M * N)  # ||W − mean||_F exactly (population std)
    if bool((random_part_norm == 0).any()):
        warnings.warn(
            "mean_variance_split: a matrix has J = 0 (constant entries); mean_to_random_ratio is "
            "inf or NaN for it.",
            RuntimeWarning,
            stacklevel=2,
        )
    multiplier = J0 * phi_slope_at_zero
    return MeanVarianceSplit(
        J0=J0,
        J=J,
        mean_part_norm=mean_part_norm,
        random_part_norm=random_part_norm,
        mean_to_random_ratio=mean_part_norm / random_part_norm,
        mean_map_multiplier=multiplier,
        mean_map_oscillates=multiplier < -1.0,
    )


# ---------------------------------------------------------------------------------------------
# Interpretation 2: the weights as a trajectory over training
# ---------------------------------------------------------------------------------------------


class MSDResult(NamedTuple):
    """Mean squared displacement; unpacks as ``lags, msd``."""

    lags: Tensor  # (L,) float64, in epochs (checkpoint index steps if no epochs were given)
    msd: Tensor  # (..., L) ⟨||W(t+τ) − W(t)||²_F⟩ over pairs at lag τ; NaN where no pair exists


def _pairwise_sq_distances(weights: Tensor, dtype: torch.dtype | None) -> Tensor:
    """``||W_i − W_j||²_F`` for all checkpoint pairs from one Gram matmul: (T, ..., M, N) → (..., T, T)."""
    X = _float(weights).flatten(-2).movedim(0, -2)  # (..., T, M·N)
    if dtype is not None:
        X = X.to(dtype)
    # Centre on the time mean first: distances are translation invariant, and the Gram identity
    # g_ii + g_jj − 2 g_ij cancels catastrophically when ||W|| ≫ ||W_i − W_j|| (small steps).
    X = X - X.mean(-2, keepdim=True)
    gram = X @ X.mT  # (..., T, T)
    sq = gram.diagonal(dim1=-2, dim2=-1)  # (..., T)
    return (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * gram).clamp_min(0)


def mean_squared_displacement(
    weights: Tensor,
    lags: Sequence[float] | Tensor | None = None,
    epochs: Sequence[float] | Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> MSDResult:
    """Mean squared displacement of a weight trajectory (an interpretation of v1's "diffusion").

    Interpretation 2 of EOC-optimality v1 (docs/science/weight-structure.md):
    ``MSD(τ) = ⟨||W(t+τ) − W(t)||²_F⟩_t``,
    averaged over all checkpoint pairs whose epochs differ by ``τ``. All pairwise distances come
    from one Gram matmul, ``||W_i − W_j||² = g_ii + g_jj − 2 g_ij``, and are binned by lag with a
    scatter-add: no loop over t or over lags. Cost is ``T²·M·N`` multiply-adds and a ``(T, M·N)``
    copy of the trajectory. Irregular checkpoint spacing is handled exactly (pairs are matched
    on their epoch difference, rounded to 9 decimals); lags with no pair get NaN. Large lags
    rest on few pairs and are noisy: fit exponents over ``τ ≲ T/4``.

    Args:
        weights: trajectory ``(T, ..., M, N)``, checkpoints along dim 0.
        lags: distinct lags in epochs (or index steps without ``epochs``); default: every distinct
            positive epoch difference (``1 … T−1`` for evenly spaced checkpoints).
        epochs: 1-D, strictly increasing checkpoint epochs, length ``T``; default ``0 … T−1``.
        dtype: compute dtype for the Gram matrix (default: the input's); float64 is safer for
            long float32 trajectories with tiny steps but doubles the copy.

    Returns:
        :class:`MSDResult` ``(lags (L,), msd (..., L))``.
    """
    _check_matrix(weights, "weights")
    if weights.ndim < 3:
        raise ValueError(f"weights must be (T, ..., M, N); got {tuple(weights.shape)}")
    T, device = weights.shape[0], weights.device
    ep = _epochs(epochs, T, device)
    dist = _pairwise_sq_distances(weights, dtype)  # (..., T, T)
    i, j = torch.triu_indices(T, T, offset=1, device=device)  # (P,) each, i < j
    pair_lag = torch.round(ep[j] - ep[i], decimals=9)  # (P,)
    if lags is None:
        lag_values = torch.unique(pair_lag)  # sorted
    else:
        lag_values = torch.round(
            torch.as_tensor(lags, dtype=torch.float64, device=device).flatten(), decimals=9
        )
    # Slot of each pair among the requested lags (slot L: not requested, dropped). searchsorted
    # needs sorted keys, so sort the requested lags and map back through `order`.
    L = len(lag_values)
    pair_d = dist[..., i, j]  # (..., P)
    if L == 0 or pair_d.shape[-1] == 0:
        return MSDResult(lags=lag_values, msd=pair_d.new_full((*pair_d.shape[:-1], L), torch.nan))
    order = torch.argsort(lag_values)
    sorted_lags = lag_values[order]
    pos = torch.searchsorted(sorted_lags, pair_lag).clamp_max(L - 1)
    hit = sorted_lags[pos] == pair_lag
    slot = order[pos]  # (P,) slot in lag_values
    sums = torch.zeros(*pair_d.shape[:-1], L + 1, dtype=pair_d.dtype, device=device)
    slot = torch.where(hit, slot, torch.full_like(slot, L))  # unrequested pairs go to a dump slot
    sums.scatter_add_(-1, slot.expand_as(pair_d), pair_d)
    counts = torch.bincount(slot, minlength=L + 1).to(pair_d.dtype)  # (L+1,)
    msd = sums[..., :L] / counts[:L]  # 0/0 → NaN for lags without pairs
    return MSDResult(lags=lag_values, msd=msd)


def _epochs(epochs: Sequence[float] | Tensor | None, T: int, device: torch.device) -> Tensor:
    if epochs is None:
        return torch.arange(T, dtype=torch.float64, device=device)
    ep = torch.as_tensor(epochs, dtype=torch.float64, device=device).flatten()
    if ep.numel() != T:
        raise ValueError(f"epochs has {ep.numel()} entries for {T} checkpoints")
    if T > 1 and not bool((ep[1:] > ep[:-1]).all()):
        raise ValueError("epochs must be strictly increasing")
    return ep


def diffusion_exponent(
    lags: Tensor,
    msd: Tensor,
    min_lag: float | None = None,
    max_lag: float | None = None,
) -> Tensor:
    """Growth exponent α of ``MSD(τ) ∝ τ^α`` from a log–log least-squares fit (interpretation 2).

    ``α = 1`` is diffusive (a random walk; EOC-training's ``J² ∝ epoch`` is this), ``α = 2``
    ballistic (steady drift), ``α < 1`` sub-diffusive (confined, e.g. under weight decay at the
    ``J²`` plateau). A drift plus noise crosses over from 1 to 2, so the fitted window matters:
    restrict it with ``min_lag``/``max_lag`` (``τ ≲ T/4`` keeps enough pairs per lag).
    Lags with non-finite or non-positive MSD are left out of the fit.

    Args:
        lags: ``(L,)`` lags, as returned by :func:`mean_squared_displacement`.
        msd: ``(..., L)`` mean squared displacements.
        min_lag: smallest lag in the fit (inclusive).
        max_lag: largest lag in the fit (inclusive).

    Returns:
        Tensor of shape ``msd.shape[:-1]``; NaN where fewer than two points are usable.
    """
    lags = torch.as_tensor(lags, device=msd.device)
    x = torch.log(lags.to(torch.float64)).expand(msd.shape)  # (..., L)
    y = torch.log(msd.to(torch.float64))
    use = torch.isfinite(y) & torch.isfinite(x) & (lags > 0)
    if min_lag is not None:
        use = use & (lags >= min_lag)
    if max_lag is not None:
        use = use & (lags <= max_lag)
    w = use.to(torch.float64)
    n = w.sum(-1, keepdim=True)
    x = torch.where(use, x, 0.0)
    y = torch.where(use, y, 0.0)
    xm = (w * x).sum(-1, keepdim=True) / n
    ym = (w * y).sum(-1, keepdim=True) / n
    sxy = (w * (x - xm) * (y - ym)).sum(-1)
    sxx = (w * (x - xm) ** 2).sum(-1)
    slope = sxy / sxx
    slope = torch.where(n.squeeze(-1) >= 2, slope, torch.nan)
    return slope.to(msd.dtype if msd.is_floating_point() else torch.float64)


def displacement_from_init(weights: Tensor) -> Tensor:
    """``||W(t) − W(0)||_F`` per checkpoint (interpretation 2; the original logged it).

    Args:
        weights: trajectory ``(T, ..., M, N)``.

    Returns:
        ``(T, ...)``; entry 0 is 0.
    """
    _check_matrix(weights, "weights")
    weights = _float(weights)
    return torch.linalg.matrix_norm(weights - weights[:1])  # Frobenius over (M, N)


class IncrementAutocorrelation(NamedTuple):
    """Cosines of successive weight increments; unpacks as ``cosine, mean``."""

    cosine: Tensor  # (T−1−lag, ...) cos(ΔW_t, ΔW_{t+lag}), NaN where an increment is zero
    mean: Tensor  # (...) nan-mean over t


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between matrices over the last two dims; NaN when either is zero: (..., M, N) → (...)."""
    dot = (a * b).sum((-2, -1))
    norms = torch.linalg.matrix_norm(a) * torch.linalg.matrix_norm(b)
    return torch.where(norms > 0, dot / norms, torch.nan)


def increment_autocorrelation(weights: Tensor, lag: int = 1) -> IncrementAutocorrelation:
    """Cosine between weight increments ``lag`` steps apart (interpretation 2's "oscillation").

    With ``ΔW_t = W(t+1) − W(t)``, returns ``cos(ΔW_t, ΔW_{t+lag})`` (uncentred, over all entries).
    Negative means the weights step back and forth (oscillation), ≈ 0 a random walk (diffusion),
    positive a persistent drift. Cosines ignore step size, so irregular checkpoint spacing
    changes what "successive" means but not the scale.

    Args:
        weights: trajectory ``(T, ..., M, N)``, ``T ≥ lag + 2``.
        lag: distance between the increments compared.

    Returns:
        :class:`IncrementAutocorrelation` ``(cosine (T−1−lag, ...), mean (...))``.
    """
    _check_matrix(weights, "weights")
    if lag < 1 or weights.shape[0] < lag + 2:
        raise ValueError(
            f"need lag ≥ 1 and at least lag + 2 checkpoints; got lag={lag}, T={weights.shape[0]}"
        )
    weights = _float(weights)
    inc = weights[1:] - weights[:-1]  # (T−1, ..., M, N)
    cos = _cosine(inc[:-lag], inc[lag:])  # (T−1−lag, ...)
    return IncrementAutocorrelation(cosine=cos, mean=cos.nanmean(0))


class MeanOscillation(NamedTuple):
    """Oscillation of ``J0(t)``; unpacks as ``sign_change_fraction, increment_autocorrelation``."""

    # (...) share of t with ΔJ0_t·ΔJ0_{t+1} < 0: 1 alternating, ½ random walk, 0 monotone
    sign_change_fraction: Tensor
    increment_autocorrelation: Tensor  # (...) lag-1 sample autocorrelation of ΔJ0 (mean removed)


def oscillation_of_mean(J0_series: Tensor) -> MeanOscillation:
    """How much the mean coupling ``J0(t)`` oscillates over training (interpretation 2).

    From the increments ``ΔJ0_t = J0(t+1) − J0(t)``: the fraction of successive increments that
    change sign, and the lag-1 sample autocorrelation
    ``r1 = Σ_t (ΔJ0_t − m)(ΔJ0_{t+1} − m) / Σ_t (ΔJ0_t − m)²`` (m the mean increment; centring
    keeps a steady drift of ``J0`` from counting as correlation). A perfect alternation gives
    ``r1 = −(n−1)/n`` for ``n`` increments, a random walk ≈ 0. Get the series from
    ``mean_variance_split(weights).J0`` on a ``(T, M, N)`` trajectory.

    Args:
        J0_series: ``(T, ...)``, checkpoints along dim 0, ``T ≥ 3``.

    Returns:
        :class:`MeanOscillation` of tensors with shape ``J0_series.shape[1:]``; the autocorrelation
        is NaN for constant increments.
    """
    J0_series = _float(torch.as_tensor(J0_series))
    if J0_series.shape[0] < 3:
        raise ValueError(f"need at least 3 checkpoints; got {J0_series.shape[0]}")
    d = J0_series[1:] - J0_series[:-1]  # (T−1, ...)
    flips = (d[:-1] * d[1:] < 0).to(d.dtype).mean(0)
    dc = d - d.mean(0, keepdim=True)
    r1 = (dc[:-1] * dc[1:]).sum(0) / (dc**2).sum(0)
    return MeanOscillation(sign_change_fraction=flips, increment_autocorrelation=r1)


def online_step_stats(
    W_t: Tensor,
    W_prev: Tensor | None,
    W_init: Tensor | None,
    prev_increment: Tensor | None,
) -> dict[str, Tensor]:
    """Trajectory statistics for one training step/checkpoint, without storing the trajectory.

    The online form of interpretation 2: only the current, previous and initial matrices and the
    previous increment are needed. Keep ``W_t − W_prev`` as the next call's ``prev_increment``.
    Values equal the offline functions: ``displacement_from_init`` matches
    :func:`displacement_from_init` at t, ``step_displacement²`` is the lag-1 term of the MSD, and
    ``increment_cosine`` at t equals ``increment_autocorrelation(...).cosine[t − 2]``.

    Args:
        W_t: current weights ``(..., M, N)``.
        W_prev: previous checkpoint, or None at the first one.
        W_init: initial weights ``W(0)``, or None (``displacement_from_init`` is then NaN).
        prev_increment: ``W_prev − W_prevprev``, or None when not yet available.

    Returns:
        Dict keyed by :data:`ONLINE_STEP_KEYS`, each of shape ``W_t.shape[:-2]``:
        ``displacement_from_init`` ``||W_t − W_init||_F``; ``step_displacement``
        ``||W_t − W_prev||_F`` (NaN without ``W_prev``); ``increment_cosine``
        ``cos(W_t − W_prev, prev_increment)`` (NaN when unavailable or an increment is zero).
    """
    _check_matrix(W_t, "W_t")
    W_t = _float(W_t)
    batch = W_t.shape[:-2]
    nan = torch.full(batch, torch.nan, dtype=W_t.dtype, device=W_t.device)
    out = {"displacement_from_init": nan.clone() if W_init is None else torch.linalg.matrix_norm(W_t - W_init)}
    if W_prev is None:
        out["step_displacement"] = nan
        out["increment_cosine"] = nan.clone()
        return out
    inc = W_t - W_prev
    out["step_displacement"] = torch.linalg.matrix_norm(inc)
    out["increment_cosine"] = nan.clone() if prev_increment is None else _cosine(inc, prev_increment)
    return out


# ---------------------------------------------------------------------------------------------
# Interpretation 3: symmetric/antisymmetric split and spectrum
# ---------------------------------------------------------------------------------------------


class SymAntisymSplit(NamedTuple):
    """``||S||_F, ||A||_F`` and ``||A||/||S||``; unpacks as ``sym_norm, antisym_norm, antisym_ratio``."""

    sym_norm: Tensor  # (...) ||(W + Wᵀ)/2||_F: real-spectrum (relaxation) part
    antisym_norm: Tensor  # (...) ||(W − Wᵀ)/2||_F: imaginary-spectrum (rotation) part
    antisym_ratio: Tensor  # (...) ||A||/||S||: ≈ 1 i.i.d., 0 symmetric, inf antisymmetric


def symmetric_antisymmetric(W: Tensor) -> SymAntisymSplit:
    """Norms of the symmetric and antisymmetric parts of square ``W`` (an interpretation of v1).

    Interpretation 3 of EOC-optimality v1 (docs/science/weight-structure.md): ``S = (W + Wᵀ)/2`` has a real
    spectrum (relaxation), ``A = (W − Wᵀ)/2`` an imaginary one (rotation). Since
    ``||W||² = ||S||² + ||A||²``, the ratio measures the share of rotation. For i.i.d. entries,
    ``E||S||² / E||A||² = (N+1)/(N−1)`` (the diagonal is all symmetric), so the ratio ≈ 1. The
    rank-one mean part ``(J0/N)·11ᵀ`` is symmetric and adds only to ``||S||``.

    Args:
        W: square weights ``(..., N, N)``.

    Returns:
        :class:`SymAntisymSplit` of tensors with shape ``W.shape[:-2]``.
    """
    _check_square(W)
    W = _float(W)
    Wt = W.mT
    sym = torch.linalg.matrix_norm((W + Wt) / 2)
    antisym = torch.linalg.matrix_norm((W - Wt) / 2)
    return SymAntisymSplit(sym_norm=sym, antisym_norm=antisym, antisym_ratio=antisym / sym)


@dataclass
class EigenSummary:
    """Spectrum of square ``W`` (interpretation 3 of EOC-optimality v1). Tensors of shape (...)."""

    spectral_radius: Tensor  # max |λ(W)|: ≈ J for i.i.d. W (circular law), linear stability of x ↦ Wx
    spectral_norm: Tensor  # largest singular value: ≈ 2J for square Gaussian W; ≥ spectral radius
    complex_fraction: Tensor  # share of eigenvalues with |Im λ| > tol·radius (rotation modes)
    eigenvalues: Tensor | None = None  # (..., N) complex, only with return_eigenvalues=True


def eigen_summary(
    W: Tensor,
    return_eigenvalues: bool = False,
    tol: float | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> EigenSummary:
    """Spectral radius, spectral norm and complex-eigenvalue share of square ``W`` (interpretation 3).

    For i.i.d. ``W`` with statistics ``(J0 = 0, J)`` the eigenvalues fill the disc of radius ``J``
    (circular law; finite N pulls the edge in by O(N^{-1/2})), the spectral norm is ≈ ``2J``,
    and all but ≈ ``√(2N/π)`` eigenvalues are complex. A mean part with ``|J0| > J`` adds one real
    outlier ≈ ``J0``, which then sets the radius. The gap between spectral norm and radius
    measures non-normality (transient growth); they coincide for normal matrices.

    Eigenvalues come from ``torch.linalg.eigvals`` (LAPACK geev, batched; on CUDA torch runs it
    through MAGMA/cuSOLVER with a host sync). Cost on 2 CPU cores: ≈ 0.31 s for one 784×784
    matrix in float64. LAPACK returns exactly real eigenvalues for most real ones, but a
    near-degenerate real pair can be split by rounding into a complex pair with
    ``|Im λ| ~ √eps·||W||`` (perturbation ``eps`` of a Jordan-like block moves eigenvalues by
    ``√eps``). Hence the default ``tol = √eps`` of the compute dtype (1.5e-8 in float64,
    3.5e-4 in float32), relative to the spectral radius.

    Args:
        W: square weights ``(..., N, N)``.
        return_eigenvalues: also return the eigenvalues (complex, unsorted).
        tol: relative threshold on ``|Im λ| / radius`` for "complex"; default ``√eps``.
        dtype: compute dtype (default float64 for stability; None keeps the input's).

    Returns:
        :class:`EigenSummary`; scalar fields in the input's float dtype, shape ``W.shape[:-2]``.
    """
    _check_square(W)
    W = _float(W)
    out_dtype = W.dtype
    Wc = W if dtype is None else W.to(dtype)
    if tol is None:
        tol = math.sqrt(torch.finfo(Wc.dtype).eps)
    # LAPACK's geev/gesdd crash the process on NaN/inf entries (MKL: "Parameter 3 was incorrect on
    # entry to SGEBAL", then a segfault): a matrix with non-finite entries gets NaN, the rest its values.
    finite = Wc.isfinite().all(-1).all(-1)  # (...)
    Wc = torch.where(finite[..., None, None], Wc, 0)
    eig = torch.linalg.eigvals(Wc)  # (..., N) complex
    eig = torch.where(finite[..., None], eig, torch.full_like(eig, complex(math.nan, math.nan)))
    radius = eig.abs().amax(-1)  # (...)
    is_complex = eig.imag.abs() > tol * radius.unsqueeze(-1)  # (..., N)
    norm2 = _spectral_norm(Wc).masked_fill(~finite, math.nan)  # largest singular value
    return EigenSummary(
        spectral_radius=radius.to(out_dtype),
        spectral_norm=norm2.to(out_dtype),
        complex_fraction=is_complex.to(out_dtype).mean(-1).masked_fill(~finite, math.nan),
        eigenvalues=eig if return_eigenvalues else None,
    )


def _spectral_norm(W: Tensor) -> Tensor:
    """σ_max(W) = sqrt(λ_max(WᵀW)) of square W (..., N, N), by eigvalsh of the Gram matrix.

    About half the cost of singular values (one GEMM, a symmetric tridiagonal reduction and its
    eigenvalues: 31 against 60 ms for 784×784 in float32). Squaring the condition number harms only the
    small singular values: forming WᵀW moves λ_max by at most ~N·eps·σ_max² and eigvalsh adds
    eps·σ_max², so σ_max is relatively accurate to ≲ N·eps/2 (≈ 2e-5 in float32 at N = 784, typically
    sqrt(N)·eps), against eps for the SVD.
    """
    return torch.linalg.eigvalsh(W.mT @ W)[..., -1].clamp_min(0).sqrt()


def spectral_radius(W: Tensor, dtype: torch.dtype | None = torch.float32) -> Tensor:
    """``max |λ(W)|`` of square ``W`` (..., N, N), shape (...); NaN for a matrix with non-finite entries.

    The eigenvalues alone, in ``dtype`` (float32 by default: about half the float64 cost, and the
    radius needs no more than float32's ~1e-6 relative accuracy to place a layer on the phase
    diagram). :func:`eigen_summary` gives the spectral norm and complex fraction as well.
    """
    _check_square(W)
    W = _float(W)
    Wc = W if dtype is None else W.to(dtype)
    finite = Wc.isfinite().all(-1).all(-1)  # LAPACK's geev crashes on NaN/inf (see eigen_summary)
    radius = torch.linalg.eigvals(torch.where(finite[..., None, None], Wc, 0)).abs().amax(-1)
    return radius.masked_fill(~finite, math.nan).to(W.dtype)


#: Which computation produced a spectral radius (the trace's layer attribute and inspect's ``radius_method``):
#: ``exact`` the full eigendecomposition (LAPACK geev), ``filtered`` the checked filtered Rayleigh–Ritz
#: estimate of :func:`estimate_spectral_radius`.
RADIUS_METHODS: tuple[str, ...] = ("exact", "filtered")
RADIUS_RTOL = 1e-3  # default accepted relative residual of a filtered radius (its stated accuracy, see below)
FILTER_MIN_N = 256  # below this N the full decomposition is cheap (≲ 10 ms) and is always used
FILTER_DEGREES = (128, 512)  # the filter's degree m: checked at m = 128, then (where that fails) at 512
FILTER_BLOCK = 32  # p: columns of the filtered block
FILTER_KRYLOV = 2  # s: block-Krylov steps A·K, A²·K added to the filtered block before Rayleigh–Ritz


class SpectralRadius(NamedTuple):
    """A spectral radius and how it was obtained; unpacks as ``radius, method, residual``."""

    radius: Tensor  # (...) max |λ(W)|, in W's float dtype; NaN for a matrix with non-finite entries
    method: Tensor  # (...) int64 index into RADIUS_METHODS
    residual: Tensor  # (...) relative residual ||W x − θ x|| / (|θ| ||x||) of the accepted estimate; NaN if exact


def _orthonormal(X: Tensor) -> Tensor:
    """An orthonormal basis of the columns of X (..., N, k), k ≤ N (Householder QR, reduced)."""
    return torch.linalg.qr(X)[0]


def _filtered_ritz(A: Tensor, Y: Tensor, krylov: int) -> tuple[Tensor, Tensor]:
    """The largest-modulus Ritz value of A on span{Y, A Y, …, A^s Y} and its relative residual.

    A (L, N, N), Y (L, N, p) float: the filtered block. Returns |θ| (L,) and ||A x − θ x|| / (|θ| ||x||)
    (L,), float64. The residual comes from A V (already formed for H = Vᵀ A V): r = (A V) y − θ V y, so it
    costs no extra product with A.
    """
    K = _orthonormal(Y)  # (L, N, p): the filter's dominant directions
    blocks = [K]
    for _ in range(krylov):
        blocks.append(A @ blocks[-1])
    V = _orthonormal(torch.cat(blocks, -1))  # (L, N, k), k = p·(s + 1)
    AV = A @ V  # (L, N, k)
    H = (V.mT @ AV).double()  # (L, k, k) Rayleigh quotient
    theta, Yh = torch.linalg.eig(H)  # (L, k), (L, k, k) complex128
    top = theta.abs().argmax(-1)  # (L,)
    th = theta.gather(-1, top[:, None])[:, 0]  # (L,)
    y = Yh.gather(-1, top[:, None, None].expand(-1, Yh.shape[-2], 1))  # (L, k, 1), unit norm
    Vc, AVc = V.double().to(y.dtype), AV.double().to(y.dtype)
    r = AVc @ y - th[:, None, None] * (Vc @ y)  # (L, N, 1)
    return th.abs(), r.norm(dim=(-2, -1)) / (th.abs() * y.norm(dim=(-2, -1))).clamp_min(torch.finfo(torch.float64).tiny)


def _filter_squarings(n: int, degree: int, p: int) -> int:
    """How many squarings a make P = A^(2^a) for the filter A^m Ω = P^(m/2^a) Ω at the least arithmetic.

    a squarings cost a·2N³, the m/2^a block products with P cost (m/2^a)·2N²p: their sum is least at
    2^a = m·p·ln 2 / N (N = 768, m = 128, p = 32: a = 2), rounded, so that 2^a divides m.
    """
    best = round(math.log2(max(degree * p * math.log(2) / n, 1.0)))
    return min(best, int(math.log2(degree & -degree)))


def estimate_spectral_radius(W: Tensor, rtol: float = RADIUS_RTOL, method: str = "auto",
                             dtype: torch.dtype = torch.float32, seed: int = 0) -> SpectralRadius:
    """``max |λ(W)|`` of square ``W`` (..., N, N), by a checked filtered estimate or the full decomposition.

    ``method="exact"`` takes every eigenvalue (LAPACK geev, :func:`spectral_radius`). ``"auto"``
    (default) does so for N < ``FILTER_MIN_N`` and otherwise first tries a filtered estimate, batched
    over the stack:

    1. **Filter**: ``Y = (W/||W||)^m Ω`` (Ω a seeded Gaussian N×p block, p = 32), m = 128: a squarings
       make ``P = (W/||W||)^(2^a)`` (a = 2 for N = 768, :func:`_filter_squarings`), then m/2^a thin
       products ``Y ← P Y`` with the columns rescaled (GEMMs only). Directions with ``|λ| < ρ`` shrink
       against the top one by ``(|λ|/ρ)^m``: z^m is the optimal polynomial filter for a spectrum filling
       a disc (the circular law of random layers), where Krylov methods (Arnoldi/ARPACK) gain nothing
       and converge to *an* eigenvalue near the circle, not necessarily the largest: ARPACK with k = 1
       was off by up to 2.4% on ViT-B layers. In exact arithmetic Y equals ``W^m Ω`` formed by log₂ m
       squarings; the thin products reach it at about half the arithmetic.
    2. **Rayleigh–Ritz** on ``span{Y, W Y, W² Y}``: the largest-modulus eigenvalue θ of ``Vᵀ W V``
       (V an orthonormal basis) and its Ritz vector x.
    3. **Check**: the relative residual ``η = ||W x − θ x|| / (|θ| ||x||)``. θ is an exact eigenvalue
       of ``W − r xᵀ/||x||²``, a matrix within ``η·|θ|`` of W (backward error), so θ is within
       ``κ(λ)·η·|θ|`` of an eigenvalue λ of W to first order, κ(λ) = 1/|yᴴx| its condition number
       (exactly, for any θ, when W is normal: Bauer–Fike). θ is accepted when ``η ≤ rtol`` at
       m = 128, or else at m = 512; the rest falls back to the full decomposition.

    Stated accuracy: ``|ρ̂ − |λ|| ≤ κ(λ)·rtol·ρ̂`` to first order for the eigenvalue λ found; that λ is
    the largest because the filter has amplified it by ``(|λ|/|λ'|)^m`` over any λ' outside the
    subspace, so a larger λ' would dominate ``Y`` (unless Ω is nearly orthogonal to its left
    eigenvector, probability ~0 for a Gaussian block of 32 columns). This is an argument, not a
    bound: the tests measure the error against the full decomposition on random (Ginibre) matrices,
    crowded normal spectra, triangular, rotation-block and low-rank-plus-noise matrices.
    The full decomposition itself is accurate to ``κ(λ)·eps·||W||``.

    Cost (N = 768, float32, one core; docs: Performance → Against WeightWatcher): two squarings (2N³
    each) and 32 thin products (2N²p each), the Rayleigh–Ritz step a few thin products and a 96×96
    eigenproblem; on the 48 square maps of a ViT-B/16 at initialisation every one passed the check at
    m = 128 (largest η 1·10⁻⁴). Where the check fails (a unitary-like spectrum with all |λ| equal,
    ties the filter cannot separate: the cyclic permutation; a defective or highly non-normal top) the
    full decomposition is paid on top.

    Args:
        W: square weights ``(..., N, N)``.
        rtol: accepted relative residual η (the stated accuracy for well-conditioned eigenvalues).
        method: "auto" (filtered where N ≥ FILTER_MIN_N, checked, with fall-back) or "exact".
        dtype: compute dtype of the filter and of the full decomposition (float32: GEMM speed; the
            residual floor is then ~sqrt(N)·eps32·||W||/ρ ≈ 1e-5, below the default rtol).
        seed: seeds Ω.

    Returns:
        :class:`SpectralRadius` of tensors with shape ``W.shape[:-2]``.
    """
    if method not in ("auto", "exact"):
        raise ValueError(f"method must be 'auto' or 'exact', got {method!r}")
    if not rtol > 0:
        raise ValueError(f"rtol must be > 0, got {rtol!r}")
    _check_square(W)
    W = _float(W)
    lead, N = W.shape[:-2], W.shape[-1]
    A = W.to(dtype).reshape(-1, N, N)  # (L, N, N)
    L = A.shape[0]
    # LAPACK's geev crashes on NaN/inf (see eigen_summary). A finite Frobenius norm proves a matrix finite,
    # one pass and no (L, N, N) mask; only a matrix whose norm is not finite is checked entry by entry
    scale = torch.linalg.matrix_norm(A)  # (L,)
    finite = scale.isfinite()
    for i in (~finite).nonzero()[:, 0].tolist():
        finite[i] = A[i].isfinite().all()
    if not bool(finite.all()):
        A = torch.where(finite[:, None, None], A, 0)
    radius = torch.full((L,), math.nan, dtype=torch.float64, device=A.device)
    residual = radius.clone()
    filtered = torch.zeros(L, dtype=torch.bool, device=A.device)
    if method == "auto" and N >= FILTER_MIN_N:
        todo = (scale.isfinite() & (scale > 0)).nonzero()[:, 0]  # a zero matrix goes to geev (radius 0); one
        # with finite entries but a norm past float range (|w| ≳ 1e19) too
        if len(todo):
            gen = torch.Generator(device=A.device).manual_seed(seed)
            omega = torch.randn(N, FILTER_BLOCK, generator=gen, device=A.device, dtype=dtype)
            Ai = A[todo]
            squarings = _filter_squarings(N, FILTER_DEGREES[0], FILTER_BLOCK)
            P = Ai / scale[todo, None, None]  # (L', N, N)
            for _ in range(squarings):  # P = (A/||A||)^(2^a), renormalised: no overflow
                P = P @ P
                P = P / torch.linalg.matrix_norm(P).clamp_min(torch.finfo(dtype).tiny)[:, None, None]
            Y = omega.expand(len(todo), N, FILTER_BLOCK)  # (L', N, p)
            done = 0
            for degree in FILTER_DEGREES:
                for _ in range((degree - done) >> squarings):  # Y = A^degree Ω, one thin product per P
                    Y = P @ Y
                    Y = Y / Y.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(dtype).tiny)  # columns rescaled:
                    # the span (all that Rayleigh–Ritz reads) is unchanged, and nothing overflows
                done = degree
                est, eta = _filtered_ritz(Ai, Y, FILTER_KRYLOV)
                ok = (eta <= rtol) & est.isfinite()
                idx = todo[ok]
                radius[idx], residual[idx], filtered[idx] = est[ok], eta[ok], True
                keep = ~ok
                todo, Ai, P, Y = todo[keep], Ai[keep], P[keep], Y[keep]
                if not len(todo):
                    break
    rest = (~filtered).nonzero()[:, 0]
    if len(rest):
        radius[rest] = torch.linalg.eigvals(A[rest]).abs().amax(-1).double()
    radius = radius.masked_fill(~finite, math.nan).to(W.dtype).reshape(lead)
    return SpectralRadius(radius=radius, method=filtered.to(torch.int64).reshape(lead),
                          residual=residual.to(W.dtype).reshape(lead))


# ---------------------------------------------------------------------------------------------
# One call for the run trace
# ---------------------------------------------------------------------------------------------


def weight_structure_summary(
    W: Tensor,
    phi_slope_at_zero: float = 1.0,
    with_spectrum: bool = True,
) -> dict[str, Tensor]:
    """Every per-matrix scalar of interpretations 1 and 3 of EOC-optimality v1, in one call.

    Keys (:data:`WEIGHT_STRUCTURE_KEYS`), each a tensor of shape ``W.shape[:-2]`` in ``W``'s float
    dtype:

    - ``j0``: ``mean(W)·N`` (docs/science/mean-field.md; same as the phase coordinate J0).
    - ``j``: ``std(W)·√N``, population std (docs/science/mean-field.md).
    - ``mean_part_norm``: ``||(J0/N)·11ᵀ||_F = |J0|·√(M/N)``.
    - ``random_part_norm``: ``||W − (J0/N)·11ᵀ||_F = J·√M``.
    - ``mean_to_random_ratio``: their ratio ``|J0|/(J·√N)`` (inf/NaN when J = 0).
    - ``mean_map_multiplier``: ``J0·φ'(0)``, slope of the linearised population-mean map.
    - ``mean_map_oscillates``: 1.0 if that multiplier is < −1 (period-2 mean for odd φ), else 0.0.
    - ``sym_norm``, ``antisym_norm``: ``||(W ± Wᵀ)/2||_F``.
    - ``antisym_ratio``: ``antisym_norm / sym_norm``.
    - ``spectral_radius``: ``max |λ(W)|``.
    - ``spectral_norm``: largest singular value (defined for non-square layers too, so kept).
    - ``complex_fraction``: share of eigenvalues with ``|Im λ| > √eps·radius`` (float64 compute).

    For a non-square layer the reading-1 values describe the mean-field surrogate (docs/science/mean-field.md) and the
    reading-3 values other than ``spectral_norm`` are NaN (no iterated map, docs/science/iterated-maps.md). With
    ``with_spectrum=False`` the eigen/SVD fields are NaN too, saving ≈ 0.4 s per 784×784 matrix.

    Args:
        W: weights ``(..., M, N)``.
        phi_slope_at_zero: ``φ'(0)`` of the activation (1 for tanh).
        with_spectrum: compute the eigenvalue and singular-value fields.

    Returns:
        Dict from the names in :data:`WEIGHT_STRUCTURE_KEYS` to tensors.
    """
    _check_matrix(W)
    W = _float(W)
    dt, dev = W.dtype, W.device
    nan = torch.full(W.shape[:-2], torch.nan, dtype=dt, device=dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # J = 0 → inf/NaN ratio is documented here
        mv = mean_variance_split(W, phi_slope_at_zero)
    out: dict[str, Tensor] = {
        "j0": mv.J0,
        "j": mv.J,
        "mean_part_norm": mv.mean_part_norm,
        "random_part_norm": mv.random_part_norm,
        "mean_to_random_ratio": mv.mean_to_random_ratio,
        "mean_map_multiplier": mv.mean_map_multiplier,
        "mean_map_oscillates": mv.mean_map_oscillates.to(dt),
    }
    square = W.shape[-1] == W.shape[-2]
    if square:
        sa = symmetric_antisymmetric(W)
        out.update(sym_norm=sa.sym_norm, antisym_norm=sa.antisym_norm, antisym_ratio=sa.antisym_ratio)
    else:
        out.update(sym_norm=nan.clone(), antisym_norm=nan.clone(), antisym_ratio=nan.clone())
    if with_spectrum and square:
        es = eigen_summary(W)
        out.update(
            spectral_radius=es.spectral_radius,
            spectral_norm=es.spectral_norm,
            complex_fraction=es.complex_fraction,
        )
    elif with_spectrum:
        finite = W.isfinite().all(-1).all(-1)  # gesdd crashes on NaN/inf (see eigen_summary)
        norm2 = (torch.linalg.matrix_norm(torch.where(finite[..., None, None], W, 0).to(torch.float64), ord=2)
                 .masked_fill(~finite, math.nan).to(dt))
        out.update(spectral_radius=nan.clone(), spectral_norm=norm2, complex_fraction=nan.clone())
    else:
        out.update(spectral_radius=nan.clone(), spectral_norm=nan.clone(), complex_fraction=nan.clone())
    return {k: out[k] for k in WEIGHT_STRUCTURE_KEYS}
