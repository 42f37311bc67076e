"""Decision-region geometry of a fully connected layer (FC-geometry, docs/science/secondary.md).

Source: E. van den Berg, "Some insights into the geometry and training of neural networks",
arXiv:1605.00329 (FC-geometry). Its body text was not recovered: the concrete definitions below
(the band constant c_φ(δ), the in-band rule for ReLU-like units, the squared-norm gradient share)
are **our instantiation** of its ideas, and are labelled so wherever they are shown.

A layer z = Wx + b with W (H×d), b (H,) cuts input space R^d with H hyperplanes w_kᵀx + b_k = 0.

- **Signed distance** of a sample to unit k's hyperplane: d_k(x) = (w_kᵀx + b_k)/‖w_k‖
  (:func:`signed_distances`).
- **Activation pattern**: the side of each hyperplane, z_k > 0 (:func:`activation_patterns`); the
  data occupy some number of distinct patterns (:func:`count_patterns`), at most the number of
  regions of a generic arrangement of H hyperplanes in R^d, Σ_{i≤d} C(H, i)
  (:func:`arrangement_bound`, :func:`log_arrangement_bound`).
- **Transition band** (ours): unit k is *not saturated* where its output lies in the inner
  (1 − 2δ) of its range. For sigmoid, σ(z) ∈ (δ, 1 − δ) ⇔ |z| < ln((1 − δ)/δ); for tanh,
  tanh(z) ∈ (−1 + 2δ, 1 − 2δ) ⇔ |z| < ½·ln((1 − δ)/δ). With c_φ(δ) that bound on |z| the band is
  |d_k(x)| < h_k(δ) = c_φ(δ)/‖w_k‖ (:func:`band_halfwidth`): scaling (W, b) by α keeps every
  hyperplane and pattern and divides h_k by α. δ must lie in (0, ½).
  ReLU-like units do not saturate: they have no band (h_k = NaN); their "in band" samples are the
  *active* ones, z_k > 0, the samples through which the unit passes gradient (:func:`in_band`).
- **Gradient share** (ours): a sample's gradient with respect to row k of W (and b_k) is
  ∂ℓ/∂z_k · [x, 1], so its squared norm is (∂ℓ/∂z_k)²·(‖x‖² + 1) and these pieces add up to the
  layer's per-sample squared gradient norm. The share carried by in-band samples is
  Σ_{(i,k) in band} ‖∂ℓ_i/∂w_k‖² / Σ_{(i,k)} ‖∂ℓ_i/∂w_k‖² (:func:`gradient_share`). ∂ℓ/∂z comes in
  closed form for the first layer of a one-hidden-layer classifier
  (:func:`first_layer_output_gradients`); for a layer anywhere in a network,
  :func:`per_sample_weight_gradients` gives the per-sample gradients by ``torch.func`` and
  :func:`row_gradient_norms` their row norms.

Everything is batched over samples and units (tensor ops only) and follows the input's device.

Example::

    >>> W, b = torch.randn(3, 2), torch.randn(3)
    >>> X = torch.rand(1000, 2) * 20 - 10
    >>> count_patterns(activation_patterns(W, b, X))        # 7: three generic lines cut R² into 7 regions
    >>> arrangement_bound(3, 2)                             # 7 = C(3,0) + C(3,1) + C(3,2)
    >>> band_constant("sigmoid", 0.1)                       # 2.197 = ln 9
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from stabilityscope.errors import ConfigError

# c_φ(δ) = scale · ln((1 − δ)/δ): the |z| below which φ's output stays in the inner (1 − 2δ) of its range.
SATURATING = {"tanh": 0.5, "sigmoid": 1.0}
# Units that do not saturate: their "in band" samples are the active ones (z > 0).
RELU_LIKE = ("relu", "relu6", "leaky_relu", "prelu", "gelu", "gelu_tanh", "quick_gelu", "silu", "elu", "selu",
             "celu", "softplus", "mish", "hardswish", "star_relu")


def check_delta(delta: float) -> float:
    """``delta`` as a float, or a ConfigError when it is outside (0, ½)."""
    delta = float(delta)
    if not 0.0 < delta < 0.5:
        raise ConfigError(f"Invalid band threshold delta={delta!r}: δ must lie in the open interval (0, 0.5); the "
                          f"band is where a unit's output stays in the inner (1 − 2δ) of its range (e.g. 0.1).")
    return delta


def band_kind(activation: Optional[str]) -> str:
    """``saturating`` (tanh, sigmoid), ``relu`` (ReLU-like: active fraction instead of a band) or ``none``."""
    if activation in SATURATING:
        return "saturating"
    if activation in RELU_LIKE:
        return "relu"
    return "none"


def band_constant(activation: str, delta: float) -> float:
    """c_φ(δ): sigmoid ln((1 − δ)/δ), tanh ½·ln((1 − δ)/δ) (our instantiation); NaN for other φ."""
    delta = check_delta(delta)
    if activation not in SATURATING:
        return float("nan")
    return SATURATING[activation] * math.log((1.0 - delta) / delta)


def _flat(X: torch.Tensor, W: torch.Tensor, layer: str = "layer") -> torch.Tensor:
    if X.dim() != 2 or X.shape[-1] != W.shape[-1]:
        raise ConfigError(f"{layer}: decision-region geometry needs a flat feature vector per sample, (n, "
                          f"{W.shape[-1]}), as input of a fully connected layer; got inputs of shape "
                          f"{tuple(X.shape)} (a convolution or a token sequence has no single set of hyperplanes).")
    return X


def preactivations(W: torch.Tensor, b: Optional[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """z = X Wᵀ + b, (n, H)."""
    z = X @ W.T
    return z if b is None else z + b


def signed_distances(W: torch.Tensor, b: Optional[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """d_k(x) = (w_kᵀx + b_k)/‖w_k‖ for every sample and unit, (n, H); a zero row gives ±inf/NaN."""
    X = _flat(X, W)
    return preactivations(W, b, X) / torch.linalg.vector_norm(W, dim=-1)


def activation_patterns(W: torch.Tensor, b: Optional[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """Which side of each hyperplane every sample lies on: z > 0, bool (n, H)."""
    return preactivations(W, b, _flat(X, W)) > 0


def count_patterns(patterns: torch.Tensor) -> int:
    """Number of distinct rows of a (n, H) pattern matrix: the regions the data occupy."""
    if patterns.shape[0] == 0:
        return 0
    H = patterns.shape[1]
    if H <= 62:  # pack each pattern into one int64 and count unique integers
        weights = 2 ** torch.arange(H, device=patterns.device, dtype=torch.int64)
        return int(torch.unique((patterns.to(torch.int64) * weights).sum(1)).numel())
    return int(torch.unique(patterns.to(torch.uint8), dim=0).shape[0])


def arrangement_bound(H: int, d: int) -> int:
    """Σ_{i=0}^{d} C(H, i): the regions of H hyperplanes in general position in R^d (exact integer)."""
    return sum(math.comb(H, i) for i in range(min(H, d) + 1))


def log_arrangement_bound(H: int, d: int) -> float:
    """ln Σ_{i≤d} C(H, i), for arrangements whose count overflows a float (log-sum-exp of lgammas)."""
    i = torch.arange(min(H, d) + 1, dtype=torch.float64)
    log_c = math.lgamma(H + 1) - torch.lgamma(i + 1) - torch.lgamma(H - i + 1)
    return float(torch.logsumexp(log_c, 0))


def band_halfwidth(W: torch.Tensor, activation: str, delta: float) -> torch.Tensor:
    """h_k(δ) = c_φ(δ)/‖w_k‖ per unit, (H,); NaN for ReLU-like and other non-saturating φ."""
    return band_constant(activation, delta) / torch.linalg.vector_norm(W, dim=-1)


def in_band(W: torch.Tensor, b: Optional[torch.Tensor], X: torch.Tensor, activation: str,
            delta: float) -> torch.Tensor:
    """Samples in unit k's transition band, bool (n, H): |d_k(x)| < h_k(δ), i.e. |z_k| < c_φ(δ).

    ReLU-like units (no saturation, so no band): the active samples, z_k > 0 (our instantiation).
    """
    check_delta(delta)
    z = preactivations(W, b, _flat(X, W))
    kind = band_kind(activation)
    if kind == "relu":
        return z > 0
    if kind == "none":
        raise ConfigError(f"activation={activation!r} has no transition band: allowed are the saturating "
                          f"{', '.join(SATURATING)} and the ReLU-like {', '.join(RELU_LIKE)}.")
    return z.abs() < band_constant(activation, delta)


def row_gradient_norms(X: torch.Tensor, grad_z: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """‖∂ℓ_i/∂(w_k, b_k)‖² = (∂ℓ_i/∂z_ik)²·(‖x_i‖² + 1) per sample and unit, (n, H) (closed form).

    A sample's weight gradient of z = Wx + b is the outer product (∂ℓ/∂z) xᵀ, so its row norms
    factorise; without a bias the + 1 is left out.
    """
    sq = (X * X).sum(-1, keepdim=True) + (1.0 if bias else 0.0)  # (n, 1)
    return grad_z.square() * sq


def gradient_share(row_norms_sq: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of the layer's summed per-sample squared gradient norm carried by the (sample, unit)
    pairs in ``mask`` (our instantiation); NaN when the gradient vanishes everywhere."""
    total = row_norms_sq.sum()
    if not bool(total > 0):
        return float("nan")
    return float((row_norms_sq * mask).sum() / total)


