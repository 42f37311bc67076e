"""Mean-field theory of random recurrent layers: order parameters, chi and the phase diagram.

A fully connected layer ``W`` (N x N, fan-in N) is read as the coupling matrix of the recurrent
network ``x_{t+1} = phi(W x_t)``. For ``W_ij ~ Normal(J0/N, J^2/N)`` and large N the pre-activations
are Gaussian, ``h = J0*u + J*sqrt(q)*z`` with ``z ~ N(0, 1)``, and the dynamics closes on two order
parameters (EOC-training, SCIENCE.md section 1.2; the same equations as the replica-symmetric
Sherrington-Kirkpatrick spin glass with ``beta*J -> J``)::

    u   = E_z phi(h)              mean activity (SK magnetisation m)
    q   = E_z phi(h)^2            Edwards-Anderson order parameter
    chi = J^2 E_z phi'(h)^2       stability of a perturbation (de Almeida-Thouless / chi_1)

The edge of chaos is ``chi = 1``. Phase-plane coordinates are ``x = J0/J``, ``y = 1/J`` (SK's
``J0/J`` and ``kT/J``). For tanh (section 1.3) the phases are

* P  (paramagnetic): ``u = q = 0``; ``J < 1`` and ``|J0| < 1`` (i.e. ``|x| < y``, ``y > 1``),
* F  (ferromagnetic): ``u != 0`` and ``chi < 1`` (stable, ordered),
* SG (spin glass): ``chi > 1`` (chaotic); bounded by ``J = 1`` and the AT line ``chi = 1``,
* P2 (period-2): ``J0 < 0`` and ordered; for odd phi the map ``J0 -> -J0`` sends ``u_t`` to
  ``(-1)^t u_t``, so the mean flips sign every step.

Worked example::

    >>> u, q, chi_ = order_parameters(0.0, 2.0)          # tanh, J0 = 0, J = 2
    >>> round(float(q), 4), round(float(chi_), 4)
    (0.5304, 1.3627)
    >>> edge = edge_curve([0.5])                        # AT line at 1/J = 0.5
    >>> round(float(edge.at_j0_over_j[0]), 3)
    1.22

Numerics: Gaussian expectations use a composite Gauss-Legendre rule on sinh-graded rays whose
nodes cluster at ``z* = -J0*u/(J*sqrt(q))`` (where ``h = 0``), so the spike of ``phi'(h)^2`` of width
``1/(J*sqrt(q))`` is resolved for any J (checked to J = 50 against a doubled node count). All
grid cells are solved together as arrays; the only Python loops run over iterations.

For a non-square M x N layer ``(J0, J)`` locate the *mean-field surrogate*: a random square N x N
matrix with the same entry statistics (SCIENCE.md section 1.1).

Conventions that are ours (the sources are silent):

* ``edge_distance = 0.5 ln chi``, the mean-field largest Lyapunov exponent (``s^2 ~ chi``).
* J0 < 0 for odd phi is solved at |J0| (the period-2 orbit); u is its even-step value >= 0.
* ReLU is positively homogeneous: only ``u/sqrt(q)`` is fixed, so q is reported as 1.
* Phase rules (:func:`phase_code`): SG if chi > 1; else P2 if the attractor is a 2-cycle;
  else F if J0 > 0 and u != 0 (a mean sustained by positive feedback); else P.
* Cells are assumed large-N; finite N smears every boundary (SCIENCE.md section 1.4).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
from numpy.polynomial.legendre import leggauss
from scipy.special import ndtr

__all__ = [
    "PHASES",
    "EdgeCurve",
    "ZeroCouplingWarning",
    "chi",
    "critical_coupling",
    "edge_curve",
    "edge_distance",
    "order_parameters",
    "phase_code",
    "phase_coordinates",
    "phase_label",
    "phase_plane",
]

Activation = Union[str, Callable[[torch.Tensor], torch.Tensor]]
ArrayLike = Union[float, np.ndarray, torch.Tensor]

PHASES: tuple[str, ...] = ("P", "F", "SG", "P2")  # index = phase_code; -1 means undefined ("?")

_Z_MAX = 10.0  # Gaussian truncation |z| <= 10: tail mass 1.5e-23
_U_ZERO = 1e-6  # |u| below this counts as "no mean" (paramagnetic)
_CHUNK_NODES = 1 << 20  # quadrature nodes per block: bounds memory at ~10 arrays x 8 MiB


class ZeroCouplingWarning(RuntimeWarning):
    """A layer has J = 0 (e.g. a zero-initialised head): its phase coordinates are inf/NaN."""


# --------------------------------------------------------------------------------------------
# 1.1 phase coordinates
# --------------------------------------------------------------------------------------------


def phase_coordinates(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupling statistics ``(J0, J)`` of a weight matrix or a stack of them (EOC-training).

    ``J = std(W)*sqrt(N)`` (population std) and ``J0 = mean(W)*N`` with ``N = W.shape[-1]`` the
    fan-in (torch ``Linear.weight`` is (out, in)). For a non-square layer the values describe the
    mean-field surrogate: a random square N x N matrix with the same entry statistics.

    Args:
        W: weights of shape (..., out, in); any leading batch dims are kept.

    Returns:
        ``(J0, J)``, float64 tensors of shape ``W.shape[:-2]`` on W's device.
    """
    if W.ndim < 2:
        raise ValueError(f"phase_coordinates needs a matrix (..., out, in), got shape {tuple(W.shape)}")
    n = W.shape[-1]
    # float64: mean*N amplifies rounding of the mean by N. A fresh float64 copy (or clone) is centred in
    # place and its norm taken: the same two-pass population std as Tensor.std, at half its cost
    w = W.detach().to(torch.float64).flatten(-2)
    w = w.clone() if w.data_ptr() == W.data_ptr() else w
    mean = w.mean(-1, keepdim=True)  # (..., 1)
    j = torch.linalg.vector_norm(w.sub_(mean), dim=-1) * math.sqrt(n / w.shape[-1])
    return mean[..., 0] * n, j


