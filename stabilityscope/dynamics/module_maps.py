"""Module maps for tracking: blocks of a large model iterated cheaply (EOC-optimality, docs/science/iterated-maps.md).

:class:`ProbedModuleMap` is one module (an MLP block, a model prefix) read as a map, called directly
rather than through ``functional_call``, with M1 (||∂F||_F) from random probes when N is large. An
MLP block that is exactly Linear → elementwise activation → Linear (timm's ``Mlp``, a ``Sequential``;
dropout is off in eval) gets M1 in closed form instead, exact at any N (:func:`mlp_jacobian_norm`). It
leaves the parameters as they are: the tracker switches ``requires_grad`` off while it measures, so
derivatives are taken with respect to the states only.

(Stacking L identical blocks and vmapping ``functional_call`` over their stacked parameters was
measured 3× slower than iterating the blocks one by one on a CPU, for ViT-Tiny's MLPs; at the
default 100 start states the blocks' matrix products dominate either way.)
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from stabilityscope.dynamics.maps import IteratedMap, ModuleMap

EXACT_NORM_MAX = 1024  # module maps with N above this estimate M1 with random probes
NORM_PROBES = 64  # probes of that estimate
_CHUNK = 64  # tangent columns per vmapped jvp
# Activations applied entry by entry (their Jacobian is diagonal), by class name: torch's and timm's.
ELEMENTWISE_ACTIVATIONS = frozenset({"ReLU", "ReLU6", "LeakyReLU", "ELU", "CELU", "SELU", "GELU", "GELUTanh",
                                     "QuickGELU", "SiLU", "Swish", "Mish", "Tanh", "Sigmoid", "Hardswish", "HardSwish",
                                     "Hardsigmoid", "HardSigmoid", "Softplus"})
_TIMM_MLP_PARTS = ("fc1", "act", "drop1", "norm", "fc2", "drop2")  # timm.layers.Mlp.forward's order


def linear_act_linear(module: nn.Module) -> Optional[tuple[nn.Linear, nn.Module, nn.Linear]]:
    """(fc1, φ, fc2) when ``module`` computes fc2(φ(fc1(x))) and nothing else, else None.

    Recognised: an ``nn.Sequential`` and timm's ``Mlp`` (its children in the order its forward applies
    them), each with exactly two ``nn.Linear`` around one elementwise activation; ``nn.Identity`` and
    ``nn.Dropout`` (identity in eval, where maps are measured) may sit anywhere. Anything else (a norm
    between the layers, a gated MLP, 1×1 convolutions) is None: its M1 stays with autograd.
    """
    if isinstance(module, nn.Sequential):
        parts = list(module)
    elif (type(module).__name__ == "Mlp" and type(module).__module__.startswith("timm.")
          and tuple(name for name, _ in module.named_children()) == _TIMM_MLP_PARTS):
        parts = [getattr(module, name) for name in _TIMM_MLP_PARTS]
    else:
        return None
    core = [m for m in parts if not isinstance(m, (nn.Identity, nn.Dropout))]
    if (len(core) == 3 and type(core[0]) is nn.Linear and type(core[2]) is nn.Linear
            and type(core[1]).__name__ in ELEMENTWISE_ACTIVATIONS and core[0].out_features == core[2].in_features):
        return core[0], core[1], core[2]
    return None


def mlp_jacobian_norm(fc1: nn.Linear, act: nn.Module, fc2: nn.Linear, x: Tensor) -> Tensor:
    """||∂F(x)||_F of F(x) = W2 φ(W1 x + b1) + b2 per state, exactly; x (..., d) → (...).

    ∂F = W2 diag(φ'(a)) W1 with a = W1 x + b1 (W1: (h, d), W2: (d, h)), so
    ||∂F||_F² = Σ_ij φ'_i φ'_j (W1 W1ᵀ)_ij (W2ᵀ W2)_ij = φ'ᵀ M φ' with M = (W1 W1ᵀ) ∘ (W2ᵀ W2) (h × h):
    one M for every state (2h²d multiply-adds) and h² per state, against B·h·d² to build the B
    Jacobians (which it does when that is cheaper, few states) and about twice that for autograd's
    d backward passes per state. φ' comes from one forward-mode derivative of φ with unit tangents.
    """
    W1, W2 = fc1.weight, fc2.weight  # (h, d), (d, h)
    h, d = W1.shape
    flat = x.reshape(-1, d)  # (B, d)
    a = torch.nn.functional.linear(flat, W1, fc1.bias)  # (B, h) pre-activations
    _, slope = torch.func.jvp(act, (a,), (torch.ones_like(a),))  # (B, h): φ'(a), φ elementwise
    B = flat.shape[0]
    if 2 * h * h * d + B * h * h <= B * h * d * d:
        M = (W1 @ W1.T) * (W2.T @ W2)  # (h, h)
        sq = ((slope @ M) * slope).sum(-1)  # (B,)
    else:
        sq = torch.matmul(W2 * slope.unsqueeze(-2), W1).square().sum((-2, -1))  # (B, d, d) Jacobians
    return sq.clamp_min(0).sqrt().reshape(x.shape[:-1])


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
    passes per state: 3072 for a CIFAR image, which dominates on a CPU). An MLP block (Linear →
    elementwise φ → Linear, :func:`linear_act_linear`) gets its steps, jvp and M1 in closed form."""

    def _f(self, flat: Tensor) -> Tensor:
        return self.module(flat.reshape(-1, *self.input_shape)).reshape(flat.shape)

    def _mlp(self) -> Optional[tuple[nn.Linear, nn.Module, nn.Linear]]:
        """(fc1, φ, fc2) when the module is Linear → elementwise φ → Linear on flat states, else None."""
        if not hasattr(self, "_mlp_parts"):
            mlp = linear_act_linear(self.module)
            self._mlp_parts = mlp if mlp is not None and mlp[0].in_features == self.dim else None
        return self._mlp_parts

    def _mlp_fused(self, mlp: tuple[nn.Linear, nn.Module, nn.Linear], states: list[Tensor],
                   v: Tensor) -> tuple[list[Tensor], Tensor]:
        """F of each state batch and J(states[0])·v in closed form, each layer one matrix product.

        F(x) = W2 φ(W1 x + b1) + b2 and J v = W2 (φ'(a) ⊙ W1 v), a = W1 x + b1: the states and the k tangent
        columns of each start state go through W1 and W2 as the rows of one matrix, as LayerMap does, instead
        of autodiff's separate primal and tangent passes; φ' comes from one forward-mode derivative of the
        elementwise φ with unit tangents (as in mlp_jacobian_norm).
        """
        fc1, act, fc2 = mlp
        x = states[0]
        v = v.expand(*x.shape, v.shape[-1])
        n_s = len(states)
        rows = torch.cat([s.unsqueeze(-2) for s in states] + [v.mT], dim=-2)  # (..., B, n_s + k, d)
        pre = torch.nn.functional.linear(rows, fc1.weight)  # (..., B, n_s + k, h)
        a = pre[..., :n_s, :] if fc1.bias is None else pre[..., :n_s, :] + fc1.bias
        y, slope = torch.func.jvp(act, (a,), (torch.ones_like(a),))  # φ(a), φ'(a): (..., B, n_s, h)
        hidden = torch.cat([y, pre[..., n_s:, :] * slope[..., :1, :]], dim=-2)  # (..., B, n_s + k, h)
        out = torch.nn.functional.linear(hidden, fc2.weight)  # (..., B, n_s + k, d)
        fs = out[..., :n_s, :] if fc2.bias is None else out[..., :n_s, :] + fc2.bias
        return [fs[..., i, :] for i in range(n_s)], out[..., n_s:, :].mT

    def jvp(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        mlp = self._mlp()
        if mlp is None:
            return super().jvp(x, v)
        (fx,), jv = self._mlp_fused(mlp, [self.broadcast_states(x)], v)
        return fx, jv

    def tracked_step(self, x: Tensor, x_other: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mlp = self._mlp()
        if mlp is None:
            return super().tracked_step(x, x_other, v)
        (fx, fo), jv = self._mlp_fused(mlp, [self.broadcast_states(x), self.broadcast_states(x_other)], v)
        return fx, fo, jv

    def linearization(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        mlp = self._mlp()
        if mlp is None:
            return super().linearization(x)
        fc1, act, fc2 = mlp  # J v = W2 (φ'(a) ⊙ W1 v): φ'(a) once, then two products of the k tangent rows
        x = self.broadcast_states(x)
        a = torch.nn.functional.linear(x, fc1.weight, fc1.bias)  # (..., B, h)
        _, slope = torch.func.jvp(act, (a,), (torch.ones_like(a),))  # φ'(a), as in _mlp_fused

        def apply(v: Tensor) -> Tensor:
            rows = v.expand(*x.shape, v.shape[-1]).mT.contiguous()  # (..., B, k, d); strided rows take a slow GEMM
            hidden = torch.nn.functional.linear(rows, fc1.weight) * slope.unsqueeze(-2)
            return torch.nn.functional.linear(hidden, fc2.weight).mT  # (..., B, d, k)

        return apply

    def jacobian_norm(self, x: Tensor) -> Tensor:
        mlp = linear_act_linear(self.module)
        if mlp is not None and mlp[0].in_features == self.dim:  # exact at any N, without autograd
            return mlp_jacobian_norm(*mlp, self.broadcast_states(x))
        if self.dim <= EXACT_NORM_MAX:
            return super().jacobian_norm(x)
        x = self.broadcast_states(x)
        return torch.cat([_norm_from_jvp(self, x[..., i:i + 8, :]) for i in range(0, x.shape[-2], 8)], -1)
