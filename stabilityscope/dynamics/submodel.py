"""The whole-model map input → a chosen module's output (EOC-optimality, docs/science/iterated-maps.md).

EOC-optimality iterates the sub-network from the network's input to a layer whose output has the
input's shape (its MLP: input → third Dense layer; its CNNs: input → the 3-filter conv back to
32×32×3). :class:`ModelPrefix` is that sub-network for any model and any module name: it runs the
model's own forward and stops it (with an exception caught inside ``forward``) as soon as the module
has produced its output, so nothing after it is computed and no architecture needs rewriting.
:func:`prefix_map` wraps it in a :class:`~stabilityscope.dynamics.maps.ModuleMap` when the shapes agree.
"""
from __future__ import annotations

import difflib
import math
from typing import Sequence

import torch
from torch import nn

from stabilityscope.dynamics.maps import ModuleMap
from stabilityscope.errors import ConfigError


class _Reached(Exception):
    """Raised by the forward hook once the target module has run (never escapes ``forward``)."""


def _check_module(model: nn.Module, layer: str) -> None:
    names = [n for n, _ in model.named_modules() if n]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"analysis.map_layer={layer!r} is not a module of {type(model).__name__}.{hint} "
                          f"Its modules include: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}.")


class ModelPrefix(nn.Module):
    """``model`` from its input up to the output of module ``layer``; the rest is skipped.

    When the module's output has as many entries per example as the input, it is returned in the
    input's shape (EOC-optimality's MLP maps flattened images: (1, 28, 28) → 784 → (1, 28, 28)).

    Args:
        model: the full network (held, not copied: the map follows its current weights).
        layer: qualified module name, e.g. ``"act3"`` or ``"blocks.3"``.
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        _check_module(model, layer)
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box: dict[str, torch.Tensor] = {}

        def stop(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            box["out"] = out
            raise _Reached

        handle = self.model.get_submodule(self.layer).register_forward_hook(stop)
        try:
            self.model(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        if "out" not in box:
            raise ConfigError(f"analysis.map_layer={self.layer!r}: the module never ran in the model's forward pass.")
        out = box["out"]
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"analysis.map_layer={self.layer!r} returns {type(out).__name__}, not a tensor.")
        if out.dim() >= 1 and out.shape[0] == x.shape[0] and out[0].numel() == x[0].numel():
            return out.reshape(x.shape)
        return out


def prefix_map(model: nn.Module, layer: str, input_shape: Sequence[int]) -> ModuleMap:
    """The iterated map x → ``model`` up to ``layer`` (flattened states, N = prod(input_shape)).

    Raises:
        ConfigError: when ``layer`` is no module of ``model``, or its output's shape is not the
            input's (such a sub-network has no iterated map).
    """
    prefix = ModelPrefix(model, layer)
    was_training = model.training
    try:
        return ModuleMap(prefix, tuple(input_shape))
    except ValueError as exc:
        with torch.no_grad():
            param = next(model.parameters())
            out = prefix(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
        raise ConfigError(
            f"analysis.map_layer={layer!r}: its output has shape {tuple(out.shape[1:])} "
            f"({out[0].numel()} values per example) but the input has {tuple(input_shape)} "
            f"({math.prod(input_shape)}); the map input → {layer} needs equal sizes.") from exc
    finally:
        model.train(was_training)
