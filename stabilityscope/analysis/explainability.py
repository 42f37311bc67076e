"""How much of a network's performance a linear classifier explains, over training (SGD-complexity).

Nakkiran et al., "SGD on neural networks learns functions of increasing complexity" (arXiv:1905.11604;
docs/science/secondary.md): with F_t the network at checkpoint t and L a linear classifier, the performance
correlation μ_Y(F_t; L) = I(F_t; Y) − I(F_t; Y | L) measures how much of F_t's information about the
labels L accounts for. The paper's findings: early in training μ ≈ I(F_t; Y) (the network learns
what a linear model learns), and later I(F_t; Y) keeps rising past I(L; Y) while μ stays near I(L; Y)
(the linear part is kept).

Every trace of the app stores the test-set predictions at every checkpoint (schema v2), so all of it
is computable after a run; with ``analysis.explainability=true`` the run also records the per-checkpoint
values with bootstrap intervals and the baseline L (a multinomial logistic regression,
:mod:`stabilityscope.training.baseline`). ::

    import stabilityscope as ss

    tr = ss.open_trace("checkpoints/sgd_cnn-cifar10/<stamp>")
    table = ss.explainability.explainability_table(tr)    # steps, I(F;Y), μ (+ intervals), I(L;Y)
    ss.explainability.linear_phase_end(tr)                 # last step with μ / I(F;Y) >= 0.9
    m = ss.explainability.complexity_matrix(tr)            # μ_Y(F_t; F_s) for every pair of checkpoints
    ss.explainability.performance_correlation(f, l, y, n_boot=200)   # any predictions

Estimator caveats (plug-in entropies, their upward bias, the bootstrap) are in
:mod:`stabilityscope.theory.information`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import EXPLAINABILITY_METRICS, Trace, open_trace
from stabilityscope.theory.information import (
    PerformanceCorrelation,
    conditional_mutual_information,
    information_parts,
    mutual_information,
    performance_correlation,
)

__all__ = ["ComplexityMatrix", "PerformanceCorrelation", "complexity_matrix", "conditional_mutual_information",
           "considered", "explainability_summary", "explainability_table", "linear_phase_end", "mutual_information",
           "performance_correlation"]

TraceLike = Union[Trace, str, Path]
PAIR_CHUNK = 4_000_000  # (pair, example) entries per bincount: bounds the index tensor at 32 MB


def _trace(trace: TraceLike) -> tuple[Trace, bool]:
    if isinstance(trace, Trace):
        return trace, False
    return open_trace(trace), True


def explainability_table(trace: TraceLike) -> dict[str, np.ndarray | float | bool | str]:
    """Per checkpoint: step, epoch_fraction, info_F_Y (+ _low, _high), info_F_Y_given_L, mu_F_L (+ _low,
    _high), and the baseline's info_L_Y, test_acc, converged, warning.

    Recorded values (``analysis.explainability=true``) are returned as recorded; a trace that stores
    the baseline but not the values gets them computed from its predictions (no intervals: NaN).

    Raises:
        TraceError: the trace has no baseline L (run with analysis.explainability=true).
    """
    tr, close = _trace(trace)
    try:
        base = tr.baseline
        if base is None:
            raise TraceError(f"{tr.path} has no linear baseline: run with analysis.explainability=true (the trace "
                             f"then records L, and I(F;Y), I(F;Y|L) and μ_Y(F;L) at every checkpoint).")
        out: dict = {"step": tr.steps, "epoch_fraction": tr.epoch_fraction}
        if all(m in tr.metrics for m in EXPLAINABILITY_METRICS):
            out.update({m: tr.metric(m) for m in EXPLAINABILITY_METRICS})
        else:
            pred, y, k = tr.predictions, tr.test_labels, tr.num_classes
            counts = _tables(torch.as_tensor(pred, dtype=torch.int64),
                             torch.as_tensor(base["test_predictions"], dtype=torch.int64)[None].expand(len(pred), -1),
                             torch.as_tensor(y, dtype=torch.int64), k)
            fy, fy_l, mu, _ = (v.numpy() for v in information_parts(counts))
            missing = (pred < 0).any(1)
            nan = np.full(len(pred), math.nan)
            out.update(info_F_Y=np.where(missing, nan, fy), info_F_Y_low=nan, info_F_Y_high=nan,
                       info_F_Y_given_L=np.where(missing, nan, fy_l), mu_F_L=np.where(missing, nan, mu),
                       mu_F_L_low=nan, mu_F_L_high=nan)
        out.update(info_L_Y=float(base["info_L_Y"]), baseline_test_acc=float(base["test_acc"]),
                   baseline_converged=bool(base["converged"]), baseline_warning=str(base.get("warning", "")))
        return out
    finally:
        if close:
            tr.close()


def _tables(f: torch.Tensor, g: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Count tables (P, K, K, K) of P prediction pairs (F rows f (P, n), conditioning rows g (P, n)) on labels
    y (n,)."""
    p, n = f.shape
    cells = k ** 3
    out = torch.zeros(p * cells, dtype=torch.float64)
    rows = max(1, PAIR_CHUNK // n)
    for start in range(0, p, rows):  # chunks of rows bound the memory; each chunk is one bincount
        fc, gc = f[start:start + rows].clamp(min=0), g[start:start + rows].clamp(min=0)
        offset = (torch.arange(len(fc)) + start)[:, None] * cells  # (rows, 1)
        index = offset + (fc * k + gc) * k + y[None, :]  # (rows, n) flat cell of each example in its pair's table
        out += torch.bincount(index.reshape(-1), minlength=p * cells).double()
    return out.reshape(p, k, k, k)


@dataclass(frozen=True)
class ComplexityMatrix:
    """μ_Y(F_t; F_s) for every pair of checkpoints: row t conditions F_t on the earlier (or later) F_s."""

    steps: np.ndarray  # (n,) optimiser step of each checkpoint
    epoch_fraction: np.ndarray  # (n,)
    mu: np.ndarray  # (n, n) μ_Y(F_t; F_s) in bits; NaN where a checkpoint has no predictions
    info: np.ndarray  # (n,) I(F_t; Y), the diagonal μ_Y(F_t; F_t)

    def explained_by_earlier(self) -> np.ndarray:
        """(n, n) μ_Y(F_t; F_s) / I(F_t; Y) for s < t (NaN elsewhere): how much of F_t an earlier F_s explains."""
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = self.mu / self.info[:, None]
        return np.where(np.tril(np.ones_like(ratio, dtype=bool), -1), ratio, np.nan)


def complexity_matrix(trace: TraceLike, miller_madow: bool = False) -> ComplexityMatrix:
    """SGD-complexity's "increasing complexity" view: μ_Y(F_t; F_s) = I(F_t; Y) − I(F_t; Y | F_s) for all t, s.

    Computed from the trace's stored test predictions (schema v2): n² tables of K³ cells, counted in
    chunked ``bincount`` calls over all pairs at once.

    Raises:
        TraceError: a trace without stored predictions (schema version 1).
    """
    tr, close = _trace(trace)
    try:
        pred = torch.as_tensor(tr.predictions, dtype=torch.int64)  # (n, n_test)
        y = torch.as_tensor(tr.test_labels, dtype=torch.int64)
        k, steps, frac = tr.num_classes, tr.steps, tr.epoch_fraction
    finally:
        if close:
            tr.close()
    n = len(pred)
    f = pred[:, None, :].expand(n, n, -1).reshape(n * n, -1)  # row t·n + s: F_t ...
    g = pred[None, :, :].expand(n, n, -1).reshape(n * n, -1)  # ... conditioned on F_s
    fy, fy_g, mu, _ = information_parts(_tables(f, g, y, k), miller_madow)
    missing = (pred < 0).any(1).numpy()
    mu = mu.reshape(n, n).numpy()
    mu[missing, :] = np.nan
    mu[:, missing] = np.nan
    info = np.where(missing, np.nan, fy.reshape(n, n).diagonal().numpy())
    return ComplexityMatrix(np.asarray(steps), np.asarray(frac), mu, info)


MIN_SHARE = 0.1  # a checkpoint counts once the network carries this share of L's information about the labels


def considered(table: dict, min_share: float = MIN_SHARE) -> np.ndarray:
    """Checkpoints whose explained share μ/I(F_t;Y) is read: trained (step > 0) and carrying at least
    ``min_share`` · I(L;Y) bits. Before that the network knows next to nothing (a random or a constant
    classifier) and the ratio of two near-zero numbers is noise."""
    info, mu = table["info_F_Y"], table["mu_F_L"]
    return (np.isfinite(info) & np.isfinite(mu) & (table["step"] > 0)
            & (info >= min_share * table["info_L_Y"]) & (info > 0))


def linear_phase_end(trace: TraceLike, threshold: float = 0.9, min_share: float = MIN_SHARE) -> Optional[int]:
    """The last step until which L explains at least ``threshold`` of the network: μ_Y(F_t;L) / I(F_t;Y) >= threshold.

    Read over the :func:`considered` checkpoints (trained, and carrying at least ``min_share`` of
    I(L;Y)). Returns the step of the last one before the ratio first falls below ``threshold`` (the
    last one when it never does), or None when the first one is already below it or none qualifies.
    """
    return _phase_end(explainability_table(trace), threshold, min_share)


def _phase_end(table: dict, threshold: float, min_share: float = MIN_SHARE) -> Optional[int]:
    """:func:`linear_phase_end` of an :func:`explainability_table`."""
    info, mu, steps = table["info_F_Y"], table["mu_F_L"], table["step"]
    idx = np.flatnonzero(considered(table, min_share))  # checkpoints in order
    if not len(idx):
        return None
    below = mu[idx] / info[idx] < threshold
    if not below.any():
        return int(steps[idx[-1]])
    first = int(np.argmax(below))  # the first checkpoint that L no longer explains
    return int(steps[idx[first - 1]]) if first > 0 else None


def explainability_summary(trace: TraceLike, threshold: float = 0.9) -> dict[str, float | int | None | bool]:
    """The numbers SGD-complexity's claims are checked with: where the linear phase ends, and the end state.

    Returns: ``linear_phase_end_step`` (and its fractional epoch), the largest explained share μ/I(F_t;Y)
    over the :func:`considered` checkpoints and its step, the final share, ``info_L_Y``, the last checkpoint's
    ``info_F_Y`` and ``mu_F_L`` (with intervals when recorded), ``gap_F_L`` = I(F_T;Y) − I(L;Y) (how far the
    network went past the linear model) and ``mu_minus_L`` = μ_Y(F_T;L) − I(L;Y) (how much of L's
    information the final network keeps: 0 when it keeps all of it), and the baseline's fit state.
    """
    table = explainability_table(trace)
    end = _phase_end(table, threshold)  # the same table: the trace is read once
    steps, frac = table["step"], table["epoch_fraction"]
    read = considered(table)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = table["mu_F_L"] / table["info_F_Y"]
    end_frac = float(frac[list(steps).index(end)]) if end is not None else None
    i_ly = table["info_L_Y"]
    last = -1
    return {"linear_phase_end_step": end, "linear_phase_end_epoch": end_frac, "threshold": threshold,
            "info_L_Y": i_ly, "baseline_test_acc": table["baseline_test_acc"],
            "baseline_converged": table["baseline_converged"], "final_step": int(steps[last]),
            "final_info_F_Y": float(table["info_F_Y"][last]), "final_info_F_Y_low": float(table["info_F_Y_low"][last]),
            "final_info_F_Y_high": float(table["info_F_Y_high"][last]), "final_mu_F_L": float(table["mu_F_L"][last]),
            "final_mu_F_L_low": float(table["mu_F_L_low"][last]),
            "final_mu_F_L_high": float(table["mu_F_L_high"][last]),
            "gap_F_L": float(table["info_F_Y"][last] - i_ly), "mu_minus_L": float(table["mu_F_L"][last] - i_ly),
            "max_mu_F_L": float(np.nanmax(table["mu_F_L"])),
            "max_share": float(np.max(share[read])) if read.any() else None,
            "max_share_step": int(steps[read][np.argmax(share[read])]) if read.any() else None,
            "final_share": float(share[-1]) if np.isfinite(share[-1]) else None,
            # True when the share fell below the threshold after the linear phase (False: it never did)
            "linear_phase_ended": bool(end is not None and read.any() and end < int(steps[read][-1]))}