def first_layer_output_gradients(W: torch.Tensor, b: Optional[torch.Tensor], activation: str,
                                 V: torch.Tensor, c: Optional[torch.Tensor], X: torch.Tensor,
                                 y: torch.Tensor) -> torch.Tensor:
    """∂ℓ_i/∂z_i in closed form for x → V φ(Wx + b) + c with softmax cross-entropy, (n, H).

    ∂ℓ/∂logits = softmax − onehot(y); ∂ℓ/∂z = φ'(z) ⊙ (Vᵀ(p − onehot)). φ: tanh, sigmoid or relu.
    """
    z = preactivations(W, b, _flat(X, W))
    if activation == "tanh":
        h = torch.tanh(z)
        dphi = 1 - h * h
    elif activation == "sigmoid":
        h = torch.sigmoid(z)
        dphi = h * (1 - h)
    elif activation == "relu":
        h, dphi = z.clamp_min(0), (z > 0).to(z.dtype)
    else:
        raise ConfigError(f"first_layer_output_gradients: activation={activation!r}; allowed: tanh, sigmoid, relu "
                          f"(use per_sample_weight_gradients for any other layer).")
    logits = h @ V.T if c is None else h @ V.T + c
    err = torch.softmax(logits, -1) - F.one_hot(y, logits.shape[-1]).to(logits.dtype)  # (n, C)
    return dphi * (err @ V)


