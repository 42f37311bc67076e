"""Spline-FC's initialisation of a built-in ReLU MLP from a degree-1 MARS fit (``model.init=mars``).

Spline-FC (Mo, Zheng et al., arXiv:2102.06554; docs/science/secondary.md) builds an FC ReLU network from a
continuous piecewise-linear spline fit and trains it by gradient descent. Here: fit degree-1 MARS
(:func:`~stabilityscope.models.spline.fit_mars`) on the training split (classification: one-hot
targets, so output c is the spline regression of class c's indicator; regression: the targets),
convert it exactly (:func:`~stabilityscope.models.spline.to_network`: K hinge/linear units), pad it to
the model's width (:func:`~stabilityscope.models.spline.widen`: new units with outgoing weight 0 and
small random incoming weights) and copy it into the model's first hidden layer and head.

**Depth > 1 (ours).** Every further hidden layer starts as the identity with bias 0: its inputs are
ReLU outputs h ≥ 0, so relu(I·h) = h and the network still computes the MARS function exactly. The
identity sits at J = √(N·var(W)) ≈ 1, J0 = N·mean(W) = 1 on the phase plane.

Supported: ``tabular_mlp`` (any depth) and ``toy_mlp`` (depth 1), with ``activation=relu`` (a hinge
is a ReLU; tanh cannot represent it). ``fmnist_fc`` has no hidden bias, so it cannot hold a knot: for
the canonical 784-784-10 shape use ``model=tabular_mlp model.width=784 model.activation=relu``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stabilityscope.config import ModelConfig, as_options, value_of
from stabilityscope.errors import ConfigError
from stabilityscope.models.spline import MarsFit, fit_mars, to_network, widen

__all__ = ["SPLINE_MODELS", "SplineInit", "check_spline_init", "mars_targets", "spline_initialise"]

SPLINE_MODELS = {"tabular_mlp": "any model.depth", "toy_mlp": "one hidden layer"}  # builtin names → depths


@dataclass(frozen=True)
class SplineInit:
    """What a spline initialisation did: the fit, its wall time (fit + conversion), and what the trace records."""

    fit: MarsFit
    seconds: float
    attrs: dict[str, Any]


def check_spline_init(cfg: ModelConfig | Any) -> None:
    """Refuse ``model.init=mars`` for a model the construction cannot build (before any data is read).

    Raises:
        ConfigError: not a built-in ReLU MLP of :data:`SPLINE_MODELS`, or a depth it cannot represent.
    """
    cfg = as_options(cfg, ModelConfig, "model")
    if value_of(cfg.init) != "mars":
        return
    supported = (f"supported: {', '.join(f'{n} ({d})' for n, d in SPLINE_MODELS.items())} with "
                 f"model.activation=relu (family builtin)")
    name, family = cfg.name, value_of(cfg.family)
    if family != "builtin" or name not in SPLINE_MODELS:
        hint = (" fmnist_fc's hidden layer has no bias, so it cannot hold a knot; for the canonical 784-784-10 "
                "shape use model=tabular_mlp model.width=784 model.activation=relu." if name == "fmnist_fc" else "")
        raise ConfigError(f"model.init=mars cannot initialise the {family} model {name!r}: Spline-FC's construction "
                          f"needs a fully connected ReLU network with biases ({supported}).{hint}")
    if value_of(cfg.activation) != "relu":
        raise ConfigError(f"model.init=mars needs model.activation=relu, got {value_of(cfg.activation)!r}: a MARS "
                          f"hinge max(0, ±(x_j − t)) is a ReLU unit, which {value_of(cfg.activation)} cannot "
                          f"represent ({supported}).")
    if name == "toy_mlp" and cfg.depth != 1:
        raise ConfigError(f"model.init=mars: toy_mlp has one hidden layer, model.depth={cfg.depth} cannot be "
                          f"represented ({supported}); use model=tabular_mlp for deeper networks.")


def mars_targets(y: torch.Tensor, num_outputs: int, task: str) -> torch.Tensor:
    """MARS's targets (n, p) float64: the regression targets, or the one-hot class indicators (n, classes)."""
    if task == "regression":
        return y.reshape(len(y), -1).double()
    return torch.nn.functional.one_hot(y.long(), num_outputs).double()


