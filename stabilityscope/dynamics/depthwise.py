"""Depth-wise stability of a network's forward pass, block by block, in scale-free coordinates.

EOC-optimality iterates one map until it forgets its start; a residual network is not such a map.
Its blocks do not share weights, the stream's norm grows through depth, and a block x ↦ x + f(x)
whose branch is small beside the stream has a Jacobian close to the identity whatever its weights.
This module reads each block where it actually acts: at the real activations of test inputs, along
the real forward pass (the docs' science page "Residual and normalised networks" explains the
choices and the traps they avoid).

For a block y = B(x) on one input (x, y flattened to vectors of N_in and N_out entries) with Jacobian
J = ∂y/∂x, the **scale-free block Jacobian** is

    J̃ = (‖x‖ / ‖y‖) · P_y · J · P_x,        P_v = I − v̂ v̂ᵀ,

the Jacobian of the block on directions: a perturbation orthogonal to the stream, measured relative
to the stream, before and after the block. Radial perturbations only rescale the state (a positively
homogeneous block maps x to y exactly along the ray), and the stream's own growth through depth is
divided out, so a block that only rescales the stream reads 1. Readings per block and input:

- ``gain_rms`` = ‖J̃‖_F / √(N_in − 1), the root-mean-square gain of a random direction: the angle
  between two nearby inputs grows by this factor on average (Poole et al. 2016's C'(1), in
  squares; Martens et al. 2021, Deep Kernel Shaping). For a plain layer φ(Wx) with random W at its
  length fixed point and large N it equals √χ of the mean-field theory, and for an iterated map at
  a point of its attractor (‖F(x)‖ ≈ ‖x‖) it equals EOC-optimality's s = ‖∂F‖_F / √N up to O(1/N):
  the edge is ``gain_rms`` = 1 in both pictures.
- ``gain_top``: the top singular value of J̃, from a few steps of Golub–Kahan–Lanczos
  bidiagonalisation (the top singular value of the small bidiagonal matrix: a lower bound that
  converges much faster than power iteration when the top of the spectrum is crowded). Trained
  residual blocks stretch a few directions strongly while leaving most alone, so the typical and the
  top gain say different things (Li & Papyan 2023).
- ``raw_rms`` = ‖J‖_F / √N_in, the same reading without the scale correction or the projections,
  kept to show the trap: it tends to 1 for any block whose branch is small beside the stream, and
  grows with the stream's scale.
- ``branch_ratio`` = ‖y − x‖ / ‖x‖ for shape-preserving blocks (Brock et al. 2021's
  signal-propagation plots): near 0 the block is close to the identity and every reading above is
  close to 1 by construction, not because the block sits at an edge. ``stream_ratio`` = ‖y‖ / ‖x‖.

Through depth, :func:`depth_lyapunov` propagates k orthonormal directions through the product
J̃_{L−1} ⋯ J̃_0 with a QR factorisation after every block (Benettin's method along depth instead of
time): the finite-depth Lyapunov exponents λ_i = (1/L) Σ_l ln |R_ii^(l)| of the scale-free
input-to-output Jacobian (Pennington, Schoenholz, Ganguli 2017; Storm et al. 2024). λ₁ = 0 is the
depth-wise edge: a perturbation's angle to the signal neither grows nor shrinks through the trunk.

Estimators. ``gain_rms`` is exact (N_in − 1 Jacobian-vector products) for N_in ≤ ``exact_max``; above
it is the unbiased random-probe estimate ‖J̃Q‖²_F / m over m orthonormal directions Q drawn
uniformly in x's tangent space, whose standard error (from the spread of the m column gains) is
returned. Jacobian-vector products use forward-mode autodiff (``torch.func.jvp``); timm's fused
attention has no forward-mode rule on the CPU, so :func:`unfused_attention` switches timm attention
modules to their explicit softmax path while measuring. Blocks are evaluated in eval mode by the caller
(batch norm on running statistics, no dropout), so inputs do not interact.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

EXACT_MAX = 256  # blocks with N_in at most this get gain_rms from a full tangent basis
PROBES = 16  # random directions per input for gain_rms above EXACT_MAX
LANCZOS_STEPS = 10  # Golub–Kahan–Lanczos steps on J̃ for gain_top
DEPTH_VECTORS = 8  # directions propagated through depth by depth_lyapunov
_TINY = 1e-30

Block = Callable[[Tensor], Tensor]


@contextlib.contextmanager
def unfused_attention(module: nn.Module) -> Iterator[None]:
    """timm attention modules use their explicit softmax path inside the block (forward-mode autodiff
    has no rule for the fused scaled-dot-product kernel on the CPU); restored on exit."""
    switched = [m for m in module.modules() if getattr(m, "fused_attn", False) is True]
    for m in switched:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in switched:
            m.fused_attn = True


@dataclass(frozen=True)
class BlockReadings:
    """One block's readings per input, each of shape (B,) (see the module docstring)."""

    gain_rms: Tensor
    gain_rms_stderr: Tensor  # standard error of the random-probe estimate (0 when exact)
    gain_top: Tensor
    raw_rms: Tensor
    branch_ratio: Tensor  # NaN when the block changes the shape
    stream_ratio: Tensor
    exact: bool  # gain_rms from a full tangent basis


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def _unit(t: Tensor) -> Tensor:
    """Rows of (B, N) scaled to unit norm."""
    return t / t.norm(dim=-1, keepdim=True).clamp_min(_TINY)


