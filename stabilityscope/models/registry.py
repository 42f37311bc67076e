"""Models: the built-in registry, and any timm or torchvision vision model.

``model.family`` chooses where ``model.name`` is looked up:

- ``builtin`` (:data:`MODELS`): ``fmnist_fc``, EOC-training's canonical Fashion-MNIST MLP (docs/science/mean-field.md):
  784 → Linear(784, width, bias=False) named ``hidden`` → φ → Linear(width, 10) named ``head``;
  hidden init Normal(J0/N, J²/N) with N = fan-in (J = 0.5, J0 = 0 by default, the start point
  (J0/J, 1/J) = (0, 2)); head Glorot-uniform with zero bias (Keras' defaults). ``eoc_mlp`` and
  ``eoc_cnn``, EOC-optimality's networks (:mod:`stabilityscope.models.eoc_models`). ``toy_mlp``: d → width(φ,
  with bias) → classes for 2-D toy data (``dataset=toy2d``, decision-region figures). ``sgd_cnn``: a small
  CNN (three 3×3 conv + max-pool stages, ``dense``, ``head``) for SGD-complexity
  (:mod:`stabilityscope.models.sgd_cnn`). ``tabular_mlp``: flat inputs → ``depth`` hidden layers of
  ``width`` units (φ, with bias; ``hidden``, ``hidden2``, ...) → ``head``, for tables (``dataset=abalone``) and
  Spline-FC's initialisation (``model.init=mars``, :mod:`stabilityscope.models.spline_init`); hidden init
  Normal(J0/N, J²/N) with zero bias, head Glorot-uniform.
- ``timm`` / ``torchvision``: the library's model, adapted to the dataset (:mod:`stabilityscope.models.vision`).

:func:`build_model` ends with a dry forward pass, so a model that cannot take the dataset's inputs
fails with a :class:`ConfigError` before training starts.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from stabilityscope.config import ModelConfig, as_options, value_of
from stabilityscope.errors import ConfigError
from stabilityscope.models.eoc_models import build_eoc_cnn, build_eoc_mlp
from stabilityscope.models.mixers import build_mixer_cifar, build_resmlp_cifar
from stabilityscope.models.sgd_cnn import build_sgd_cnn
from stabilityscope.models.vision import build_library_model, check_forward, on_meta

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


class FashionFC(nn.Module):
    """The canonical 784-width(φ)-classes network (EOC-training)."""

    trunk = (("hidden", "act"),)  # its one block for the depth-wise readings

    def __init__(self, in_features: int, width: int, num_classes: int, activation: str = "tanh",
                 init_J: float = 0.5, init_J0: float = 0.0) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(in_features, width, bias=False)
        self.act = ACTIVATIONS[activation]()
        self.head = nn.Linear(width, num_classes)
        self.activation = activation
        with torch.no_grad():
            # W_ij ~ Normal(J0/N, J²/N), N = fan-in: the phase coordinates of docs/science/mean-field.md at init.
            self.hidden.weight.normal_(init_J0 / in_features, init_J / math.sqrt(in_features))
            nn.init.xavier_uniform_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.hidden(self.flatten(x))))  # (B, classes)


class ToyMLP(nn.Module):
    """A small MLP for 2-D inputs (decision-region figures): d → width (φ, with bias) → classes.

    The hidden layer has a bias, so its hyperplanes need not pass through the origin; PyTorch's
    default (Kaiming-uniform) initialisation.
    """

    def __init__(self, in_features: int, width: int, num_classes: int, activation: str = "tanh") -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(in_features, width)
        self.act = ACTIVATIONS[activation]()
        self.head = nn.Linear(width, num_classes)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.hidden(self.flatten(x))))  # (B, classes)


class TabularMLP(nn.Module):
    """A fully connected network on flat inputs: d → width (φ) → ... → width (φ) → outputs, with biases.

    Hidden weights ~ Normal(J0/N, J²/N) with N = fan-in (the phase coordinates of docs/science/mean-field.md at init;
    J = √2, J0 = 0 is He's init and the ReLU edge), biases 0; the head Glorot-uniform with zero bias.
    """

    def __init__(self, in_features: int, width: int, num_outputs: int, depth: int = 1, activation: str = "relu",
                 init_J: float = 2 ** 0.5, init_J0: float = 0.0) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(in_features, width)
        for i in range(2, depth + 1):  # named hidden2, hidden3, ... in the trace
            self.add_module(f"hidden{i}", nn.Linear(width, width))
        self.act = ACTIVATIONS[activation]()
        self.head = nn.Linear(width, num_outputs)
        self.activation, self.depth = activation, depth
        with torch.no_grad():
            for layer in self.hidden_layers():
                n = layer.in_features
                layer.weight.normal_(init_J0 / n, init_J / math.sqrt(n))
                nn.init.zeros_(layer.bias)
            nn.init.xavier_uniform_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def hidden_layers(self) -> list[nn.Linear]:
        """The hidden layers in order (``hidden``, ``hidden2``, ...)."""
        return [self.hidden] + [getattr(self, f"hidden{i}") for i in range(2, self.depth + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.flatten(x)  # (B, d)
        for layer in self.hidden_layers():
            h = self.act(layer(h))  # (B, width)
        return self.head(h)  # (B, outputs)


ModelBuilder = Callable[..., nn.Module]


def _fmnist_fc(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return FashionFC(math.prod(input_shape), cfg.width, num_classes, value_of(cfg.activation),
                     cfg.init_J, cfg.init_J0)


def _toy_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return ToyMLP(math.prod(input_shape), cfg.width, num_classes, value_of(cfg.activation))


def _tabular_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return TabularMLP(math.prod(input_shape), cfg.width, num_classes, cfg.depth, value_of(cfg.activation),
                      cfg.init_J, cfg.init_J0)


MODELS: dict[str, ModelBuilder] = {"fmnist_fc": _fmnist_fc, "eoc_mlp": build_eoc_mlp, "eoc_cnn": build_eoc_cnn,
                                   "toy_mlp": _toy_mlp, "sgd_cnn": build_sgd_cnn, "tabular_mlp": _tabular_mlp,
                                   "mixer_cifar": build_mixer_cifar, "resmlp_cifar": build_resmlp_cifar}
FAMILIES = ("builtin", "timm", "torchvision")


def model_family(cfg: ModelConfig) -> str:
    """``cfg.family`` as a plain string (``builtin`` when the config has none)."""
    return value_of(cfg.family)


def _build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    family = model_family(cfg)
    if family == "builtin":
        if cfg.name not in MODELS:
            raise ConfigError(f"Unknown model.name={cfg.name!r}; built-in models: {', '.join(sorted(MODELS))}. For a "
                              f"timm or torchvision model use model=timm or model=torchvision with model.name=<name>.")
        if cfg.pretrained:
            raise ConfigError(f"model.pretrained=true: the built-in model {cfg.name!r} has no pretrained weights.")
        return MODELS[cfg.name](cfg, input_shape, num_classes)
    if family not in FAMILIES:
        raise ConfigError(f"Unknown model.family={family!r}; allowed: {', '.join(FAMILIES)}.")
    return build_library_model(cfg, input_shape, num_classes)


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, *, meta: bool = False,
                check: bool = True) -> nn.Module:
    """Build the model of ``cfg`` (a ModelConfig) for inputs of ``input_shape`` and ``num_classes`` outputs.

    Args:
        cfg: the ``model`` config (``name``, ``family`` and the options of that family).
        input_shape: one input without the batch dimension, e.g. (1, 28, 28) or (3, 32, 32).
        num_classes: outputs of the classifier.
        meta: build on the meta device (shapes only, no memory for weights; dissection, describe).
        check: run a dry forward pass and raise ConfigError on a shape mismatch.
    """
    cfg = as_options(cfg, ModelConfig, "model")
    model = on_meta(_build, cfg, input_shape, num_classes) if meta else _build(cfg, input_shape, num_classes)
    if check:
        check_forward(model, input_shape, num_classes, f"{model_family(cfg)} model {cfg.name!r}")
    return model
