"""Module maps for tracking: blocks of a large model iterated cheaply (EOC-optimality, SCIENCE.md §2).

:class:`ProbedModuleMap` is one module (an MLP block, a model prefix) read as a map, called directly
rather than through ``functional_call``, with M1 (||∂F||_F) from random probes when N is large. It
leaves the parameters as they are: the tracker switches ``requires_grad`` off while it measures, so
derivatives are taken with respect to the states only.

(Stacking L identical blocks and vmapping ``functional_call`` over their stacked parameters was
measured 3× slower than iterating the blocks one by one on a CPU, for ViT-Tiny's MLPs; at the
default 100 start states the blocks' matrix products dominate either way.)
"""
from __future__ import annotations

import torch
from torch import Tensor

from stabilityscope.dynamics.maps import IteratedMap, ModuleMap

EXACT_NORM_MAX = 1024  # module maps with N above this estimate M1 with random probes
NORM_PROBES = 64  # probes of that estimate
_CHUNK = 64  # tangent columns per vmapped jvp


def _norm_from_jvp(F: IteratedMap, x: Tensor) -> Tensor:
    """||∂F(x)||_F per state from Jacobian-vector products, (..., B).

    Exact for N ≤ EXACT_NORM_MAX (the identity's columns in chunks: ||J||_F² = Σ_j ||J e_j||²);
    above, the unbiased estimate ||J||_F² ≈ mean_k ||J v_k||² over NORM_PROBES seeded Gaussian
    probes (relative standard deviation at most sqrt(2/NORM_PROBES) per state).
    """
    n = F.dim
    if n <= EXACT_NORM_MAX:
        cols = torch.eye(n, device=x.device, dtype=x.dtype)
        scale = 1.0
    else:
        gen = torch.Generator(device=x.device).manual_seed(0)
        cols = torch.randn(n, NORM_PROBES, generator=gen, device=x.device, dtype=x.dtype)
        scale = 1.0 / NORM_PROBES
    total = torch.zeros(x.shape[:-1], device=x.device, dtype=x.dtype)
    for j in range(0, cols.shape[1], _CHUNK):
        _, jv = F.jvp(x, cols[:, j:j + _CHUNK])  # (..., B, N, c)
        total = total + jv.square().sum((-2, -1))
    return (total * scale).sqrt()


class ProbedModuleMap(ModuleMap):
    """A :class:`ModuleMap` called directly (several times faster than ``functional_call`` for small
    blocks), whose M1 uses random probes when N > EXACT_NORM_MAX (the exact norm needs N backward
    passes per state: 3072 for a CIFAR image, which dominates on a CPU)."""

    def _f(self, flat: Tensor) -> Tensor:
        return self.module(flat.reshape(-1, *self.input_shape)).reshape(flat.shape)

    def jacobian_norm(self, x: Tensor) -> Tensor:
        if self.dim <= EXACT_NORM_MAX:
            return super().jacobian_norm(x)
        x = self.broadcast_states(x)
        return torch.cat([_norm_from_jvp(self, x[..., i:i + 8, :]) for i in range(0, x.shape[-2], 8)], -1)
