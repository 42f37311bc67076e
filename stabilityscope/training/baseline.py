"""The linear baseline L of SGD-complexity: multinomial logistic regression on the flattened inputs.

SGD-complexity (Nakkiran et al., arXiv:1905.11604; docs/science/secondary.md) asks how much of a network's
performance a linear classifier explains. L is fitted here on the same training data, with the same
preprocessing the network sees (flattened), on the data's device:

    minimise   mean cross-entropy(x W^T + b, y) + (l2 / 2)·||W||²_F      (the bias is not penalised)

by full-batch L-BFGS (``torch.optim.LBFGS``, strong-Wolfe line search, history 20). Stopping rule:
the largest absolute entry of the gradient falls below ``tol`` (default 1e-5), or the loss changes by
less than 1e-12 between iterations, or ``max_iter`` iterations (default 1000) are spent. A fit that
ends with a gradient above ``10·tol`` is marked ``converged = False`` and warns: say so next to any
number computed from it. ``l2`` defaults to 1e-4 (per example, in the mean loss), which keeps the
problem strictly convex, so the optimum is unique, without changing test accuracy measurably on
(Fashion-)MNIST.

:meth:`LinearBaseline.save` / :func:`load_baseline` cache a fit (tensors only; loaded with
``weights_only=True``).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class LinearBaseline:
    """A fitted multinomial logistic regression, and how its fit ended."""

    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor  # (K,)
    l2: float
    iterations: int
    train_loss: float  # the penalised objective at the end
    grad_max: float  # largest |gradient entry| at the end
    converged: bool
    fit_seconds: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, K) scores of inputs (n, ...) (flattened)."""
        return x.reshape(len(x), -1).to(self.weight) @ self.weight.T + self.bias

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Class indices (n,) of inputs (n, ...), in chunks."""
        return torch.cat([self.logits(x[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)])

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x) == y.to(self.weight.device)).double().mean())

    def save(self, path: str | Path) -> Path:
        """Write the fit to ``path`` (tensors and numbers only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"weight": self.weight.cpu(), "bias": self.bias.cpu(), "l2": self.l2, "iterations": self.iterations,
                    "train_loss": self.train_loss, "grad_max": self.grad_max, "converged": self.converged,
                    "fit_seconds": self.fit_seconds}, tmp)
        tmp.replace(path)
        return path


def load_baseline(path: str | Path, device: Any = None) -> LinearBaseline:
    """A fit written by :meth:`LinearBaseline.save`."""
    state = torch.load(path, map_location=device or "cpu", weights_only=True)
    return LinearBaseline(**state)


def fit_linear_baseline(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, l2: float = 1e-4, tol: float = 1e-5,
                        max_iter: int = 1000, dtype: torch.dtype = torch.float64) -> LinearBaseline:
    """Fit L on training inputs ``x`` (n, ...) and labels ``y`` (n,) on their device (see the module docstring).

    Raises:
        ValueError: lengths that differ, an empty set, labels out of range, or ``l2`` < 0.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"inputs and labels must have one entry per example; got {len(x)} inputs and {len(y)} labels")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {int(y.min())}..{int(y.max())}")
    start = time.perf_counter()
    X = x.reshape(len(x), -1).to(dtype)  # (n, D): the same flattening the network's first layer sees
    w = torch.zeros(num_classes, X.shape[1], dtype=dtype, device=X.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=dtype, device=X.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=tol,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(X @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(objective)
    loss = objective()  # at the end point, with its gradient
    grad_max = float(max(w.grad.abs().max(), b.grad.abs().max()))
    iterations = int(opt.state[opt._params[0]].get("n_iter", 0))
    converged = grad_max <= 10 * tol and math.isfinite(float(loss.detach()))
    if not converged:
        warnings.warn(f"the linear baseline did not converge: largest gradient entry {grad_max:.3g} after {iterations} "
                      f"L-BFGS iterations (tol {tol:g}); numbers computed from it are approximate", RuntimeWarning,
                      stacklevel=2)
    return LinearBaseline(w.detach(), b.detach(), float(l2), iterations, float(loss.detach()), grad_max, converged,
                          time.perf_counter() - start)