def phase_plane(J0: ArrayLike, J: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """Phase-plane coordinates ``(x, y) = (J0/J, 1/J)`` (EOC-training, SK's ``J0/J``, ``kT/J``).

    ``J == 0`` never raises: ``y = inf`` and ``x = +-inf`` (NaN when J0 = 0 too), with a
    :class:`ZeroCouplingWarning`.

    Args:
        J0: mean coupling; tensor, array or float.
        J: coupling spread; same kinds, broadcastable against J0.

    Returns:
        ``(x, y)``: torch tensors if either input is a tensor (on its device), else numpy
        float64 arrays (numpy scalars for scalar input).
    """
    if isinstance(J0, torch.Tensor) or isinstance(J, torch.Tensor):
        ref = J0 if isinstance(J0, torch.Tensor) else J
        j0 = torch.as_tensor(J0, dtype=torch.float64, device=ref.device)
        j = torch.as_tensor(J, dtype=torch.float64, device=ref.device)
        if bool((j == 0).any()):
            _warn_zero_coupling()
        return j0 / j, 1.0 / j  # IEEE division: x/0 -> +-inf, 0/0 -> nan
    j0n = np.asarray(J0, dtype=np.float64)
    jn = np.asarray(J, dtype=np.float64)
    if np.any(jn == 0):
        _warn_zero_coupling()
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = j0n / jn, 1.0 / jn
    return x[()], y[()]


def _warn_zero_coupling() -> None:
    warnings.warn(
        "a layer has zero coupling (J = 0, e.g. a zero-initialised head): its phase-plane "
        "coordinates are inf/NaN",
        ZeroCouplingWarning,
        stacklevel=3,
    )


# --------------------------------------------------------------------------------------------
# Gaussian quadrature resolving the h = 0 feature
# --------------------------------------------------------------------------------------------


def _unit_rule(n_panels: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes/weights on [0, 1]: (n_panels*order,) each."""
    x, w = leggauss(order)
    edges = np.linspace(0.0, 1.0, n_panels + 1)
    a, b = edges[:-1, None], edges[1:, None]
    return ((a + b) / 2 + (b - a) / 2 * x).ravel(), ((b - a) / 2 * w).ravel()


def _gaussian_rule(m: np.ndarray, s: np.ndarray, n_panels: int, order: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell nodes z and weights for ``E f(m + s z)``, z ~ N(0, 1); shapes (C, 3*K).

    ``[-Z_MAX, Z_MAX]`` is cut at ``z* = -m/s`` (where h = 0) and at 0 (the Gaussian's centre)
    into three rays. Each ray is ``z = c + d*eps*sinh(xi)`` with xi on a composite
    Gauss-Legendre rule: nodes are spaced ~eps near the anchor c and grow geometrically away
    from it. Rays anchored at z* use eps = 1/(1+s), the width of phi(h)'s features in z.
    """
    t, wt = _unit_rule(n_panels, order)  # (K,)
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = np.where(s > 0, -m / np.where(s > 0, s, 1.0), -np.sign(m) * np.inf)  # (C,)
    zs = np.clip(np.nan_to_num(zs, nan=0.0), -_Z_MAX, _Z_MAX)
    eps_f = 1.0 / (1.0 + s)
    d = np.where(zs >= 0, 1.0, -1.0)  # direction pointing away from 0
    rays = (
        (zs, d, _Z_MAX - np.abs(zs), eps_f),  # z* -> outer boundary
        (zs, -d, np.abs(zs), eps_f),  # z* -> 0
        (np.zeros_like(zs), -d, np.full_like(zs, _Z_MAX), np.clip(np.abs(zs), eps_f, 1.0)),  # 0 -> other side
    )
    zz, ww = [], []
    for c, dd, length, eps in rays:
        xi_max = np.arcsinh(length / eps)[:, None]  # (C, 1)
        xi = xi_max * t  # (C, K)
        z = c[:, None] + dd[:, None] * eps[:, None] * np.sinh(xi)
        jac = eps[:, None] * np.cosh(xi) * xi_max * wt  # dz
        zz.append(z)
        ww.append(jac * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))
    return np.concatenate(zz, axis=1), np.concatenate(ww, axis=1)


# --------------------------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Act:
    name: str
    fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]  # h -> (phi, phi', phi'')
    odd: bool


