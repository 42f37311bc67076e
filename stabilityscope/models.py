"""Model registry. The canonical network is EOC-training's Fashion-MNIST MLP (SCIENCE.md §1.5).

``fmnist_fc``: 784 → Linear(784, width, bias=False) named ``hidden`` → φ → Linear(width, 10) named
``head``. Hidden init Normal(J0/N, J²/N) with N = fan-in (J = 0.5, J0 = 0 by default, the start
point (J0/J, 1/J) = (0, 2)); head Glorot-uniform with zero bias (Keras' defaults).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from stabilityscope.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


class FashionFC(nn.Module):
    """The canonical 784-width(φ)-classes network (EOC-training)."""

    def __init__(self, in_features: int, width: int, num_classes: int, activation: str = "tanh",
                 init_J: float = 0.5, init_J0: float = 0.0) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(in_features, width, bias=False)
        self.act = ACTIVATIONS[activation]()
        self.head = nn.Linear(width, num_classes)
        self.activation = activation
        with torch.no_grad():
            # W_ij ~ Normal(J0/N, J²/N), N = fan-in: the phase coordinates of §1.1 at init.
            self.hidden.weight.normal_(init_J0 / in_features, init_J / math.sqrt(in_features))
            nn.init.xavier_uniform_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.hidden(self.flatten(x))))  # (B, classes)


ModelBuilder = Callable[..., nn.Module]


def _fmnist_fc(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return FashionFC(math.prod(input_shape), cfg.width, num_classes, str(getattr(cfg.activation, "value", cfg.activation)),
                     cfg.init_J, cfg.init_J0)


MODELS: dict[str, ModelBuilder] = {"fmnist_fc": _fmnist_fc}


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build ``cfg.name`` from the registry for inputs of ``input_shape`` and ``num_classes`` outputs."""
    if cfg.name not in MODELS:
        raise ConfigError(f"Unknown model.name={cfg.name!r}; available: {', '.join(sorted(MODELS))}.")
    return MODELS[cfg.name](cfg, input_shape, num_classes)