def _project(v: Tensor, unit: Tensor) -> Tensor:
    """v (B, N, k) with its component along the unit rows (B, N) removed: P_u v."""
    return v - unit.unsqueeze(-1) * (unit.unsqueeze(-1) * v).sum(-2, keepdim=True)


class _ScaleFree:
    """J̃ and J̃ᵀ of one block at B inputs, applied to columns (B, N, k)."""

    def __init__(self, block: Block, x: Tensor) -> None:
        self.block, self.x = block, x  # (B, *S_in)
        with torch.no_grad():
            self.y = block(x)  # (B, *S_out)
        xf, yf = _flat(x), _flat(self.y)
        self.x_unit, self.y_unit = _unit(xf), _unit(yf)  # (B, N_in), (B, N_out)
        self.scale = xf.norm(dim=-1) / yf.norm(dim=-1).clamp_min(_TINY)  # (B,) ‖x‖/‖y‖
        self.n_in, self.n_out = xf.shape[1], yf.shape[1]
        self._vjp: Callable | None = None

    def raw(self, v: Tensor) -> Tensor:
        """J v for columns v (B, N_in, k) → (B, N_out, k): one jvp over B·k stacked copies."""
        B, n, k = v.shape
        xs = self.x.repeat_interleave(k, 0)  # (B·k, *S_in)
        tangents = v.permute(0, 2, 1).reshape(B * k, *self.x.shape[1:])
        _, jv = torch.func.jvp(self.block, (xs,), (tangents,))
        return jv.reshape(B, k, -1).permute(0, 2, 1)

    def __call__(self, v: Tensor) -> Tensor:
        """J̃ v for columns v (B, N_in, k) → (B, N_out, k)."""
        jv = self.raw(_project(v, self.x_unit))
        return self.scale[:, None, None] * _project(jv, self.y_unit)

    def transposed(self, u: Tensor) -> Tensor:
        """J̃ᵀ u for one column per input, u (B, N_out) → (B, N_in)."""
        if self._vjp is None:
            with torch.enable_grad():
                _, self._vjp = torch.func.vjp(self.block, self.x)
        cot = _project(u.unsqueeze(-1), self.y_unit)[..., 0].reshape(self.y.shape)
        (jtu,) = self._vjp(cot)
        return self.scale[:, None] * _project(_flat(jtu).unsqueeze(-1), self.x_unit)[..., 0]


def _tangent_basis(x_unit: Tensor) -> Tensor:
    """An orthonormal basis of each row's orthogonal complement, (B, N, N − 1): the Householder
    reflector that maps x̂ to e₁ has the other N − 1 basis vectors as its columns 2..N."""
    B, N = x_unit.shape
    e1 = torch.zeros_like(x_unit)
    e1[:, 0] = 1.0
    sign = torch.where(x_unit[:, :1] >= 0, 1.0, -1.0).to(x_unit.dtype)
    w = _unit(x_unit + sign * e1)  # (B, N): H = I − 2wwᵀ maps x̂ to −sign·e₁
    H = torch.eye(N, dtype=x_unit.dtype, device=x_unit.device) - 2 * w.unsqueeze(-1) * w.unsqueeze(-2)
    return H[..., 1:]