def _tanh_derivs(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.tanh(h)
    d1 = 1.0 - t * t
    return t, d1, -2.0 * t * d1


def _callable_derivs(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    def derivs(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(h)).to(torch.float64).requires_grad_(True)
        y = f(x)
        # phi elementwise, so the gradient of the sum is phi'(h) node by node
        (d1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        if d1.requires_grad:
            (d2,) = torch.autograd.grad(d1.sum(), x, allow_unused=True)
            d2 = torch.zeros_like(x) if d2 is None else d2
        else:  # piecewise-linear phi: phi'' = 0 almost everywhere
            d2 = torch.zeros_like(x)
        return y.detach().numpy(), d1.detach().numpy(), d2.numpy()

    return derivs


def _resolve_activation(activation: Activation) -> _Act | str:
    if isinstance(activation, str):
        key = activation.lower()
        if key == "tanh":
            return _Act("tanh", _tanh_derivs, True)
        if key == "relu":
            return "relu"
        raise ValueError(f"unknown activation {activation!r}: use 'tanh', 'relu' or a torch callable")
    if activation in (torch.relu, torch.nn.functional.relu):
        return "relu"
    if not callable(activation):
        raise TypeError(f"activation must be 'tanh', 'relu' or callable, got {type(activation)}")
    probe = torch.linspace(-4.0, 4.0, 81, dtype=torch.float64)
    with torch.no_grad():
        odd = bool(torch.allclose(activation(-probe), -activation(probe), rtol=1e-12, atol=1e-12))
    return _Act(getattr(activation, "__name__", "callable"), _callable_derivs(activation), odd)


# --------------------------------------------------------------------------------------------
# the mean-field map (u, q) -> (u', q') and its Jacobian
# --------------------------------------------------------------------------------------------


def _mf_map(act: _Act, j0: np.ndarray, j: np.ndarray, u: np.ndarray, q: np.ndarray, n_panels: int):
    """One mean-field step for C cells: ``F = (u', q')`` (2, C), Jacobian ``D`` (2, 2, C), ``E phi'^2``.

    Derivatives in q use Stein's lemma, ``d/dq E f(m + J sqrt(q) z) = (J^2/2) E f''(h)``, which
    stays finite at q = 0. Cells go through in blocks of at most _CHUNK_NODES quadrature nodes
    to bound memory (a batch loop, not a per-cell loop).
    """
    per_cell = 3 * n_panels * 8
    step = max(1, _CHUNK_NODES // per_cell)
    if j0.size <= step:
        return _mf_map_block(act, j0, j, u, q, n_panels)
    parts = [
        _mf_map_block(act, j0[i : i + step], j[i : i + step], u[i : i + step], q[i : i + step], n_panels)
        for i in range(0, j0.size, step)
    ]
    return (
        np.concatenate([p[0] for p in parts], axis=1),
        np.concatenate([p[1] for p in parts], axis=2),
        np.concatenate([p[2] for p in parts]),
    )


def _mf_map_block(act: _Act, j0: np.ndarray, j: np.ndarray, u: np.ndarray, q: np.ndarray, n_panels: int):
    q = np.maximum(q, 0.0)
    m, s = j0 * u, j * np.sqrt(q)
    z, w = _gaussian_rule(m, s, n_panels)
    f0, f1, f2 = act.fn(m[:, None] + s[:, None] * z)  # (C, 3K) each

    def e(v: np.ndarray) -> np.ndarray:
        return (w * v).sum(axis=1)

    e1, e11 = e(f1), e(f1 * f1)
    F = np.stack([e(f0), e(f0 * f0)])
    D = np.array(
        [
            [j0 * e1, 0.5 * j * j * e(f2)],
            [2.0 * j0 * e(f0 * f1), j * j * (e11 + e(f0 * f2))],
        ]
    )
    return F, D, e11


StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _one_step(act: _Act, j0: np.ndarray, j: np.ndarray, n_panels: int) -> StepFn:
    """The mean-field map restricted to cells ``idx``: (idx, u, q) -> (F, D, E phi'^2)."""
    return lambda idx, u, q: _mf_map(act, j0[idx], j[idx], u, q, n_panels)


def _two_step(act: _Act, j0: np.ndarray, j: np.ndarray, n_panels: int) -> StepFn:
    """The map applied twice (period-2 orbits are its fixed points); D by the chain rule,
    E phi'^2 as the geometric mean over the two steps (so J^2 times it is chi per step)."""

    def step(idx: np.ndarray, u: np.ndarray, q: np.ndarray):
        F1, D1, e1 = _mf_map(act, j0[idx], j[idx], u, q, n_panels)
        F2, D2, e2 = _mf_map(act, j0[idx], j[idx], F1[0], F1[1], n_panels)
        return F2, np.einsum("ikc,kjc->ijc", D2, D1), np.sqrt(e1 * e2)

    return step


def _solve_fixed_point(
    step_fn: StepFn, n: int, tol: float, max_iter: int, n_warm: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed point of ``step_fn`` from u = q = 1 for all n cells at once.

    ``n_warm`` plain iterations move every cell into the basin of the attracting fixed point
    reached from the ordered start; safeguarded Newton then converges quadratically, also near
    J = 1 where plain iteration slows critically. A Newton step that raises the residual is
    replaced by a plain step. Returns u, q, E phi'^2, the Jacobian D (2, 2, n) and the
    converged mask.
    """
    u, q = np.ones(n), np.ones(n)
    F, D, e11 = step_fn(np.arange(n), u, q)
    done = np.zeros(n, dtype=bool)
    for it in range(max_iter):
        idx = np.flatnonzero(~done)
        if idx.size == 0:
            break
        ua, qa, Fa, Da = u[idx], q[idx], F[:, idx], D[:, :, idx]
        gu, gq = Fa[0] - ua, Fa[1] - qa  # residual G = F(x) - x
        res = np.maximum(np.abs(gu), np.abs(gq))
        newton = np.full(idx.size, it >= n_warm)
        if it >= n_warm:
            a, b, c, dd = Da[0, 0] - 1.0, Da[0, 1], Da[1, 0], Da[1, 1] - 1.0  # DG = D - I
            det = a * dd - b * c
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                nu = ua - (dd * gu - b * gq) / det
                nq = qa - (a * gq - c * gu) / det
            nq = np.where(nq < 0, 0.1 * qa, nq)  # keep q >= 0 without landing on the trivial q = 0
            newton &= np.isfinite(nu) & np.isfinite(nq)
            nu, nq = np.where(newton, nu, Fa[0]), np.where(newton, nq, Fa[1])
        else:
            nu, nq = Fa[0].copy(), Fa[1].copy()
        Fn, Dn, en = step_fn(idx, nu, nq)
        res_n = np.maximum(np.abs(Fn[0] - nu), np.abs(Fn[1] - nq))
        worse = newton & ~(res_n <= res) & ~(res_n <= tol)  # NaN residuals count as worse
        if worse.any():  # fall back to a plain step for those cells
            nu[worse], nq[worse] = Fa[0][worse], Fa[1][worse]
            Fw, Dw, ew = step_fn(idx[worse], nu[worse], nq[worse])
            Fn[:, worse], Dn[:, :, worse], en[worse] = Fw, Dw, ew
            newton &= ~worse
        step = np.maximum(np.abs(nu - ua), np.abs(nq - qa))
        u[idx], q[idx], F[:, idx], D[:, :, idx], e11[idx] = nu, nq, Fn, Dn, en
        done[idx] = newton & (step < tol)
    return u, np.maximum(q, 0.0), e11, D, done


def _warn_unconverged(done: np.ndarray, max_iter: int) -> None:
    if not done.all():
        warnings.warn(
            f"mean-field fixed point not converged in {max_iter} iterations for "
            f"{int((~done).sum())} cell(s); returning the last iterate",
            RuntimeWarning,
            stacklevel=4,
        )


# --------------------------------------------------------------------------------------------
# ReLU: closed forms on the ratio a = J0 u / (J sqrt(q))
# --------------------------------------------------------------------------------------------


def _npdf(a: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)


def _relu_R(a: np.ndarray) -> np.ndarray:
    """Ratio map ``u'/sqrt(q') = (a Phi + phi)/sqrt((1 + a^2) Phi + a phi)`` with ``a = x*u/sqrt(q)``."""
    big = a < -30  # R(a) ~ exp(-a^2/4) < 1e-90 there, and the closed form turns into 0/0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        num = a * ndtr(a) + _npdf(a)
        den = (1 + a * a) * ndtr(a) + a * _npdf(a)
        r = num / np.sqrt(den)
    return np.where(big, 0.0, np.clip(np.nan_to_num(r, nan=0.0), 0.0, 1.0))


def _bisect(f: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray, n: int = 60) -> np.ndarray:
    """Vectorised bisection; ``f(lo) < 0 <= f(hi)`` elementwise (sign convention of the caller)."""
    lo, hi = lo.copy(), hi.copy()
    for _ in range(n):
        mid = 0.5 * (lo + hi)
        neg = f(mid) < 0
        lo, hi = np.where(neg, mid, lo), np.where(neg, hi, mid)
    return 0.5 * (lo + hi)


def _relu_ratio(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attracting ratio ``rho = u/sqrt(q)`` for ``x = J0/J``, from rho = 1, and its 2-cycle partner.

    The ratio map ``rho -> R(x rho)`` is increasing for x >= 0 (one stable fixed point) and
    decreasing for x < 0, where the fixed point loses stability (multiplier < -1) below
    x = -4.3753 and the ratio settles on a period-2 orbit. Returns (rho_even, rho_odd, flip).
    """
    lo, hi = np.zeros_like(x), np.ones_like(x)
    rho = _bisect(lambda r: r - _relu_R(x * r), lo, hi)  # r - R(xr) rises from -R(0) < 0 to >= 0
    eps = 1e-6
    mult = (_relu_R(x * (rho + eps)) - _relu_R(x * (rho - eps))) / (2 * eps)  # d/drho R(x rho)
    flip = mult < -1.0
    if flip.any():
        xf, rf = x[flip], rho[flip]
        # two-step map g is increasing; its largest fixed point (reached from rho = 1) lies in (rho*, 1]
        g = lambda r: _relu_R(xf * _relu_R(xf * r)) - r  # noqa: E731  (> 0 just above rho*, < 0 at 1)
        hi_root = _bisect(lambda r: -g(r), rf * (1 + 1e-9) + 1e-12, np.ones_like(rf))
        rho = rho.copy()
        rho[flip] = hi_root
    return rho, _relu_R(x * rho), flip


def _relu_order_parameters(j0: np.ndarray, j: np.ndarray):
    """(u, q, chi, flip) for ReLU with the scale normalised to q = 1 (see order_parameters)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(j > 0, j0 / np.where(j > 0, j, 1.0), np.sign(j0) * np.inf)
    x_fin = np.nan_to_num(x, nan=0.0, posinf=1e12, neginf=-1e12)
    rho_e, rho_o, flip = _relu_ratio(x_fin)
    phi_e, phi_o = ndtr(x_fin * rho_e), ndtr(x_fin * rho_o)
    e11 = np.where(flip, np.sqrt(phi_e * phi_o), phi_e)  # E phi'^2 = Phi(a); cycle: geometric mean
    u = np.where(j > 0, rho_e, np.nan)
    q = np.where(j > 0, 1.0, np.nan)
    return u, q, j * j * e11, flip


# --------------------------------------------------------------------------------------------
# public: order parameters, chi, edge distance
# --------------------------------------------------------------------------------------------


def _as_array(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _order_parameters_flat(j0: np.ndarray, j: np.ndarray, act, tol: float, max_iter: int, n_panels: int):
    """(u, q, chi, flip) on flat arrays; flip marks cells whose attractor is a period-2 orbit."""
    finite = np.isfinite(j0) & np.isfinite(j)
    if not finite.all():  # NaN/inf couplings: NaN results, solve the rest
        out = [np.full(j0.shape, np.nan) for _ in range(3)] + [np.zeros(j0.shape, dtype=bool)]
        if finite.any():
            for o, v in zip(out, _order_parameters_flat(j0[finite], j[finite], act, tol, max_iter, n_panels)):
                o[finite] = v
        return tuple(out)
    if act == "relu":
        return _relu_order_parameters(j0, j)
    if act.odd:
        # odd phi: J0 -> -J0 maps u_t -> (-1)^t u_t, so solve at |J0| (the period-2 orbit's
        # even-step point) instead of chasing a fixed point that does not attract
        step = _one_step(act, np.abs(j0), j, n_panels)
        u, q, e11, _, done = _solve_fixed_point(step, j0.size, tol, max_iter)
        _warn_unconverged(done, max_iter)
        return u, q, j * j * e11, (j0 < 0) & (np.abs(u) > _U_ZERO)
    u, q, e11, D, done = _solve_fixed_point(_one_step(act, j0, j, n_panels), j0.size, tol, max_iter)
    tr, det = D[0, 0] + D[1, 1], D[0, 0] * D[1, 1] - D[0, 1] * D[1, 0]
    disc = tr * tr / 4 - det
    lam_min = np.where(disc >= 0, tr / 2 - np.sqrt(np.maximum(disc, 0)), 0.0)
    flip = lam_min < -1.0 - 1e-9  # real eigenvalue below -1: the fixed point repels, the mean oscillates
    redo = np.flatnonzero(flip | ~done)
    if redo.size:
        # period-2 orbit = attracting fixed point of the two-step map, again from u = q = 1
        step2 = _two_step(act, j0[redo], j[redo], n_panels)
        u2, q2, e2, _, done2 = _solve_fixed_point(step2, redo.size, tol, max_iter, n_warm=50)
        F1, _, _ = _mf_map(act, j0[redo], j[redo], u2, q2, n_panels)
        cycle = np.maximum(np.abs(F1[0] - u2), np.abs(F1[1] - q2)) > 1e-8  # else a fixed point of F
        u[redo], q[redo], e11[redo], flip[redo], done[redo] = u2, q2, e2, cycle, done2
    _warn_unconverged(done, max_iter)
    return u, q, j * j * e11, flip


def order_parameters(
    J0: ArrayLike,
    J: ArrayLike,
    activation: Activation = "tanh",
    *,
    tol: float = 1e-10,
    max_iter: int = 200,
    n_panels: int = 12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean-field order parameters ``(u, q, chi)`` of a random recurrent layer (EOC-training).

    Solves ``u = E phi(h)``, ``q = E phi(h)^2`` with ``h = J0 u + J sqrt(q) z`` from u = q = 1
    (plain iterations, then safeguarded Newton) and returns ``chi = J^2 E phi'(h)^2``. All cells
    are solved together. Conventions:

    * odd phi (tanh, odd callables) with J0 < 0: the attractor is the period-2 orbit
      ``u_t = (-1)^t u`` (symmetry ``J0 -> -J0``); ``u >= 0`` is its even-step value.
    * other callables whose fixed point is flip-unstable: the period-2 orbit's even-step point,
      chi the geometric mean over the cycle.
    * ``"relu"`` is positively homogeneous, so only ``rho = u/sqrt(q)`` has a fixed point (the
      scale q grows or shrinks by a constant factor per step). We solve the closed-form ratio
      map and report ``q = 1``, ``u = rho``; ``chi = J^2 Phi(J0 rho / J)`` (geometric mean over
      the 2-cycle that appears for J0/J < -4.3753). J = 0 gives u = q = NaN, chi = 0.

    Args:
        J0: mean coupling, array-like (tensor, array, float).
        J: coupling spread, broadcastable against J0.
        activation: ``"tanh"``, ``"relu"`` or an elementwise torch callable (derivatives by
            autograd in float64 on the quadrature nodes).
        tol: Newton step size at which a cell counts as converged.
        max_iter: iteration cap; unconverged cells raise a RuntimeWarning.
        n_panels: quadrature panels per ray (3 rays x n_panels x 8 nodes); double it to check
            convergence.

    Returns:
        ``(u, q, chi)``: float64 numpy arrays of the broadcast shape (0-d for scalar input).
    """
    j0, j = np.broadcast_arrays(_as_array(J0), _as_array(J))
    shape = j0.shape
    act = _resolve_activation(activation)
    u, q, c, _ = _order_parameters_flat(j0.ravel(), j.ravel(), act, tol, max_iter, n_panels)
    return u.reshape(shape), q.reshape(shape), c.reshape(shape)


def chi(J0: ArrayLike, J: ArrayLike, activation: Activation = "tanh", **kwargs) -> np.ndarray:
    """Mean-field stability ``chi = J^2 E phi'(h)^2`` (edge of chaos at 1); see order_parameters."""
    return order_parameters(J0, J, activation, **kwargs)[2]


def edge_distance(J0: ArrayLike, J: ArrayLike, activation: Activation = "tanh", **kwargs) -> np.ndarray:
    """Signed distance to the edge of chaos, ``0.5 * ln chi``.

    It is the mean-field estimate of the largest Lyapunov exponent (the normalised Jacobian
    norm obeys ``s^2 ~ chi``, SCIENCE.md section 2, and ``lambda_max ~ ln s``): 0 on the edge,
    > 0 on the chaotic side, < 0 on the ordered side, in nats per step. -inf for J = 0.
    """
    c = chi(J0, J, activation, **kwargs)
    with np.errstate(divide="ignore"):
        return 0.5 * np.log(c)


def critical_coupling(activation: Activation = "tanh") -> float:
    """J at which chi = 1 for J0 = 0: 1 for tanh, sqrt(2) for ReLU, root-found otherwise."""
    act = _resolve_activation(activation)
    if act == "relu":
        return math.sqrt(2.0)
    if isinstance(activation, str):  # "tanh": tanh'(0) = 1
        return 1.0
    lo, hi = np.array([1e-3]), np.array([1e3])
    logc = lambda jj: np.log(chi(np.zeros_like(jj), jj, activation))  # noqa: E731 (increasing in J)
    # bisection in log J (chi spans decades); 45 halvings of ln(1e6) leave ~4e-13 relative
    r = _bisect(lambda lj: logc(np.exp(lj)), np.log(lo), np.log(hi), n=45)
    return float(np.exp(r[0]))


# --------------------------------------------------------------------------------------------
# 1.3 the theoretical edge: AT line and J = J_c segment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeCurve:
    """The mean-field edge of chaos chi = 1 in the phase plane (x = J0/J, y = 1/J)."""

    activation: str  # activation name
    inv_j: np.ndarray  # (n,) the requested 1/J values
    at_j0_over_j: np.ndarray  # (n,) x >= 0 on chi = 1 (tanh: AT line SG|F); ReLU: its one curve; NaN if none
    at_j0_over_j_negative: np.ndarray  # (n,) x <= 0 on chi = 1 (odd phi: the mirror, SG|P2); NaN if none
    segment_inv_j: np.ndarray  # (k,) y of the J = J_c segment (constant 1/J_c); empty unless phi is odd
    segment_j0_over_j: np.ndarray  # (k,) x along that segment, -1 <= x <= 1

    def polyline(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the whole edge for plotting: pieces separated by NaN."""
        xs, ys = [], []
        for branch in (self.at_j0_over_j, self.at_j0_over_j_negative):
            ok = np.isfinite(branch)
            xs += [branch[ok], [np.nan]]
            ys += [self.inv_j[ok], [np.nan]]
        xs.append(self.segment_j0_over_j)
        ys.append(self.segment_inv_j)
        return np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)


def edge_curve(inv_j: ArrayLike, activation: Activation = "tanh", *, n_bisect: int = 40) -> EdgeCurve:
    """The chi = 1 curve over any grid of 1/J (EOC-training; SK's de Almeida-Thouless line).

    tanh and other callables: for each ``y = 1/J < 1/J_c`` the x = J0/J where chi(J0, J) = 1,
    found by vectorised bisection on all y at once between x = 0 (chi > 1) and a bracket grown
    until chi < 1 (the AT line SG|F for x > 0; for odd phi the x < 0 branch is its mirror,
    SG|P2). For odd phi (slope maximal at 0, as tanh and erf) the edge also contains the
    segment y = 1/J_c, |x| <= 1 between P and SG. ReLU: chi depends on x only through
    ``Phi(x rho(x))``, so chi = 1 is ``y^2 = Phi(x rho(x))``: one monotone curve for 0 < y < 1
    through (0, 1/sqrt 2), stored in ``at_j0_over_j`` (x of either sign), no segment.

    Args:
        inv_j: 1/J values, any shape (flattened).
        activation: as in :func:`order_parameters`.
        n_bisect: bisection steps (error ~ 2^-n_bisect x bracket).

    Returns:
        An :class:`EdgeCurve`; branches are NaN where there is no crossing (J <= J_c).
    """
    y = _as_array(inv_j).ravel()
    act = _resolve_activation(activation)
    name = "relu" if act == "relu" else act.name
    empty = np.zeros(0)
    if act == "relu":
        x = np.full(y.shape, np.nan)
        ok = (y > 0) & (y < 1)
        yo = y[ok]

        def f(xx: np.ndarray) -> np.ndarray:  # chi/J^2 - y^2, increasing in x
            rho_e, rho_o, flip = _relu_ratio(xx)
            e = np.where(flip, np.sqrt(ndtr(xx * rho_e) * ndtr(xx * rho_o)), ndtr(xx * rho_e))
            return e - yo * yo

        x[ok] = _bisect(f, np.full(yo.shape, -1e3), np.full(yo.shape, 1e3), n=70)
        return EdgeCurve(name, y, x, np.full(y.shape, np.nan), empty, empty)

    jc = critical_coupling(activation)
    ok = (y > 0) & (y < 1.0 / jc)
    j = 1.0 / y[ok]

    def branch(sign: float) -> np.ndarray:
        chi_at = lambda xx: chi(sign * xx * j, j, activation)  # noqa: E731  (xx >= 0)
        hi = np.full(j.shape, 2.0)
        for _ in range(20):  # grow the bracket until chi < 1 (the AT line drifts out slowly)
            above = chi_at(hi) >= 1.0
            if not above.any():
                break
            hi = np.where(above, 2.0 * hi, hi)
        root = _bisect(lambda xx: 1.0 - chi_at(xx), np.zeros(j.shape), hi, n=n_bisect)
        out = np.full(y.shape, np.nan)
        out[ok] = np.where(above, np.nan, sign * root)  # no crossing found: NaN
        return out

    pos = branch(1.0)
    neg = -pos if act.odd else branch(-1.0)
    seg_x = np.linspace(-1.0, 1.0, 101) if act.odd else empty
    return EdgeCurve(name, y, pos, neg, np.full(seg_x.shape, 1.0 / jc), seg_x)


# --------------------------------------------------------------------------------------------
# phase labels
# --------------------------------------------------------------------------------------------


def phase_code(
    j0_over_j: ArrayLike,
    inv_j: ArrayLike,
    activation: Activation = "tanh",
    *,
    tol: float = 1e-10,
    max_iter: int = 200,
    n_panels: int = 12,
) -> np.ndarray:
    """Phase of each cell as an index into :data:`PHASES` (-1 where undefined, e.g. NaN input).

    Rules, applied in order to the solved order parameters (all cells at once):

    1. chi > 1 -> SG (chaotic);
    2. the attractor is a period-2 orbit -> P2 (odd phi: J0 < 0 and u != 0, via the symmetry
       J0 -> -J0; ReLU: the ratio u/sqrt(q) 2-cycle below J0/J = -4.3753; other callables:
       a flip-unstable fixed point);
    3. J0 > 0 and |u| > 1e-6 -> F (ordered, the mean sustained by positive feedback);
    4. otherwise -> P (ordered; for tanh exactly u = q = 0).

    For tanh these are the SK phases of SCIENCE.md section 1.3. ReLU and non-odd callables
    always have u > 0, so for them rule 3 reduces to J0 > 0: our convention, since the SK
    phases do not carry over exactly.

    Args:
        j0_over_j: x = J0/J.
        inv_j: y = 1/J, broadcastable against x; y = inf means J = 0 (ordered, P).
        activation: as in :func:`order_parameters`.
        tol, max_iter, n_panels: solver settings, as in :func:`order_parameters`.

    Returns:
        int64 array of the broadcast shape.
    """
    x, y = np.broadcast_arrays(_as_array(j0_over_j), _as_array(inv_j))
    shape = x.shape
    x, y = x.ravel(), y.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        j = 1.0 / y
        j0 = np.where(j == 0, 0.0, x * j)  # J = 0: no coupling at all
    act = _resolve_activation(activation)
    u, q, c, flip = _order_parameters_flat(j0, j, act, tol, max_iter, n_panels)
    ferro = (j0 > 0) & (np.abs(u) > _U_ZERO)
    code = np.where(c > 1.0, 2, np.where(flip, 3, np.where(ferro, 1, 0)))
    defined = np.isfinite(c) & (np.isfinite(x) | (j == 0)) & ~np.isnan(y)
    return np.where(defined, code, -1).reshape(shape).astype(np.int64)


def phase_label(
    j0_over_j: ArrayLike, inv_j: ArrayLike, activation: Activation = "tanh", **kwargs
) -> np.ndarray:
    """Phase names ("P", "F", "SG", "P2"; "?" if undefined) for each cell; see :func:`phase_code`."""
    code = phase_code(j0_over_j, inv_j, activation, **kwargs)  # kwargs: tol, max_iter, n_panels
    names = np.array(PHASES + ("?",))
    return names[np.where(code < 0, len(PHASES), code)]