def _mlp_layers(model: nn.Module) -> tuple[list[nn.Linear], nn.Linear]:
    """The hidden Linear layers in order and the head of a supported model."""
    if hasattr(model, "hidden_layers"):  # TabularMLP
        return list(model.hidden_layers()), model.head
    return [model.hidden], model.head  # ToyMLP


@torch.no_grad()
def spline_initialise(model: nn.Module, cfg: ModelConfig | Any, x_train: torch.Tensor, y_train: torch.Tensor,
                      task: str, *, seed: int = 0, x_test: torch.Tensor | None = None,
                      y_test: torch.Tensor | None = None) -> SplineInit:
    """Fit MARS on (x_train, y_train) and write it into ``model`` (in place) so that the model computes it.

    Args:
        model: a built ``tabular_mlp`` or ``toy_mlp`` (see :func:`check_spline_init`).
        cfg: its ``model`` options (``mars``: the fit's options and ``widen_scale``).
        x_train: inputs (n, ...) as the model takes them (flattened here).
        y_train: class labels (n,) or regression targets (n, p).
        task: ``classification`` (one-hot targets) or ``regression``.
        seed: seeds the padding units' incoming weights.
        x_test, y_test: when given, the fit's test score goes into the attrs.

    Returns:
        The fit, its seconds, and the trace attrs ``mars_*``: seconds, terms, units, train R², GCV, and
        test MSE and R² (regression) or test accuracy of argmax (classification).

    Raises:
        ConfigError: the model is not supported, or it is narrower than the fit's K units.
        FitError: MARS selected no term (never a silent random init).
    """
    cfg = as_options(cfg, ModelConfig, "model")
    check_spline_init(cfg)
    start = time.perf_counter()
    hidden, head = _mlp_layers(model)
    x = x_train.reshape(len(x_train), -1)  # (n, d)
    fit = fit_mars(x, mars_targets(y_train, head.out_features, task), cfg.mars, device=x.device)
    width = hidden[0].out_features
    if fit.n_units > width:
        raise ConfigError(f"model.init=mars: the MARS fit has {fit.n_units} units ({fit.feature.numel()} hinges + 2 × "
                          f"{fit.linear_feature.numel()} linear terms) but model.width={width}; set model.width >= "
                          f"{fit.n_units}, or lower model.mars.max_terms (now {cfg.mars.max_terms}) to fit fewer "
                          f"terms.")
    net = widen(to_network(fit), width, scale=cfg.mars.widen_scale, generator=torch.Generator().manual_seed(seed))
    first, last = net[0], net[2]
    hidden[0].weight.copy_(first.weight)  # (width, d)
    hidden[0].bias.copy_(first.bias)
    for layer in hidden[1:]:  # relu(I·h) = h for h ≥ 0: the deeper layers pass the MARS units on unchanged
        layer.weight.copy_(torch.eye(width, dtype=layer.weight.dtype))
        layer.bias.zero_()
    head.weight.copy_(last.weight)  # (p, width)
    head.bias.copy_(last.bias)
    seconds = time.perf_counter() - start
    attrs: dict[str, Any] = {"mars_fit_seconds": float(seconds), "mars_terms": len(fit.terms),
                             "mars_units": int(fit.n_units), "mars_train_r2": float(fit.r2), "mars_gcv": float(fit.gcv)}
    if x_test is not None and y_test is not None:
        pred = fit.predict(x_test.reshape(len(x_test), -1).cpu().double())  # (n_test, p) float64
        if task == "regression":
            target = y_test.reshape(len(y_test), -1).cpu().double()
            sse = float(((pred - target) ** 2).sum())
            sst = float(((target - target.mean(0)) ** 2).sum())
            attrs.update(mars_test_mse=sse / target.numel(), mars_test_r2=1 - sse / sst if sst > 0 else math.nan)
        else:
            attrs["mars_test_acc"] = float((pred.argmax(1) == y_test.cpu()).double().mean())
    return SplineInit(fit, seconds, attrs)