def _random_tangent_frame(x_unit: Tensor, m: int, generator: torch.Generator) -> Tensor:
    """m orthonormal directions per row, uniform in the row's orthogonal complement, (B, N, m)."""
    B, N = x_unit.shape
    g = torch.randn(B, N, m, generator=generator, device=x_unit.device, dtype=x_unit.dtype)
    q, _ = torch.linalg.qr(_project(g, x_unit))
    return q


def block_readings(block: Block, x: Tensor, *, probes: int = PROBES, lanczos_steps: int = LANCZOS_STEPS,
                   exact_max: int = EXACT_MAX, seed: int = 0) -> BlockReadings:
    """The scale-free readings of one block at the inputs ``x`` (B, *S_in) (see the module docstring).

    Args:
        block: a callable (an ``nn.Module`` in eval mode) mapping a batch (B, *S_in) to (B, *S_out),
            sample by sample.
        x: the block's real inputs, e.g. the captured stream of B test images.
        probes: random directions per input for ``gain_rms`` when N_in > ``exact_max``.
        lanczos_steps: Golub–Kahan–Lanczos steps for ``gain_top`` (one jvp and one vjp each; 0: the
            largest probed gain, a cruder lower bound).
        exact_max: largest N_in measured with a full tangent basis.
        seed: seeds the random directions.
    """
    F = _ScaleFree(block, x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    exact = F.n_in <= exact_max
    if exact:
        frame = _tangent_basis(F.x_unit)  # (B, N, N − 1)
    else:
        frame = _random_tangent_frame(F.x_unit, min(probes, F.n_in - 1), gen)  # (B, N, m)
    m = frame.shape[-1]
    cols = F(frame)  # (B, N_out, m)
    col_sq = cols.square().sum(-2)  # (B, m) ‖J̃ q_j‖²
    if exact:
        gain_sq = col_sq.sum(-1) / max(F.n_in - 1, 1)
        stderr = torch.zeros_like(gain_sq)
    else:  # E[‖J̃ q‖²] = ‖J̃‖²_F/(N_in − 1) for q uniform on the unit sphere of the tangent space
        gain_sq = col_sq.mean(-1)
        sq_err = col_sq.std(-1) / math.sqrt(m) if m > 1 else torch.full_like(gain_sq, math.nan)
        stderr = sq_err / (2 * gain_sq.sqrt().clamp_min(_TINY))  # delta method: se(√g) = se(g)/(2√g)
    gain_rms = gain_sq.sqrt()
    # Golub–Kahan–Lanczos on J̃, started from the measured direction the block stretched most
    v0 = frame.gather(-1, col_sq.argmax(-1)[:, None, None].expand(-1, frame.shape[1], 1))[..., 0]  # (B, N_in)
    top = _top_singular_value(F, v0, lanczos_steps) if lanczos_steps else col_sq.max(-1).values.sqrt()
    # the raw Jacobian's RMS singular value, from the same directions plus the radial one
    raw = F.raw(frame).square().sum((-2, -1))  # (B,) Σ_j ‖J q_j‖²
    radial = F.raw(F.x_unit.unsqueeze(-1)).square().sum((-2, -1))  # (B,) ‖J x̂‖²
    raw_rms = ((raw * (F.n_in - 1) / m + radial) / F.n_in).sqrt()
    xf, yf = _flat(x), _flat(F.y)
    branch = ((yf - xf).norm(dim=-1) / xf.norm(dim=-1).clamp_min(_TINY) if xf.shape == yf.shape
              else torch.full((x.shape[0],), math.nan, dtype=x.dtype, device=x.device))
    out = (gain_rms, stderr, top, raw_rms, branch, 1.0 / F.scale)
    return BlockReadings(*(t.detach() for t in out), exact)


def _top_singular_value(F: _ScaleFree, v0: Tensor, steps: int) -> Tensor:
    """σ₁(J̃) per input from ``steps`` of Golub–Kahan–Lanczos bidiagonalisation started at v0 (B, N_in),
    with full reorthogonalisation (Golub & Van Loan, Matrix Computations, §10.4). Returns (B,)."""
    V, U, alphas, betas = [_unit(v0)], [], [], []
    for j in range(steps):
        u = F(V[-1].unsqueeze(-1))[..., 0]  # (B, N_out)
        for w in U:
            u = u - (u * w).sum(-1, keepdim=True) * w
        a = u.norm(dim=-1)
        U.append(u / a.clamp_min(_TINY)[:, None])
        alphas.append(a)
        if j == steps - 1:
            break
        v = F.transposed(U[-1])
        for w in V:
            v = v - (v * w).sum(-1, keepdim=True) * w
        b = v.norm(dim=-1)
        V.append(v / b.clamp_min(_TINY)[:, None])
        betas.append(b)
    bidiag = torch.diag_embed(torch.stack(alphas, -1))  # (B, k, k), k = len(alphas)
    if betas:
        bidiag = bidiag + torch.diag_embed(torch.stack(betas, -1), offset=1)
    return torch.linalg.svdvals(bidiag)[:, 0]


@dataclass(frozen=True)
class DepthSpectrum:
    """Finite-depth Lyapunov exponents of the scale-free trunk Jacobian, per input."""

    exponents: Tensor  # (B, k) λ_1 ≥ ... ≥ λ_k, mean log-stretch per block
    local: Tensor  # (L, B, k) ln |R_ii| of each block: the exponents are their mean over blocks
    n_blocks: int


def depth_lyapunov(blocks: Sequence[Block], states: Sequence[Tensor], *, k: int = DEPTH_VECTORS,
                   seed: int = 0) -> DepthSpectrum:
    """QR through depth: k directions propagated through J̃_{L−1} ⋯ J̃_0 at the captured stream.

    Args:
        blocks: the trunk's blocks in forward order.
        states: each block's real input (B, *S_l), as captured along the forward pass.
        k: directions (capped by the smallest N_l − 1).
        seed: seeds the first directions (uniform in the first input's tangent space).
    """
    if len(blocks) != len(states) or not blocks:
        raise ValueError(f"one input state per block is needed; got {len(blocks)} blocks, {len(states)} states")
    k = min(k, *(_flat(s).shape[1] - 1 for s in states))
    gen = torch.Generator(device=states[0].device).manual_seed(seed)
    local = []
    q = None
    for block, x in zip(blocks, states):
        F = _ScaleFree(block, x)
        if q is None:
            q = _random_tangent_frame(F.x_unit, k, gen)
        elif q.shape[1] != F.n_in:  # the captured stream changed shape between blocks (a gap in the trunk)
            raise ValueError(f"the trunk is not contiguous: a block returned {q.shape[1]} entries per input, the "
                             f"next one takes {F.n_in}")
        else:  # anything between blocks (none in a contiguous trunk) is skipped: stay in the tangent space
            q = torch.linalg.qr(_project(q, F.x_unit))[0]
        q, r = torch.linalg.qr(F(q))  # (B, N_out, k), (B, k, k)
        local.append(r.diagonal(dim1=-2, dim2=-1).abs().clamp_min(_TINY).log())
    loc = torch.stack(local)  # (L, B, k)
    exps = loc.mean(0).sort(-1, descending=True).values
    return DepthSpectrum(exps.detach(), loc.detach(), len(blocks))


class Span(nn.Module):
    """Modules applied one after another: a trunk block made of several of a model's modules (a plain
    network's Linear and its activation). A transient view: the modules stay the model's own."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)

    def forward(self, x: Tensor) -> Tensor:
        for m in self.parts:
            x = m(x)
        return x


def span_module(model: nn.Module, span: Sequence[str]) -> nn.Module:
    """The callable of one trunk span: the module itself, or a :class:`Span` of several."""
    if len(span) == 1:
        return model.get_submodule(span[0])
    return Span([model.get_submodule(n) for n in span])


@torch.no_grad()
def trunk_states(model: nn.Module, spans: Sequence[Sequence[str]], inputs: Tensor) -> list[Tensor]:
    """Each span's real input on ``inputs``: a forward pre-hook on the span's first module (eval mode is
    the caller's); the first call of each module counts."""
    modules = dict(model.named_modules())
    seen: dict[int, Tensor] = {}
    hooks = []
    for i, span in enumerate(spans):
        def grab(mod: nn.Module, args: tuple, i: int = i) -> None:
            if i not in seen and args and isinstance(args[0], Tensor):
                seen[i] = args[0].detach()
        hooks.append(modules[span[0]].register_forward_pre_hook(grab))
    try:
        model(inputs)
    finally:
        for h in hooks:
            h.remove()
    missing = [".".join(spans[i]) for i in range(len(spans)) if i not in seen]
    if missing:
        raise ValueError(f"trunk blocks never ran on the probe inputs: {', '.join(missing)}")
    return [seen[i] for i in range(len(spans))]
