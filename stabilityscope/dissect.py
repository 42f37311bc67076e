"""Find a model's fully connected maps ("dissection").

Each ``nn.Linear`` becomes a :class:`LayerRecord`. A square layer (fan-in = fan-out) is an iterated
map x → φ(Wx + b) (EOC-optimality); a non-square one only has mean-field *surrogate* coordinates:
(J0, J) then describe a random square N×N matrix with the same entry statistics (SCIENCE.md §1.1).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from torch import nn

_ACT_NAMES = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.GELU: "gelu", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}


@dataclass(frozen=True)
class LayerRecord:
    name: str  # qualified module name, e.g. "hidden"
    fan_out: int
    fan_in: int
    role: str  # "head" (classifier) or "hidden"
    activation: Optional[str]  # the nonlinearity that follows, when known
    has_bias: bool

    @property
    def square(self) -> bool:
        return self.fan_in == self.fan_out

    @property
    def shape(self) -> tuple[int, int]:
        return (self.fan_out, self.fan_in)


def dissect(model: nn.Module) -> list[LayerRecord]:
    """Every ``nn.Linear`` of ``model`` in registration order; the last one is the head.

    The following activation is the next module in registration order when it is an activation
    module, or the model's own ``activation`` attribute for the canonical network.
    """
    modules = list(model.named_modules())
    linears = [i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Linear)]
    records = []
    for rank, i in enumerate(linears):
        name, lin = modules[i]
        is_head = name == "head" or rank == len(linears) - 1
        act = None
        if not is_head:
            nxt = modules[i + 1][1] if i + 1 < len(modules) else None
            act = _ACT_NAMES.get(type(nxt)) or getattr(model, "activation", None)
        records.append(LayerRecord(name, lin.out_features, lin.in_features, "head" if is_head else "hidden",
                                   act, lin.bias is not None))
    return records


def select_layers(records: list[LayerRecord], selector: str) -> list[LayerRecord]:
    """``all``, ``head``, or a regular expression matched (``re.search``) against qualified names."""
    if selector == "all":
        return list(records)
    if selector == "head":
        return [r for r in records if r.role == "head"]
    pattern = re.compile(selector)
    return [r for r in records if pattern.search(r.name)]
