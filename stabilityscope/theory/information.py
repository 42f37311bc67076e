"""Information between discrete predictions and labels: how much of a network a linear model explains.

SGD-complexity (Nakkiran et al., arXiv:1905.11604; docs/science/secondary.md) compares a classifier F (the
network at a checkpoint) with a simpler one L (a linear classifier) on the test set, through the
plug-in joint distribution of (F(x), L(x), y) over K classes, in bits::

    μ_Y(F; L) = I(F; Y) − I(F; Y | L)        the performance correlation

μ ≈ I(F; Y) means that L explains F's performance; μ can be negative (the XOR example: F, L
independent fair bits and Y = F xor L give μ = −1 bit). By the symmetry of the interaction
information, μ = I(F; L) − I(F; L | Y) = I(L; Y) − I(L; Y | F).

Estimators: the plug-in (maximum-likelihood) entropies of the K×K×K count table, built with one
``bincount``; optionally the Miller–Madow bias correction, H + (m − 1)/(2n ln 2) bits with m the
number of occupied cells of each marginal or joint table; and a percentile bootstrap interval from
``n_boot`` resamples of the n test examples, all resampled tables counted in one batched
``bincount``. Caveats: plug-in mutual information is biased upward by about (cells)/(2n ln 2) bits
for n not ≫ the number of cells (K³ for the conditional terms); binary tasks (K = 2) keep it small.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

LOG2 = math.log(2.0)


def _as_labels(a: Sequence[int] | np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    if t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if len(t) and int(t.min()) < 0:
        raise ValueError(f"{name} holds a negative class index ({int(t.min())})")
    return t.to(torch.int64)


def _check_lengths(**arrays: torch.Tensor) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError("predictions and labels must have one entry per example; got lengths "
                         + ", ".join(f"{k} {v}" for k, v in lengths.items()))
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("no examples: the arrays are empty")
    return n


def joint_counts(*variables: torch.Tensor, num_classes: int, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The K×…×K count table of the variables (one axis each); ``weights`` (B, n) gives B tables at once."""
    index = torch.zeros_like(variables[0])
    for v in variables:
        index = index * num_classes + v  # flat cell index, (n,)
    cells = num_classes ** len(variables)
    if weights is None:
        return torch.bincount(index, minlength=cells).reshape((num_classes,) * len(variables)).double()
    b = weights.shape[0]
    offset = torch.arange(b, device=index.device)[:, None] * cells  # (B, 1): one block of cells per table
    flat = torch.bincount((index[None, :] + offset).reshape(-1), weights=weights.reshape(-1).double(),
                          minlength=b * cells)
    return flat.reshape(b, *(num_classes,) * len(variables))


def _entropy(counts: torch.Tensor, dims: int, miller_madow: bool) -> torch.Tensor:
    """Entropy in bits of the last ``dims`` axes of count tables (..., K, …, K)."""
    flat = counts.reshape(*counts.shape[: counts.dim() - dims], -1)
    n = flat.sum(-1)
    p = flat / n.unsqueeze(-1)
    h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1) / LOG2
    if miller_madow:
        occupied = (flat > 0).sum(-1).double()
        h = h + (occupied - 1) / (2 * n * LOG2)
    return h


def _marginal(counts: torch.Tensor, keep: Sequence[int], dims: int) -> torch.Tensor:
    """Sum the joint table (..., K × dims) over the variables not in ``keep`` (axes counted from the left)."""
    lead = counts.dim() - dims
    drop = [lead + i for i in range(dims) if i not in keep]
    return counts.sum(dim=drop) if drop else counts


def _mi_from_table(counts: torch.Tensor, miller_madow: bool) -> torch.Tensor:
    """I(A;B) = H(A) + H(B) − H(A,B) of (..., K, K) tables."""
    return (_entropy(_marginal(counts, [0], 2), 1, miller_madow) + _entropy(_marginal(counts, [1], 2), 1, miller_madow)
            - _entropy(counts, 2, miller_madow))


def _cmi_from_table(counts: torch.Tensor, miller_madow: bool) -> torch.Tensor:
    """I(A;B|C) = H(A,C) + H(B,C) − H(C) − H(A,B,C) of (..., K, K, K) tables (axes A, B, C)."""
    return (_entropy(_marginal(counts, [0, 2], 3), 2, miller_madow)
            + _entropy(_marginal(counts, [1, 2], 3), 2, miller_madow)
            - _entropy(_marginal(counts, [2], 3), 1, miller_madow) - _entropy(counts, 3, miller_madow))


def _classes(*arrays: torch.Tensor, num_classes: Optional[int]) -> int:
    k = max(int(a.max()) for a in arrays) + 1
    if num_classes is not None:
        if k > num_classes:
            raise ValueError(f"a class index {k - 1} is out of range for num_classes={num_classes}")
        return int(num_classes)
    return k


