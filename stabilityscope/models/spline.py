"""Spline-FC: a degree-1 MARS fit and its exact conversion to a one-hidden-layer ReLU network.

Degree-1 MARS (Friedman 1991, "Multivariate adaptive regression splines", Ann. Statist. 19(1), §3)
fits f(x) = β0 + Σ_k β_k·max(0, s_k·(x_{j_k} − t_k)) + Σ_l γ_l·x_{j_l}: each term is one hinge (or the
linear function) of one input, never a product. Spline-FC (Mo, Zheng et al., arXiv:2102.06554) reads
it as a network: hinge k is ReLU unit k with weight s_k·e_{j_k} and bias −s_k·t_k, outgoing weight β_k;
a linear term is two units, γ·x = γ·relu(x) − γ·relu(−x); β0 is the output bias (:func:`to_network`).

**Forward pass** (Friedman's Algorithm 2 with the constant as the only parent). Each step adds the
reflected pair max(0, ±(x_j − t)) (or the linear term x_j) that lowers the residual sum of squares the
most. Scoring every candidate at once: with Q (n, M) an orthonormal basis of the current terms and R the
residual (n, p), adding columns a, b lowers the RSS (summed over the p outputs: a shared basis) by::

    ΔRSS = ‖ãᵀR‖²/ãᵀã + ‖b̂ᵀR‖²/b̂ᵀb̂,  ã = (1 − QQᵀ)a,  b̂ = (1 − QQᵀ)b − (ãᵀb/ãᵀã)·ã,

which needs only aᵀR, bᵀR, aᵀa, bᵀb and the running sums ‖Qᵀa‖², ‖Qᵀb‖², (Qᵀa)·(Qᵀb) (aᵀb = 0 for a
reflected pair). For a hinge, aᵀv = Σ_{x_j > t}(x_j − t)·v is a suffix sum over the knot intervals, so
all (feature, knot) products of a new column v come from one sparse product (interval indicator and
x-weighted indicator, 2·n·d non-zeros) and cumulative sums; they are updated as each basis column is
added, so a step costs O(n·d) whatever the number of knots.

**Candidate knots (ours).** Input j's candidates are its order statistics at the quantile levels
i/(K+1), i = 1..K (``knots`` = K, default 32), dropping repeats and the extremes; every hinge then covers at
least about n/(K+1) samples, the role of Friedman's minspan/endspan. An input whose knots all collapse
(a binary input) keeps only its linear candidate. Inputs are standardised inside the search only;
knots are the raw data values.

**Backward pruning** removes, one at a time, the term whose deletion raises the RSS least and keeps the
subset of lowest generalised cross-validation GCV = (RSS/n) / (1 − C(M)/n)², C(M) = M + penalty·(M − 1)/2
with M the basis functions including the intercept (Friedman 1991, Algorithm 3 and its GCV criterion
with d = penalty per knot; (M − 1)/2 counts the knots as in Milborrow's R package earth, whose degree-1
default penalty is 2). The final coefficients are a least-squares refit on that subset.

**Why not a package.** Evaluated on Python 3.11 (all three install): ``omar`` 0.0.1 is an unrelated
calculator; ``mars-earth`` 1.0.4 (pure Python, one output) refits a least-squares problem per candidate
and took 123 s for 21 terms on Abalone (4,177 × 10); ``py-earth2`` 0.2.0 (Cython; knots, signs and
coefficients accessible; several outputs) took 46 s for 21 terms and 888 s for 61 terms on 5,000 × 784
Fashion-MNIST with one-hot targets, and 417 s for 21 terms on 20,000 × 784, has no knot limit beyond
minspan and needs scikit-learn. This implementation: 3.2 s, 3.2 s and 7.6 s for the same three fits (32
knots), about a minute for 60,000 × 784 (2 busy cores). Hence our own, vectorised in torch.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from stabilityscope.config import MarsConfig, as_options
from stabilityscope.errors import ConfigError, DataError, FitError

__all__ = ["MarsFit", "MarsTerm", "fit_mars", "to_network", "widen"]

_TOL = 1e-9  # a candidate column counts only if more than this fraction of its squared norm is new


@dataclass(frozen=True)
class MarsTerm:
    """One basis function: max(0, sign·(x[feature] − knot)), or x[feature] itself when sign is 0."""

    feature: int
    knot: float  # NaN for a linear term
    sign: int  # +1, −1, or 0 (linear)
    step: int  # the forward-pass step that added it (both halves of a pair share it)

    def name(self) -> str:
        if self.sign == 0:
            return f"x{self.feature}"
        return f"h(x{self.feature} - {self.knot:.6g})" if self.sign > 0 else f"h({self.knot:.6g} - x{self.feature})"


@dataclass(frozen=True)
class MarsFit:
    """A pruned degree-1 MARS model (float64 tensors on the CPU; p outputs share one basis)."""

    feature: torch.Tensor  # (K,) int64: the input j_k of hinge k
    knot: torch.Tensor  # (K,) t_k
    sign: torch.Tensor  # (K,) s_k = ±1: hinge max(0, s_k·(x_{j_k} − t_k))
    coef: torch.Tensor  # (K, p) β_k
    linear_feature: torch.Tensor  # (L,) int64: inputs entering linearly
    linear_coef: torch.Tensor  # (L, p) γ_l
    intercept: torch.Tensor  # (p,) β0
    forward: tuple[MarsTerm, ...]  # every term of the forward pass, in the order added
    kept: tuple[int, ...]  # indices into ``forward`` of the kept terms: hinges first, then linear terms
    rss: float  # training residual sum of squares, summed over outputs
    gcv: float  # its GCV (the minimum over the pruning sequence)
    r2: float  # 1 − RSS/TSS (TSS about each output's mean, summed)
    gcv_path: torch.Tensor  # (len(forward) + 1,) GCV of the pruning sequence's subset with m + 1 basis functions
    n_samples: int
    n_inputs: int
    squeeze: bool  # y was 1-D: predict returns (n,)
    options: MarsConfig
    seconds: float  # wall time of the fit

    @property
    def n_outputs(self) -> int:
        return int(self.intercept.numel())

    @property
    def terms(self) -> tuple[MarsTerm, ...]:
        """The kept terms, in the order of :attr:`coef` then :attr:`linear_coef`."""
        return tuple(self.forward[i] for i in self.kept)

    @property
    def n_units(self) -> int:
        """Hidden width of :func:`to_network`: one unit per hinge, two per linear term."""
        return int(self.feature.numel() + 2 * self.linear_feature.numel())

    def basis(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The kept basis functions at x (n, d): (n, K + L), hinges then linear terms, float64."""
        x = torch.as_tensor(x).to(torch.float64)
        hinges = torch.relu(self.sign.to(x.device) * (x[:, self.feature.to(x.device)] - self.knot.to(x.device)))
        return torch.cat([hinges, x[:, self.linear_feature.to(x.device)]], 1)

    def predict(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """f(x) in float64: (n, p), or (n,) when the fit's y was 1-D."""
        x = torch.as_tensor(x).to(torch.float64)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise DataError(f"MarsFit.predict expects inputs (n, {self.n_inputs}), got {tuple(x.shape)}.")
        coef = torch.cat([self.coef, self.linear_coef]).to(x.device)  # (K + L, p)
        out = self.basis(x) @ coef + self.intercept.to(x.device)
        return out[:, 0] if self.squeeze else out

    def summary(self) -> str:
        """One line per kept term with its coefficients (earth's table), then RSS, GCV and R²."""
        coef = torch.cat([self.coef, self.linear_coef])
        rows = [f"{'(intercept)':<28}" + " ".join(f"{v:>11.5g}" for v in self.intercept.tolist())]
        rows += [f"{t.name():<28}" + " ".join(f"{v:>11.5g}" for v in c.tolist()) for t, c in zip(self.terms, coef)]
        rows.append(f"{len(self.terms)} of {len(self.forward)} forward terms kept; RSS {self.rss:.6g}, "
                    f"GCV {self.gcv:.6g}, R² {self.r2:.4f} (n = {self.n_samples}, penalty {self.options.penalty:g})")
        return "\n".join(rows)


def gcv(rss: float | torch.Tensor, n: int, m: int | torch.Tensor, penalty: float) -> Any:
    """GCV = (RSS/n) / (1 − C(M)/n)², C(M) = M + penalty·(M − 1)/2 (infinite when C(M) ≥ n)."""
    c = m + penalty * (m - 1) / 2
    if isinstance(c, torch.Tensor):
        return torch.where(c < n, rss / n / (1 - c / n).clamp_min(1e-300) ** 2, torch.inf)
    return rss / n / (1 - c / n) ** 2 if c < n else math.inf


class _KnotSearch:
    """The forward pass's state: hinge/linear products with the basis and the residual, updated per column."""

    def __init__(self, z: torch.Tensor, x_raw: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 n_knots: int) -> None:
        # x_raw: (n, d) inputs on the device (float64); z = (x_raw − mean)/std (std > 0), what the search uses.
        n, d = z.shape
        self.n, self.d, self.K = n, d, n_knots
        xs_raw, order = x_raw.sort(0)  # (n, d): each input's values in increasing order
        levels = torch.round(torch.arange(1, n_knots + 1, dtype=torch.float64) * (n - 1) / (n_knots + 1)).long()
        knots_raw = xs_raw[levels.to(z.device)].T.contiguous()  # (d, K)
        lo, hi = xs_raw[0][:, None], xs_raw[-1][:, None]
        first = torch.ones_like(knots_raw[:, :1], dtype=torch.bool)
        fresh = torch.cat([first, knots_raw[:, 1:] > knots_raw[:, :-1]], 1)
        self.valid = fresh & (knots_raw > lo) & (knots_raw < hi)  # (d, K): a real pair, not a repeat
        self.knots_raw = knots_raw
        # Sample counts at or below each knot, from the raw values, so that "x > t" is exact.
        below = torch.searchsorted(xs_raw.T.contiguous(), knots_raw, right=True)  # (d, K)
        self.knots = (knots_raw - mean[:, None]) / std[:, None]  # (d, K): the same arithmetic as z, so t_k ∈ z
        zs = z.gather(0, order).T.contiguous()  # (d, n): standardised values in increasing order
        del xs_raw  # the large temporaries go as soon as they are used (a 60,000 × 784 fit holds several)
        # Raw squared norms aᵀa = Σ_{x>t}(z − t)², bᵀb = Σ_{x≤t}(t − z)², xᵀx, from prefix sums of sorted z.
        sums = []
        for power in (zs, zs * zs):
            prefix = torch.cat([zs.new_zeros(d, 1), power.cumsum(1)], 1)  # (d, n+1)
            sums.append((prefix.gather(1, below), prefix[:, -1:]))  # over x ≤ t, and over all samples
            del prefix
        (s1_le, s1), (s2_le, s2) = sums
        t, cnt = self.knots, below.to(torch.float64)
        self.aa = (s2 - s2_le) - 2 * t * (s1 - s1_le) + t * t * (n - cnt)  # (d, K)
        self.bb = t * t * cnt - 2 * t * s1_le + s2_le  # (d, K)
        self.xx = s2[:, 0]  # (d,)
        # Sparse interval indicator E (2·d·(K+1), n): row (j, b) sums samples with t_b < x_j ≤ t_{b+1}; the
        # second half weights them by z_j. One product E @ V gives every interval sum of every column of V.
        bounds = torch.cat([torch.zeros_like(below[:, :1]), below], 1)  # (d, K+1): interval starts
        starts = (bounds + n * torch.arange(d, device=z.device)[:, None]).flatten()
        crow = torch.cat([starts, starts + n * d, starts.new_tensor([2 * n * d])]).to(torch.int32)
        col = order.T.to(torch.int32).reshape(-1)
        del order
        col = torch.cat([col, col])
        values = torch.cat([torch.ones(n * d, dtype=torch.float64, device=z.device), zs.reshape(-1)])
        del zs
        with warnings.catch_warnings():  # torch marks sparse CSR as beta
            warnings.simplefilter("ignore")
            self.E = torch.sparse_csr_tensor(crow, col, values, (2 * d * (n_knots + 1), n))
        self.na = torch.zeros_like(self.aa)  # ‖Qᵀa‖²
        self.nb = torch.zeros_like(self.aa)  # ‖Qᵀb‖²
        self.nab = torch.zeros_like(self.aa)  # (Qᵀa)·(Qᵀb)
        self.nx = torch.zeros_like(self.xx)  # ‖Qᵀx‖²
        self.linear_ok = self.xx > 0

    def products(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """aᵀv, bᵀv for every candidate pair (each (d, K, c)) and x_jᵀv (d, c), for columns v (n, c)."""
        c = v.shape[1]
        g = (self.E @ v.contiguous()).view(2, self.d, self.K + 1, c)  # interval sums of v and of z·v
        suffix = g.flip(2).cumsum(2).flip(2)  # [..., k, :] = Σ over intervals ≥ k, i.e. over x > t_k
        total0, total1 = suffix[0, :, :1], suffix[1, :, :1]  # (d, 1, c): Σ v, Σ z·v
        s0, s1 = suffix[0, :, 1:], suffix[1, :, 1:]  # (d, K, c)
        t = self.knots[..., None]
        return s1 - t * s0, t * (total0 - s0) - (total1 - s1), total1[:, 0]

    def add_basis(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Account for new orthonormal basis columns q (n, c); returns their products (for the residual)."""
        ua, ub, ux = self.products(q)
        self.na += (ua * ua).sum(-1)
        self.nb += (ub * ub).sum(-1)
        self.nab += (ua * ub).sum(-1)
        self.nx += (ux * ux).sum(-1)
        return ua, ub, ux

    def scores(self, ra: torch.Tensor, rb: torch.Tensor, rx: torch.Tensor,
               slots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """ΔRSS of every pair (d, K) and linear term (d,), and which halves of each pair are new (d, K) each."""
        gaa, gbb = self.aa - self.na, self.bb - self.nb  # ãᵀã, b̃ᵀb̃
        gab = -self.nab  # ãᵀb̃ = aᵀb − (Qᵀa)·(Qᵀb), and aᵀb = 0
        ok_a = self.valid & (gaa > _TOL * self.aa)
        ok_b = self.valid & (gbb > _TOL * self.bb)
        da = torch.where(ok_a, (ra * ra).sum(-1) / gaa.clamp_min(1e-300), 0.0)
        db = torch.where(ok_b, (rb * rb).sum(-1) / gbb.clamp_min(1e-300), 0.0)
        # b after a: b̂ = b̃ − (gab/gaa)·ã.
        ratio = torch.where(ok_a, gab / gaa.clamp_min(1e-300), 0.0)
        gbb2 = gbb - ratio * gab
        rb2 = rb - ratio[..., None] * ra
        ok_b2 = ok_b & (gbb2 > _TOL * self.bb)
        pair = da + torch.where(ok_b2, (rb2 * rb2).sum(-1) / gbb2.clamp_min(1e-300), 0.0)
        use_a, use_b = ok_a, ok_b2  # without a (ratio 0), b̂ = b̃ and ok_b2 = ok_b
        if slots < 2:  # room for one column: the better half alone
            pair = torch.maximum(da, db)
            use_a, use_b = ok_a & (da >= db), ok_b & (db > da)
        gxx = self.xx - self.nx
        ok_x = self.linear_ok & (gxx > _TOL * self.xx)
        linear = torch.where(ok_x, (rx * rx).sum(-1) / gxx.clamp_min(1e-300), 0.0)
        return pair, linear, use_a, use_b


def _orthonormalise(v: torch.Tensor, qt: torch.Tensor) -> Optional[torch.Tensor]:
    """v (n,) made orthogonal to the rows of qt (M, n) (Gram-Schmidt twice) and normalised; None if ≈ 0."""
    norm0 = v.norm()
    for _ in range(2):  # "twice is enough" (Giraud et al. 2005)
        v = v - qt.T @ (qt @ v)
    norm = v.norm()
    return None if norm0 == 0 or norm <= math.sqrt(_TOL) * norm0 else v / norm


def _check_data(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach()
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach()
    if x.ndim != 2 or x.shape[0] < 3 or x.shape[1] < 1:
        raise DataError(f"fit_mars: x must be a matrix (n, d) with n ≥ 3 samples and d ≥ 1 inputs, got shape "
                        f"{tuple(x.shape)}; flatten images first (x.reshape(len(x), -1)).")
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0] or y.numel() == 0:
        raise DataError(f"fit_mars: y must be (n,) or (n, p) with the n = {x.shape[0]} rows of x, got shape "
                        f"{tuple(y.shape)}; for classes pass one-hot targets.")
    squeeze = y.ndim == 1
    y = y[:, None] if squeeze else y
    x, y = x.to(torch.float64), y.to(torch.float64)
    for name, t in (("x", x), ("y", y)):
        if not torch.isfinite(t).all():
            raise DataError(f"fit_mars: {name} holds {int((~torch.isfinite(t)).sum())} NaN or infinite values; MARS "
                            f"needs finite inputs and targets (drop or impute them first).")
    return x, y, squeeze


def _check_options(opts: MarsConfig, d: int) -> int:
    """The forward pass's basis-function budget, after checking every option (ConfigError naming the key)."""
    max_terms = opts.max_terms if opts.max_terms is not None else min(200, max(20, 2 * d)) + 1
    if not isinstance(max_terms, int) or max_terms < 2:
        raise ConfigError(f"Invalid value model.mars.max_terms={opts.max_terms!r}: the forward pass needs room for "
                          f"the intercept and at least one term (an integer ≥ 2), or null for "
                          f"min(200, max(20, 2d)) + 1.")
    if not isinstance(opts.knots, int) or opts.knots < 1:
        raise ConfigError(f"Invalid value model.mars.knots={opts.knots!r}: the number of candidate knots per input "
                          f"must be a positive integer (quantile levels i/(knots+1)).")
    if not opts.penalty >= 0 or not math.isfinite(opts.penalty):
        raise ConfigError(f"Invalid value model.mars.penalty={opts.penalty!r}: the GCV cost per knot must be a finite "
                          f"number ≥ 0 (2 is Friedman's degree-1 value, 3 the usual one for interactions).")
    if not 0 <= opts.threshold < 1:
        raise ConfigError(f"Invalid value model.mars.threshold={opts.threshold!r}: the forward pass's minimal R² gain "
                          f"must lie in [0, 1).")
    return max_terms


def _forward_pass(x: torch.Tensor, y: torch.Tensor, max_terms: int, opts: MarsConfig) -> list[MarsTerm]:
    """Greedy forward pass on (x (n, d), y (n, p)) on their device; the terms added, in order."""
    n, d = x.shape
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    z = (x - mean) / std  # (n, d): the search is invariant to shifting and scaling an input; this is for rounding
    search = _KnotSearch(z, x, mean, std, opts.knots)
    qt = torch.empty(max_terms, n, dtype=torch.float64, device=x.device)  # orthonormal basis, one row per column
    qt[0] = 1 / math.sqrt(n)
    r = y - y.mean(0)  # (n, p): residual of the intercept-only fit
    tss = float((r * r).sum())
    ra, rb, rx = search.products(r)  # (d, K, p), (d, K, p), (d, p)
    search.add_basis(qt[:1].T)
    terms: list[MarsTerm] = []
    m, step = 1, 0
    while m < max_terms and tss > 0:
        pair, linear, use_a, use_b = search.scores(ra, rb, rx, max_terms - m)
        best_pair, best_lin = int(pair.argmax()), int(linear.argmax())
        gain_pair, gain_lin = float(pair.flatten()[best_pair]), float(linear[best_lin])
        if max(gain_pair, gain_lin) <= opts.threshold * tss:
            break
        if gain_lin >= gain_pair * (1 - 1e-9):  # a pair spans the linear term: prefer the simpler on a tie
            j, cols, new = best_lin, [z[:, best_lin]], [MarsTerm(best_lin, math.nan, 0, step + 1)]
        else:
            j, k = divmod(best_pair, search.K)
            t, t_raw = search.knots[j, k], float(search.knots_raw[j, k])
            cols, new = [], []
            if use_a[j, k]:
                cols.append(torch.relu(z[:, j] - t))
                new.append(MarsTerm(j, t_raw, 1, step + 1))
            if use_b[j, k]:
                cols.append(torch.relu(t - z[:, j]))
                new.append(MarsTerm(j, t_raw, -1, step + 1))
        added = []
        for col, term in zip(cols, new):
            v = _orthonormalise(col, qt[:m])
            if v is not None:
                qt[m] = v
                m += 1
                added.append(term)
        if not added:  # numerically in the span after all: never offer it again
            if new[0].sign == 0:
                search.linear_ok[j] = False
            else:
                search.valid[j, k] = False
            continue
        step += 1
        terms += added
        qn = qt[m - len(added):m].T  # (n, c)
        ua, ub, ux = search.add_basis(qn)
        qr = qn.T @ r  # (c, p)
        r = r - qn @ qr
        ra = ra - torch.einsum("dkc,cp->dkp", ua, qr)  # aᵀR after the residual update
        rb = rb - torch.einsum("dkc,cp->dkp", ub, qr)
        rx = rx - ux @ qr
    return terms


def _basis_matrix(x: torch.Tensor, terms: list[MarsTerm] | tuple[MarsTerm, ...]) -> torch.Tensor:
    """[1, term columns] (n, 1 + len(terms)) in the raw units of x."""
    feature = torch.tensor([t.feature for t in terms], dtype=torch.long)
    knot = torch.tensor([0.0 if t.sign == 0 else t.knot for t in terms], dtype=torch.float64)
    sign = torch.tensor([t.sign for t in terms], dtype=torch.float64)
    cols = x[:, feature]
    cols = torch.where(sign == 0, cols, torch.relu(sign * (cols - knot)))
    return torch.cat([torch.ones(len(x), 1, dtype=x.dtype), cols], 1)


def _prune(x: torch.Tensor, y: torch.Tensor, terms: list[MarsTerm],
           penalty: float) -> tuple[list[int], torch.Tensor]:
    """Backward deletion by least RSS increase; the kept term indices of the lowest-GCV subset, and the GCV path.

    Works in the M-dimensional coordinates of a QR factorisation B = Q₀R₀ (n, M): a subset S of columns
    has RSS(S) = RSS(all) + ‖z − P_S z‖² with z = Q₀ᵀY and P_S the projection onto the span of R₀[:, S].
    Deleting column m of S raises the RSS by ‖β_m‖² / [(B_SᵀB_S)⁻¹]_mm (a row norm of R_S⁻¹).
    """
    n = len(x)
    b = _basis_matrix(x, terms)  # (n, M)
    q0, r0 = torch.linalg.qr(b)
    zc = q0.T @ y  # (M, p)
    rss_all = float(((y - q0 @ zc) ** 2).sum())
    active = list(range(b.shape[1]))
    rss_of = {}
    removed: list[int] = []
    while True:
        q2, r2 = torch.linalg.qr(r0[:, active])  # (M, s), (s, s)
        z2 = q2.T @ zc  # (s, p)
        rss_of[len(active)] = rss_all + float(((zc - q2 @ z2) ** 2).sum())
        if len(active) == 1:
            break
        beta = torch.linalg.solve_triangular(r2, z2, upper=True)  # (s, p)
        inv = torch.linalg.solve_triangular(r2, torch.eye(len(active), dtype=r2.dtype), upper=True)
        increase = (beta * beta).sum(1) / (inv * inv).sum(1)  # (s,)
        increase[0] = torch.inf  # the intercept stays
        drop = active.pop(int(increase.argmin()))
        removed.append(drop)
    sizes = torch.arange(1, b.shape[1] + 1)
    path = gcv(torch.tensor([rss_of[int(s)] for s in sizes], dtype=torch.float64), n, sizes.double(), penalty)
    best = int(path.argmin()) + 1  # the smallest subset on a tie
    dropped = set(removed[: b.shape[1] - best])
    return [i - 1 for i in range(1, b.shape[1]) if i not in dropped], path


def fit_mars(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, options: MarsConfig | Any = None, *,
             device: Optional[str | torch.device] = None, **overrides: Any) -> MarsFit:
    """Fit degree-1 MARS to y (n,) or (n, p) on inputs x (n, d): forward pass, then GCV pruning.

    Args:
        x: inputs (n, d), any float dtype (computed in float64).
        y: targets (n,) or (n, p); several outputs share one basis (RSS and GCV summed over outputs).
        options: :class:`~stabilityscope.config.MarsConfig` (or a mapping of its fields).
        device: where the forward pass runs; None = CUDA when present, else the CPU.
        **overrides: fields of MarsConfig, e.g. ``fit_mars(x, y, max_terms=21, knots=16)``.

    Raises:
        FitError: no term is selected (the forward pass finds nothing above ``threshold``, or GCV pruning
            keeps only the intercept): a spline initialisation must not fall back to random silently.
    """
    start = time.perf_counter()
    base = dataclasses.asdict(as_options(options, MarsConfig, "model.mars"))
    opts = as_options({**base, **overrides}, MarsConfig, "model.mars")
    x, y, squeeze = _check_data(x, y)
    x, y = x.cpu(), y.cpu()  # pruning and the final refit are small dense problems, on the CPU
    n, d = x.shape
    max_terms = _check_options(opts, d)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    terms = _forward_pass(x.to(dev), y.to(dev), max_terms, opts)
    if not terms:
        raise FitError(f"MARS selected no term: no hinge or linear term of the {d} inputs lowers the residual sum of "
                       f"squares by more than model.mars.threshold={opts.threshold:g} of its total (n = {n}, "
                       f"{opts.knots} candidate knots per input). Check that y varies and depends on x, or lower "
                       f"the threshold; a spline initialisation needs at least one term.")
    kept, path = _prune(x, y, terms, opts.penalty)
    if not kept:
        raise FitError(f"MARS selected no term: GCV pruning with model.mars.penalty={opts.penalty:g} prefers the "
                       f"intercept alone (GCV {float(path[0]):.6g}) to every subset of the {len(terms)} forward terms "
                       f"(best {float(path[1:].min()):.6g}): the inputs explain no more of y than a constant at this "
                       f"penalty. Lower the penalty or check the data; a spline initialisation needs at least one "
                       f"term.")
    hinges = [i for i in kept if terms[i].sign != 0]
    linear = [i for i in kept if terms[i].sign == 0]
    order = hinges + linear
    b = _basis_matrix(x, [terms[i] for i in order])  # (n, 1 + K + L)
    coef = torch.linalg.lstsq(b, y, driver="gelsd").solution  # (1 + K + L, p)
    resid = y - b @ coef
    rss = float((resid * resid).sum())
    tss = float(((y - y.mean(0)) ** 2).sum())
    k = len(hinges)
    return MarsFit(
        feature=torch.tensor([terms[i].feature for i in hinges], dtype=torch.long),
        knot=torch.tensor([terms[i].knot for i in hinges], dtype=torch.float64),
        sign=torch.tensor([terms[i].sign for i in hinges], dtype=torch.float64),
        coef=coef[1:1 + k].contiguous(),
        linear_feature=torch.tensor([terms[i].feature for i in linear], dtype=torch.long),
        linear_coef=coef[1 + k:].contiguous(), intercept=coef[0].contiguous(), forward=tuple(terms), kept=tuple(order),
        rss=rss, gcv=gcv(rss, n, 1 + len(order), opts.penalty), r2=1 - rss / tss if tss > 0 else float("nan"),
        gcv_path=path, n_samples=n, n_inputs=d, squeeze=squeeze, options=opts, seconds=time.perf_counter() - start)


def to_network(fit: MarsFit, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """The fit as Linear(d, K + 2L) → ReLU → Linear(K + 2L, p), computing exactly f(x) (output (n, p)).

    Hinge k is unit k: weight s_k·e_{j_k}, bias −s_k·t_k, outgoing weight β_k. Linear term l is units
    K + 2l and K + 2l + 1: weights ±e_{j_l}, outgoing ±γ_l (γx = γ·relu(x) − γ·relu(−x)). The output bias is β0.
    """
    k, n_lin, d, p = fit.feature.numel(), fit.linear_feature.numel(), fit.n_inputs, fit.n_outputs
    width = k + 2 * n_lin
    w1 = torch.zeros(width, d, dtype=torch.float64)
    b1 = torch.zeros(width, dtype=torch.float64)
    w1[torch.arange(k), fit.feature] = fit.sign
    b1[:k] = -fit.sign * fit.knot
    pos, neg = k + 2 * torch.arange(n_lin), k + 2 * torch.arange(n_lin) + 1
    w1[pos, fit.linear_feature] = 1.0
    w1[neg, fit.linear_feature] = -1.0
    w2 = torch.zeros(p, width, dtype=torch.float64)
    w2[:, :k] = fit.coef.T
    w2[:, pos] = fit.linear_coef.T
    w2[:, neg] = -fit.linear_coef.T
    first, last = nn.Linear(d, width, dtype=dtype), nn.Linear(width, p, dtype=dtype)
    with torch.no_grad():
        first.weight.copy_(w1)
        first.bias.copy_(b1)
        last.weight.copy_(w2)
        last.bias.copy_(fit.intercept)
    return nn.Sequential(first, nn.ReLU(), last)


def _layers(net: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    ok = (isinstance(net, nn.Sequential) and len(net) == 3 and isinstance(net[0], nn.Linear)
          and isinstance(net[1], nn.ReLU) and isinstance(net[2], nn.Linear) and net[0].bias is not None
          and net[2].in_features == net[0].out_features)
    if not ok:
        raise ConfigError(f"widen expects the network of to_network: Sequential(Linear(d, K), ReLU(), Linear(K, p)) "
                          f"with biases; got {type(net).__name__} {[type(m).__name__ for m in net.children()]}.")
    return net[0], net[2]


def widen(net: nn.Sequential, width: int, *, scale: float = 0.1, seed: int = 0,
          generator: Optional[torch.Generator] = None) -> nn.Sequential:
    """A copy of ``net`` (Linear → ReLU → Linear) padded to ``width`` hidden units, computing the same function.

    The new units have outgoing weights 0 (so the output is unchanged), incoming weights drawn from
    N(0, (scale/√d)²) and bias 0, so gradient descent can recruit them.

    Args:
        net: the output of :func:`to_network` (or any network of that shape).
        width: the target hidden width, at least the current one.
        scale: std of the new incoming weights times √d (1 would be LeCun's init).
        seed: seeds the draw when no generator is given.
        generator: a CPU generator for the draw.
    """
    first, last = _layers(net)
    d, h, p = first.in_features, first.out_features, last.out_features
    if not isinstance(width, int) or width < h:
        raise ConfigError(f"widen: width={width!r} must be an integer ≥ the network's {h} hidden units (a network "
                          f"cannot be narrowed without changing its function).")
    if not scale >= 0:
        raise ConfigError(f"widen: scale={scale!r} must be ≥ 0 (the new incoming weights' std is scale/√d).")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    extra = torch.randn(width - h, d, generator=gen, dtype=torch.float64) * (scale / math.sqrt(d))
    dtype, dev = first.weight.dtype, first.weight.device
    wide_first = nn.Linear(d, width, dtype=dtype, device=dev)
    wide_last = nn.Linear(width, p, dtype=dtype, device=dev)
    with torch.no_grad():
        wide_first.weight.copy_(torch.cat([first.weight, extra.to(dtype=dtype, device=dev)]))
        wide_first.bias.copy_(torch.cat([first.bias, first.bias.new_zeros(width - h)]))
        wide_last.weight.copy_(torch.cat([last.weight, last.weight.new_zeros(p, width - h)], 1))
        wide_last.bias.copy_(last.bias)
    return nn.Sequential(wide_first, nn.ReLU(), wide_last)
