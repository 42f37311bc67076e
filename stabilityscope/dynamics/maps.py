"""Iterated maps F: R^N → R^N built from a network (EOC-optimality, docs/science/iterated-maps.md).

EOC-optimality reads a trained network, or a piece of it whose output has its input's shape, as a
discrete-time dynamical system x_{t+1} = F(x_t) and measures its asymptotic behaviour
(see :mod:`stabilityscope.dynamics.lyapunov`). This module supplies the maps:

- :class:`LayerMap` — one square fully connected layer F(x) = φ(W x + b), or a stack of L of them
  (layers or checkpoints) iterated side by side, with the closed-form Jacobian diag(φ'(Wx + b))·W;
- :class:`ModuleMap` — any shape-preserving torch module (an MLP block d → 4d → d, a sub-network
  image → image), differentiated with ``torch.func``.

A single non-square layer has no iterated map (its output is not a point of its input space);
such a layer only gets the mean-field surrogate coordinates of docs/science/mean-field.md. This rule is
ours, not the papers'.

Shapes. States are (B, N) for one map (B start states) or (L, B, N) for L stacked maps; a (B, N)
batch given to a stack is shared by all L maps. Tangent vectors are columns: (..., B, N, k).
Computation follows the device and dtype of the states.
"""
from __future__ import annotations

import abc
import math
from typing import Callable, Sequence, Union

import torch
from torch import Tensor, nn

Activation = Union[str, Callable[[Tensor], Tensor]]
ACTIVATIONS = ("tanh", "relu", "identity", "sigmoid")
_MODULE_ACTIVATIONS = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Identity: "identity", nn.Sigmoid: "sigmoid"}