def mutual_information(a, b, *, num_classes: Optional[int] = None, miller_madow: bool = False) -> float:
    """I(A; B) in bits from the plug-in joint table of two discrete label arrays."""
    a, b = _as_labels(a, "a"), _as_labels(b, "b")
    _check_lengths(a=a, b=b)
    k = _classes(a, b, num_classes=num_classes)
    return float(_mi_from_table(joint_counts(a, b, num_classes=k), miller_madow))


def conditional_mutual_information(a, b, c, *, num_classes: Optional[int] = None,
                                   miller_madow: bool = False) -> float:
    """I(A; B | C) in bits from the plug-in joint table of three discrete label arrays."""
    a, b, c = _as_labels(a, "a"), _as_labels(b, "b"), _as_labels(c, "c")
    _check_lengths(a=a, b=b, c=c)
    k = _classes(a, b, c, num_classes=num_classes)
    return float(_cmi_from_table(joint_counts(a, b, c, num_classes=k), miller_madow))


@dataclass(frozen=True)
class PerformanceCorrelation:
    """μ_Y(F; L) and its parts, in bits, with percentile bootstrap intervals (NaN without a bootstrap)."""

    i_fy: float  # I(F; Y): how much F's predictions tell about the labels
    i_fy_given_l: float  # I(F; Y | L): what F tells beyond L
    mu: float  # μ_Y(F; L) = I(F; Y) − I(F; Y | L)
    i_ly: float  # I(L; Y)
    n: int  # test examples
    mu_interval: tuple[float, float] = (math.nan, math.nan)
    i_fy_interval: tuple[float, float] = (math.nan, math.nan)
    confidence: float = math.nan

    @property
    def explained_fraction(self) -> float:
        """μ / I(F; Y): the share of F's performance that L explains (NaN when I(F; Y) = 0)."""
        return self.mu / self.i_fy if self.i_fy > 0 else math.nan


def information_parts(counts: torch.Tensor, miller_madow: bool = False) -> tuple[torch.Tensor, ...]:
    """I(F;Y), I(F;Y|L), μ_Y(F;L) and I(L;Y) in bits of count tables (..., K, K, K) with axes (F, L, Y)."""
    return _parts(counts.double(), miller_madow)


def _parts(counts: torch.Tensor, miller_madow: bool) -> tuple[torch.Tensor, ...]:
    """I(F;Y), I(F;Y|L), μ and I(L;Y) of (..., K, K, K) tables with axes (F, L, Y)."""
    fy = _mi_from_table(_marginal(counts, [0, 2], 3), miller_madow)
    ly = _mi_from_table(_marginal(counts, [1, 2], 3), miller_madow)
    fy_l = _cmi_from_table(counts.transpose(-2, -1), miller_madow)  # axes (F, Y, L): condition on the last
    return fy, fy_l, fy - fy_l, ly


def performance_correlation(f_pred, l_pred, y, *, num_classes: Optional[int] = None, n_boot: int = 0,
                            confidence: float = 0.95, miller_madow: bool = False,
                            seed: int = 0) -> PerformanceCorrelation:
    """SGD-complexity's performance correlation μ_Y(F; L) of predictions ``f_pred`` and ``l_pred`` on labels ``y``.

    Args:
        f_pred, l_pred, y: class indices, one per test example (arrays or tensors of equal length).
        num_classes: K (default: the largest index + 1).
        n_boot: bootstrap resamples of the examples for the intervals (0: none).
        confidence: the intervals' level (percentile bootstrap).
        miller_madow: add the Miller–Madow correction to every entropy.
        seed: of the bootstrap's resampling.

    Raises:
        ValueError: arrays of different lengths (naming each length), empty, or not class indices.
    """
    f, l_, t = _as_labels(f_pred, "f_pred"), _as_labels(l_pred, "l_pred"), _as_labels(y, "y")
    n = _check_lengths(f_pred=f, l_pred=l_, y=t)
    k = _classes(f, l_, t, num_classes=num_classes)
    fy, fy_l, mu, ly = (float(v) for v in _parts(joint_counts(f, l_, t, num_classes=k), miller_madow))
    if n_boot <= 0:
        return PerformanceCorrelation(fy, fy_l, mu, ly, n)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    gen = torch.Generator().manual_seed(seed)
    # resampling with replacement = multinomial counts of each example, (n_boot, n), all tables in one bincount
    draws = torch.randint(0, n, (n_boot, n), generator=gen)  # (n_boot, n) example indices
    weights = torch.zeros(n_boot, n).scatter_add_(1, draws, torch.ones(n_boot, n))  # how often each is drawn
    boot_fy, _, boot_mu, _ = _parts(joint_counts(f, l_, t, num_classes=k, weights=weights), miller_madow)
    q = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
    mu_lo, mu_hi = torch.quantile(boot_mu, q).tolist()
    fy_lo, fy_hi = torch.quantile(boot_fy, q).tolist()
    return PerformanceCorrelation(fy, fy_l, mu, ly, n, (mu_lo, mu_hi), (fy_lo, fy_hi), confidence)