def per_sample_weight_gradients(loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                                weight: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                                chunk: int = 256) -> torch.Tensor:
    """Per-sample gradients ∂ℓ(weight; x_i, y_i)/∂weight by ``torch.func`` (vmap of grad), ``(n, *weight.shape)``.

    Args:
        loss: ``loss(weight, x, y)`` for one sample (x without the batch axis), a scalar; e.g. a
            ``torch.func.functional_call`` of the whole model with the layer's weight replaced.
        weight: the layer parameter to differentiate.
        X, y: samples and labels.
        chunk: samples per vmap call (memory: chunk × weight.numel() values).
    """
    g = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
    w = weight.detach()
    return torch.cat([g(w, X[i:i + chunk], y[i:i + chunk]) for i in range(0, len(X), chunk)])


@dataclass(frozen=True)
class LayerGeometry:
    """One layer's geometry on a sample of n inputs (see the module docstring; band and share: ours)."""

    distances: torch.Tensor  # (n, H) signed distances d_k(x)
    patterns: torch.Tensor  # (n, H) bool, z > 0
    occupied_patterns: int  # distinct patterns among the n samples
    log_arrangement_bound: float  # ln Σ_{i≤d} C(H, i)
    halfwidth: torch.Tensor  # (H,) band half-width h_k(δ) (NaN: ReLU-like / no band)
    in_band: torch.Tensor  # (n, H) bool (ReLU-like: active)
    gradient_share: float  # share of the per-sample squared gradient norm in band (NaN without gradients)
    kind: str = "saturating"  # band_kind of the activation: saturating, relu (active = in band) or none

    @property
    def in_band_counts(self) -> torch.Tensor:
        """The number of samples in each unit's band, n_k(δ), (H,)."""
        return self.in_band.sum(0)

    def summary(self) -> dict[str, float]:
        """The scalars recorded per checkpoint (trace names)."""
        h = self.halfwidth
        finite = h[torch.isfinite(h)]
        return {"band_halfwidth_mean": float(finite.mean()) if finite.numel() else float("nan"),
                "band_halfwidth_median": float(finite.median()) if finite.numel() else float("nan"),
                "in_band_fraction": float(self.in_band.float().mean()) if self.kind != "none" else float("nan"),
                "gradient_share_in_band": self.gradient_share,
                "occupied_patterns": float(self.occupied_patterns),
                "mean_abs_distance": float(self.distances.abs().mean())}


def layer_geometry(W: torch.Tensor, b: Optional[torch.Tensor], X: torch.Tensor, activation: str, delta: float = 0.1,
                   grad_z: Optional[torch.Tensor] = None, layer: str = "layer") -> LayerGeometry:
    """Everything above for one layer on samples X (n, d).

    Args:
        W, b: the layer's weight (H, d) and bias (H,) or None.
        X: the layer's inputs, one flat feature vector per sample.
        activation: φ after the layer (tanh, sigmoid, ReLU-like); in-band needs one of these.
        delta: band threshold δ ∈ (0, ½).
        grad_z: ∂ℓ_i/∂z_i (n, H) for the gradient share (closed form:
            :func:`first_layer_output_gradients`; any layer: a backward pass or ``torch.func``).
        layer: the layer's name, for errors.
    """
    check_delta(delta)
    X = _flat(X, W, layer)
    W, X = W.detach(), X.detach()
    b = None if b is None else b.detach()
    z = preactivations(W, b, X)
    distances = z / torch.linalg.vector_norm(W, dim=-1)
    patterns = z > 0
    kind = band_kind(activation)
    if kind == "relu":
        band = patterns
    elif kind == "saturating":
        band = z.abs() < band_constant(activation, delta)
    else:
        band = torch.zeros_like(patterns)
    halfwidth = band_halfwidth(W, activation, delta)
    share = float("nan")
    if grad_z is not None and kind != "none":
        share = gradient_share(row_gradient_norms(X, grad_z.detach(), bias=b is not None), band)
    return LayerGeometry(distances, patterns, count_patterns(patterns), log_arrangement_bound(W.shape[0], W.shape[1]),
                         halfwidth, band, share, kind)


GEOMETRY_STATS = ("band_halfwidth_mean", "band_halfwidth_median", "in_band_fraction", "gradient_share_in_band",
                  "occupied_patterns", "mean_abs_distance")