class IteratedMap(abc.ABC):
    """A map F: R^N → R^N, batched over start states and (optionally) over stacked maps.

    Attributes:
        dim: the state dimension N.
        n_maps: the number L of stacked maps, or None for a single map.
    """

    dim: int
    n_maps: int | None = None

    @abc.abstractmethod
    def __call__(self, x: Tensor) -> Tensor:
        """F(x) for states (..., B, N); returns (..., B, N) (leading L added for a stack)."""

    @abc.abstractmethod
    def jvp(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """F(x) and the Jacobian-vector products J(x)·v.

        Args:
            x: states (..., B, N).
            v: tangent vectors as columns (..., B, N, k), k ≥ 1.

        Returns:
            (F(x) of shape (..., B, N), J(x)·v of shape (..., B, N, k)).
        """

    @abc.abstractmethod
    def jacobian(self, x: Tensor) -> Tensor:
        """The Jacobian ∂F(x), shape (..., B, N, N)."""

    def broadcast_states(self, x: Tensor) -> Tensor:
        """``x`` expanded to the leading shape F returns (a (B, N) batch is shared by a stack)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"states have last dimension {x.shape[-1]}, the map has N = {self.dim}")
        if self.n_maps is None:
            return x
        if x.dim() == 2:
            return x.expand(self.n_maps, *x.shape)
        if x.dim() != 3 or x.shape[0] != self.n_maps:
            raise ValueError(f"a stack of {self.n_maps} maps takes states (B, N) or ({self.n_maps}, B, N), "
                             f"got {tuple(x.shape)}")
        return x

    def jvp_reflectors(self, x: Tensor, reflectors: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        """F(x) and J(x)·Q for a frame Q given by its Householder reflectors (``torch.geqrf``'s output).

        Q = H_1 ⋯ H_k, H_i = I − tau_i w_i w_iᵀ, its first k columns being the frame. This default forms
        them (orgqr) and calls :meth:`jvp`; a map that can apply the reflectors directly overrides it.

        Args:
            x: states (..., B, N).
            reflectors: (..., B, N, k) as returned by ``torch.geqrf``.
            tau: (..., B, k).

        Returns:
            (F(x) of shape (..., B, N), J(x)·Q[:, :k] of shape (..., B, N, k)).
        """
        return self.jvp(x, torch.linalg.householder_product(reflectors, tau))

    def tracked_step(self, x: Tensor, x_other: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step of a reference orbit, a second (perturbed) orbit and tangent vectors at once.

        Returns:
            (F(x), F(x_other), J(x)·v). Subclasses fuse the three into one evaluation.
        """
        fx, jv = self.jvp(x, v)
        return fx, self(x_other), jv

    def jacobian_norm(self, x: Tensor) -> Tensor:
        """Frobenius norm ||∂F(x)||_F per state, shape (..., B)."""
        return torch.linalg.matrix_norm(self.jacobian(x))

    def linearization(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """v ↦ J(x)·v at fixed states x (..., B, N), for tangent columns v (..., B, N, k).

        For an orbit held at a fixed point (``map_measures(hold_tol=...)``) the states stop changing, so a
        map can prepare what J(x) needs once; this default calls :meth:`jvp` each time.
        """
        return lambda v: self.jvp(x, v)[1]


def _activation_name(activation: Activation | nn.Module) -> Activation:
    """Canonical activation: a known name, or a callable (differentiated by autodiff)."""
    if isinstance(activation, str):
        name = activation.lower()
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS} or a callable")
        return name
    for cls, name in _MODULE_ACTIVATIONS.items():
        if type(activation) is cls:
            return name
    if not callable(activation):
        raise TypeError(f"activation must be a name or a callable, got {type(activation).__name__}")
    return activation


def _activate(pre: Tensor, activation: Activation) -> tuple[Tensor, Tensor | None]:
    """φ(pre) and φ'(pre) elementwise; φ' is None for the identity (no multiply needed)."""
    if activation == "tanh":
        y = torch.tanh(pre)
        return y, 1 - y * y
    if activation == "relu":
        return torch.relu(pre), (pre > 0).to(pre.dtype)
    if activation == "sigmoid":
        y = torch.sigmoid(pre)
        return y, y * (1 - y)
    if activation == "identity":
        return pre, None
    # An elementwise callable: forward mode with an all-ones tangent gives φ' in the same pass.
    return torch.func.jvp(activation, (pre,), (torch.ones_like(pre),))


class LayerMap(IteratedMap):
    """F(x) = φ(W x + b) for one square layer or a stack of L square layers.

    The Jacobian is diag(φ'(Wx + b))·W in closed form (EOC-optimality; docs/science/iterated-maps.md), so the
    Jacobian-vector product costs one matrix product: J v = φ'(Wx + b) ⊙ (W v). In ``tracked_step``
    the two states and the tangent vectors go through the same product as rows of one matrix.

    Args:
        weight: (N, N), (L, N, N), or a list of (N, N) matrices (stacked).
        bias: None, (N,), (L, N) or a list of (N,) vectors.
        activation: "tanh", "relu", "identity", "sigmoid", the matching ``nn`` module, or an
            elementwise callable (its derivative then comes from forward-mode autodiff).

    Raises:
        ValueError: for a non-square weight — a single M×N layer with M ≠ N has no iterated map;
            use its mean-field surrogate coordinates (docs/science/mean-field.md) instead.
    """

    def __init__(self, weight: Tensor | Sequence[Tensor], bias: Tensor | Sequence[Tensor] | None = None,
                 activation: Activation | nn.Module = "tanh") -> None:
        if isinstance(weight, (list, tuple)):
            weight = torch.stack([torch.as_tensor(w) for w in weight])
        if isinstance(bias, (list, tuple)):
            bias = torch.stack([torch.as_tensor(b) for b in bias])
        weight = torch.as_tensor(weight).detach()
        if weight.dim() not in (2, 3):
            raise ValueError(f"weight must be (N, N) or (L, N, N), got shape {tuple(weight.shape)}")
        n_out, n_in = weight.shape[-2:]
        if n_out != n_in:
            raise ValueError(
                f"LayerMap needs a square weight, got {n_out}×{n_in}: a single non-square layer has no "
                "iterated map (its output is not in its input space); it only has the mean-field "
                "surrogate coordinates of docs/science/mean-field.md. Use a chain of layers returning to the "
                "input width (ModuleMap) to iterate it.")
        self.weight = weight  # (N, N) or (L, N, N)
        self.n_maps = weight.shape[0] if weight.dim() == 3 else None
        self.dim = n_in
        if bias is not None:
            bias = torch.as_tensor(bias).detach()
            ok = bias.shape == (n_in,) or (self.n_maps is not None and bias.shape == (self.n_maps, n_in))
            if not ok:
                raise ValueError(f"bias of shape {tuple(bias.shape)} does not fit weight {tuple(weight.shape)}")
        self.bias = bias  # None, (N,) or (L, N)
        self.activation = _activation_name(activation)

    @classmethod
    def from_linear(cls, linear: nn.Linear, activation: Activation | nn.Module = "tanh") -> LayerMap:
        """The map φ(linear(x)) of a square ``nn.Linear`` (ValueError when it is not square)."""
        return cls(linear.weight, linear.bias, activation)

    @classmethod
    def stack(cls, maps: Sequence[LayerMap]) -> LayerMap:
        """One stacked LayerMap from single maps of equal N and activation (missing biases → 0)."""
        if not maps:
            raise ValueError("stack needs at least one LayerMap")
        if any(m.n_maps is not None for m in maps):
            raise ValueError("stack takes single (unstacked) LayerMaps")
        act, n = maps[0].activation, maps[0].dim
        if any(m.activation != act for m in maps) or any(m.dim != n for m in maps):
            raise ValueError("stacked maps must share the state dimension and the activation")
        weight = torch.stack([m.weight for m in maps])
        bias = None
        if any(m.bias is not None for m in maps):
            bias = torch.stack([m.bias if m.bias is not None else weight.new_zeros(n) for m in maps])
        return cls(weight, bias, act)

    def _params(self, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """W and b on the device and in the dtype of ``like`` (a no-op when they already match)."""
        w = self.weight.to(device=like.device, dtype=like.dtype)
        b = None if self.bias is None else self.bias.to(device=like.device, dtype=like.dtype)
        return w, b

    def _rows_times_wt(self, rows: Tensor, w: Tensor) -> Tensor:
        """rows @ Wᵀ for rows (..., N) (stack: (L, ..., N)) as one GEMM per map."""
        if self.n_maps is None:
            return rows @ w.mT  # all leading dims fold into a single GEMM
        # (L, ..., N) → (L, M, N): one bmm, rather than broadcasting W over the batch (which copies W)
        flat = rows.reshape(self.n_maps, -1, self.dim)
        return torch.bmm(flat, w.mT).reshape(rows.shape)

    def _add_bias(self, pre: Tensor, b: Tensor | None) -> Tensor:
        if b is None:
            return pre
        if b.dim() == 2:  # (L, N) → (L, 1, ..., 1, N)
            b = b.reshape(b.shape[0], *([1] * (pre.dim() - 2)), b.shape[1])
        return pre + b

    def __call__(self, x: Tensor) -> Tensor:
        x = self.broadcast_states(x)
        w, b = self._params(x)
        return _activate(self._add_bias(self._rows_times_wt(x, w), b), self.activation)[0]

    def _fused(self, states: list[Tensor], v: Tensor) -> tuple[list[Tensor], Tensor]:
        """φ(W s + b) for each state batch and J(states[0])·v from one matrix product."""
        x = states[0]
        v = v.expand(*x.shape, v.shape[-1])
        n_s = len(states)
        # rows: the states and the k tangent vectors of each start state, (..., B, n_s + k, N)
        rows = torch.cat([s.unsqueeze(-2) for s in states] + [v.mT], dim=-2)
        w, b = self._params(x)
        out = self._rows_times_wt(rows, w)
        outs, dy0 = [], None
        for i in range(n_s):
            y, dy = _activate(self._add_bias(out[..., i, :], b), self.activation)
            outs.append(y)
            dy0 = dy if i == 0 else dy0
        wv = out[..., n_s:, :]  # (..., B, k, N): (W v)ᵀ
        if dy0 is not None:
            wv = wv * dy0.unsqueeze(-2)  # J v = φ'(pre) ⊙ W v
        return outs, wv.mT

    def _state_step(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (..., B, N) broadcast, φ(W x + b) and φ'(W x + b) (None for the identity)."""
        x = self.broadcast_states(x)
        w, b = self._params(x)
        return (x, *_activate(self._add_bias(self._rows_times_wt(x, w), b), self.activation))

    def jvp(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # F(x) and W v as two products (same flops as one fused product, no concatenation copy), so the
        # orbit is computed exactly as in jvp_reflectors: lyapunov_spectrum's orbit, bit for bit, does
        # not depend on how its tangent frame is held. A chaotic orbit amplifies any rounding difference.
        x, y, dy = self._state_step(x)
        w = self._params(x)[0]
        wv = self._rows_times_wt(v.expand(*x.shape, v.shape[-1]).mT, w)  # (..., B, k, N): (W v)ᵀ
        if dy is not None:
            wv = wv * dy.unsqueeze(-2)  # J v = φ'(pre) ⊙ W v
        return y, wv.mT

    def linearization(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        # φ'(Wx + b) once; each call is then one product W v of the k tangent rows (tracked_step: 2 + k rows)
        x, _, dy = self._state_step(x)
        w = self._params(x)[0]

        def apply(v: Tensor) -> Tensor:
            rows = v.expand(*x.shape, v.shape[-1]).mT.contiguous()  # (..., B, k, N); strided rows take a slow GEMM
            wv = self._rows_times_wt(rows, w)  # (W v)ᵀ
            return (wv if dy is None else wv * dy.unsqueeze(-2)).mT

        return apply

    def jvp_reflectors(self, x: Tensor, reflectors: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        """F(x) and J Q = φ'(Wx + b) ⊙ (W Q), W Q by applying the reflectors to W from the right (ormqr).

        ormqr costs ~4N²k − 2Nk² flops against 2N²k for W·Q plus ~4Nk² for forming Q (orgqr), so it
        pays for wide frames (k close to N): at k = N it saves the N×N orgqr, 4/3 N³ flops per step.
        """
        x, y, dy = self._state_step(x)
        w = self._params(x)[0]
        n, k = self.dim, reflectors.shape[-1]
        if self.n_maps is not None:  # (L, N, N) → (L, 1, ..., 1, N, N) against reflectors (L, ..., B, N, k)
            w = w.reshape(self.n_maps, *([1] * (reflectors.dim() - 3)), n, n)
        # W·(H_1 ⋯ H_k): all N columns of W Q_full, (..., B, N, N) column-major; the frame is the first k
        wq = torch.ormqr(reflectors, tau, w.expand(*reflectors.shape[:-2], n, n), left=False)[..., :k]
        return y, wq if dy is None else wq * dy.unsqueeze(-1)  # row i of J is φ'_i W_i·

    def tracked_step(self, x: Tensor, x_other: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, x_other = self.broadcast_states(x), self.broadcast_states(x_other)
        (fx, fo), jv = self._fused([x, x_other], v)
        return fx, fo, jv

    def _derivative(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """W (broadcastable to (..., B, N, N)) and φ'(Wx + b) of shape (..., B, N)."""
        x = self.broadcast_states(x)
        w, b = self._params(x)
        pre = self._add_bias(self._rows_times_wt(x, w), b)
        dy = _activate(pre, self.activation)[1]
        if dy is None:
            dy = torch.ones_like(pre)
        if self.n_maps is not None:
            w = w.reshape(self.n_maps, *([1] * (x.dim() - 2)), self.dim, self.dim)
        return w, dy

    def jacobian(self, x: Tensor) -> Tensor:
        w, dy = self._derivative(x)
        return dy.unsqueeze(-1) * w  # diag(φ') W: row i scaled by φ'_i

    def jacobian_norm(self, x: Tensor) -> Tensor:
        # ||diag(φ')W||_F² = Σ_i φ'_i² ||W_i·||², without forming the (..., B, N, N) Jacobian
        w, dy = self._derivative(x)
        row_sq = w.square().sum(-1)  # ||W_i·||²: (N,) or (L, 1, ..., 1, N), broadcasts against dy
        return (dy.square() * row_sq).sum(-1).sqrt()

    def __repr__(self) -> str:
        act = self.activation if isinstance(self.activation, str) else getattr(self.activation, "__name__", "callable")
        stack = f"{self.n_maps}×" if self.n_maps is not None else ""
        return f"LayerMap({stack}{self.dim}×{self.dim}, bias={self.bias is not None}, activation={act})"


class ModuleMap(IteratedMap):
    """A shape-preserving module read as a map on flattened states, N = prod(input_shape).

    ``jvp`` uses ``torch.func.jvp`` vmapped over the tangent columns (one forward pass for all k),
    ``jacobian`` uses ``torch.func.jacrev`` vmapped over the batch. The module is put in eval mode
    (batch norm uses running statistics, dropout is off, so start states do not interact) and its
    parameters enter detached, so no parameter gradients are ever built.

    Args:
        module: maps ``(M, *input_shape)`` to ``(M, *input_shape)``; switched to eval mode in place.
            States must be on its device and in its dtype.
        input_shape: shape of one input without the batch dimension, e.g. (784,) or (3, 32, 32).
        chunk_size: optional vmap chunk size for ``jvp``/``jacobian`` (bounds memory for large k, B).
    """

    def __init__(self, module: nn.Module, input_shape: Sequence[int] | int, *, chunk_size: int | None = None) -> None:
        self.module = module.eval()
        self.input_shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(s) for s in input_shape)
        self.dim = math.prod(self.input_shape)
        self.chunk_size = chunk_size
        param = next(iter(module.parameters()), None)
        probe = torch.zeros(1, *self.input_shape, device=param.device if param is not None else None,
                            dtype=param.dtype if param is not None and param.is_floating_point() else None)
        with torch.no_grad():
            out = module(probe)
        if tuple(out.shape[1:]) != self.input_shape:
            raise ValueError(f"ModuleMap needs output shape == input shape {self.input_shape}, the module "
                             f"returns {tuple(out.shape[1:])}: it has no iterated map")

    def _f(self, flat: Tensor) -> Tensor:
        """The module on flat states (M, N) → (M, N), with detached parameters and buffers."""
        state = {k: t.detach() for k, t in self.module.named_parameters()}
        state.update(dict(self.module.named_buffers()))
        out = torch.func.functional_call(self.module, state, (flat.reshape(-1, *self.input_shape),))
        return out.reshape(flat.shape)

    def __call__(self, x: Tensor) -> Tensor:
        x = self.broadcast_states(x)
        with torch.no_grad():
            return self._f(x.reshape(-1, self.dim)).reshape(x.shape)

    def jvp(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        x = self.broadcast_states(x)
        k = v.shape[-1]
        flat = x.reshape(-1, self.dim)  # (M, N)
        vt = v.expand(*x.shape, k).reshape(-1, self.dim, k)  # (M, N, k)

        def one(t: Tensor) -> tuple[Tensor, Tensor]:
            return torch.func.jvp(self._f, (flat,), (t,))

        if k == 1:  # a single column needs no vmap (saves its per-call overhead)
            fx, jv = one(vt[..., 0])
            return fx.reshape(x.shape), jv.reshape(*x.shape, 1)
        # the primal does not depend on the tangent: computed once, unbatched (out_dims None)
        fx, jv = torch.func.vmap(one, in_dims=-1, out_dims=(None, -1), chunk_size=self.chunk_size)(vt)
        return fx.reshape(x.shape), jv.reshape(*x.shape, k)

    def jacobian(self, x: Tensor) -> Tensor:
        x = self.broadcast_states(x)
        flat = x.reshape(-1, self.dim)

        def single(s: Tensor) -> Tensor:  # (N,) → (N,)
            return self._f(s.unsqueeze(0)).squeeze(0)

        jac = torch.func.vmap(torch.func.jacrev(single), chunk_size=self.chunk_size)(flat)  # (M, N, N)
        return jac.reshape(*x.shape, self.dim)

    def jacobian_norm(self, x: Tensor) -> Tensor:
        # Jacobians of a few states at a time (≤ 2^26 entries), so B·N² never sits in memory at once
        x = self.broadcast_states(x)
        flat = x.reshape(-1, self.dim)
        per_chunk = max(1, 2**26 // self.dim**2)
        norms = [torch.linalg.matrix_norm(self.jacobian(flat[i:i + per_chunk]))
                 for i in range(0, flat.shape[0], per_chunk)]
        return torch.cat(norms).reshape(x.shape[:-1])

    def __repr__(self) -> str:
        return f"ModuleMap({type(self.module).__name__}, input_shape={self.input_shape})"
