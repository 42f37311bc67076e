"""Cheap edge statistics: where the controlled maps sit relative to the edge, measured between checkpoints.

A checkpoint measures everything (iterated maps, spectra, depth exponents) and costs seconds; a
controller reads its statistic every few hundred optimiser steps and must cost a small fraction of
the steps it sits between. Three statistics, each the same quantity a checkpoint records:

- ``J2``: J² = N·var(W) of an FC map's weights W (fan-in N), EOC-training's coupling; the edge is
  J_c², the J at which χ = 1 when J0 = 0 (1 for tanh, 2 for ReLU and the ReLU-like activations whose
  mean-field surrogate is ReLU's). One pass over the weights.
- ``chi``: the mean-field stability χ = J²·E φ'(h)² of the map's (J0, J) (EOC-training; the edge is
  χ = 1), solved by :func:`stabilityscope.theory.meanfield.order_parameters` for all maps at once;
  in tanh's paramagnetic phase (J < 1, |J0| < 1: u = q = 0) it is J² exactly and is returned as such,
  without the solve. It departs from J² where |J0| ≥ 1 or J > 1. Both are exact functions of the
  weights: the values a checkpoint records, to the solver's tolerance.
- ``gain``: the scale-free RMS gain of trunk blocks (:mod:`stabilityscope.dynamics.depthwise`) at the
  real activations of a few test inputs, from a few random tangent directions per input (no Lanczos
  steps): an unbiased estimate of the checkpoint's ``gain_rms`` whose standard error falls as
  1/√(inputs·directions). The directions are drawn from a fixed seed, so successive readings share
  them and their difference carries less noise than either.

Each reader returns one value per map, (M,); none draws from the global random generator, so a
controlled run trains exactly as it would with the readings left out.
"""
from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from stabilityscope.config import value_of
from stabilityscope.dynamics.depthwise import block_readings, span_module, trunk_states, unfused_attention
from stabilityscope.errors import ConfigError
from stabilityscope.models.dissect import LayerRecord, dissect
from stabilityscope.models.trunk import find_trunk
from stabilityscope.recording.tracking import meanfield_activation
from stabilityscope.theory.meanfield import critical_coupling, order_parameters, phase_coordinates

__all__ = ["STATISTICS", "EdgeStatistic", "WeightStatistic", "BlockGain", "edge_statistic", "FC_KINDS"]

STATISTICS = ("J2", "chi", "gain")
FC_KINDS = ("linear", "qkv_view", "conv1x1")


class EdgeStatistic:
    """A statistic of M maps with its edge value per map. Subclasses implement :meth:`read`."""

    name: str = ""
    maps: list[str]
    edges: np.ndarray  # (M,) the edge value of each map

    def read(self, model: nn.Module, weights: Optional[Mapping[str, torch.Tensor]] = None) -> np.ndarray:
        """The statistic of each map now, (M,) float64."""
        raise NotImplementedError

    def parameters(self, model: nn.Module) -> list[list[torch.Tensor]]:
        """The weight tensors each map's decay acts on (matrices, ndim ≥ 2), per map."""
        raise NotImplementedError


class WeightStatistic(EdgeStatistic):
    """J² or χ of FC maps, from their weight matrices (see the module docstring).

    Args:
        records: the FC maps (kinds linear, qkv_view, conv1x1).
        name: ``J2`` or ``chi``.
    """

    def __init__(self, records: Sequence[LayerRecord], name: str) -> None:
        if name not in ("J2", "chi"):
            raise ValueError(f"WeightStatistic reads J2 or chi, not {name!r}")
        self.name, self.records = name, list(records)
        self.maps = [r.name for r in self.records]
        self.activations = [meanfield_activation(r) for r in self.records]  # tanh or relu (the surrogate's φ)
        if name == "J2":
            self.edges = np.array([critical_coupling(a) ** 2 for a in self.activations])
        else:
            self.edges = np.ones(len(self.records))
        # maps of one shape are read in one stacked pass: (shape → indices)
        self._by_shape: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(self.records):
            self._by_shape.setdefault(r.shape, []).append(i)

    @torch.no_grad()
    def coordinates(self, model: nn.Module,
                    weights: Optional[Mapping[str, torch.Tensor]] = None) -> tuple[np.ndarray, np.ndarray]:
        """(J0, J) of every map, (M,) each; ``weights`` (name → (fan_out, fan_in)) replace the model's own."""
        j0, j = np.empty(len(self.records)), np.empty(len(self.records))
        for idx in self._by_shape.values():
            W = torch.stack([weights[self.maps[i]] if weights is not None and self.maps[i] in weights
                             else self.records[i].weight(model) for i in idx])  # (L, M, N)
            a, b = phase_coordinates(W)
            j0[idx], j[idx] = a.cpu().numpy(), b.cpu().numpy()
        return j0, j

    def read(self, model: nn.Module, weights: Optional[Mapping[str, torch.Tensor]] = None) -> np.ndarray:
        j0, j = self.coordinates(model, weights)
        if self.name == "J2":
            return j * j
        out = np.empty(len(self.records))
        # tanh's paramagnetic phase (J < 1, |J0| < 1): the fixed point u = q = 0 is the attractor, so χ = J²·tanh'(0)²
        # = J² exactly, without the fixed-point solve (which slows down near J = 1, where the controller works)
        tanh = np.array([a == "tanh" for a in self.activations])
        para = tanh & (j < 1) & (np.abs(j0) < 1)
        out[para] = j[para] ** 2
        for act in set(self.activations):
            idx = [i for i, a in enumerate(self.activations) if a == act and not para[i]]
            if idx:
                out[idx] = order_parameters(j0[idx], j[idx], act)[2]
        return out

    def parameters(self, model: nn.Module) -> list[list[torch.Tensor]]:
        return [[model.get_parameter(r.param or f"{r.name}.weight")] for r in self.records]


class BlockGain(EdgeStatistic):
    """The scale-free RMS gain of trunk blocks at the real activations of a few inputs (module docstring).

    Args:
        model: the model (its trunk is found by :func:`stabilityscope.models.trunk.find_trunk`).
        spans: the trunk spans read (module names applied in turn), in forward order.
        probe_inputs: the inputs (B, ...) the stream is captured on.
        probes: random tangent directions per input.
        seed: seeds the directions (the same ones at every reading).
    """

    name = "gain"

    def __init__(self, spans: Sequence[Sequence[str]], probe_inputs: torch.Tensor, probes: int = 4,
                 seed: int = 0) -> None:
        self.spans = [tuple(s) for s in spans]
        self.maps = [f"block:{s[0]}" for s in self.spans]  # the names a checkpoint records them under
        self.edges = np.ones(len(self.spans))
        self.probe_inputs, self.probes, self.seed = probe_inputs, int(probes), int(seed)

    def read(self, model: nn.Module, weights: Optional[Mapping[str, torch.Tensor]] = None) -> np.ndarray:
        if weights:
            raise ConfigError("the gain statistic reads the model's own blocks; it takes no weight overrides")
        was_training = model.training
        grads = [(p, p.requires_grad) for p in model.parameters()]
        model.eval()  # batch norm on running statistics, no dropout: inputs do not interact, no random draws
        for p, _ in grads:
            p.requires_grad_(False)  # derivatives with respect to the states only
        try:
            with torch.no_grad():
                states = trunk_states(model, self.spans, self.probe_inputs)
            gains = np.empty(len(self.spans))
            with unfused_attention(model):
                for i, (span, x) in enumerate(zip(self.spans, states)):
                    r = block_readings(span_module(model, span), x, probes=self.probes, lanczos_steps=0,
                                       exact_max=0, seed=self.seed)
                    gains[i] = float(r.gain_rms.double().mean())  # the mean over inputs, as a checkpoint records it
            return gains
        finally:
            model.train(was_training)
            for p, flag in grads:
                p.requires_grad_(flag)

    def parameters(self, model: nn.Module) -> list[list[torch.Tensor]]:
        out = []
        for span in self.spans:
            params = [p for name in span for p in model.get_submodule(name).parameters() if p.ndim >= 2]
            out.append(params)
        return out


def _fc_records(model: nn.Module, input_shape: Optional[tuple[int, ...]], conv1x1: bool) -> list[LayerRecord]:
    example = None
    if input_shape is not None:
        p = next(model.parameters(), None)
        example = torch.zeros(1, *input_shape, device=p.device if p is not None else None)
    return [r for r in dissect(model, conv1x1=conv1x1, chains=False, example_input=example) if r.kind in FC_KINDS]


def edge_statistic(model: nn.Module, name: str, layers: Optional[str] = None, *,
                   probe_inputs: Optional[torch.Tensor] = None, probes: int = 4,
                   conv1x1: bool = False) -> EdgeStatistic:
    """The reader of statistic ``name`` (``J2``, ``chi``, ``gain``; ``auto`` → ``chi``) on the maps ``layers`` selects.

    Args:
        model: the model being trained.
        name: the statistic.
        layers: a regular expression (``re.search``) on FC map names (J2, chi) or on the first module of
            each trunk block (gain); None: every FC map but the head, or every trunk block.
        probe_inputs: real inputs (B, ...) of the model: the gain's stream is captured on them (required for
            ``gain``; for J2 and chi the first one only lets the dissection read which activation follows
            each layer).
        probes: random directions per input (gain).
        conv1x1: also read 1×1 convolutions as FC maps (J2, chi; ``model.conv1x1``).

    Raises:
        ConfigError: an unknown statistic, no map selected (naming the candidates), or gain without inputs.
    """
    name = value_of(name)
    if name == "auto":
        name = "chi"
    if name not in STATISTICS:
        raise ConfigError(f"Invalid value control.statistic={name!r}: allowed: auto, {', '.join(STATISTICS)}.")
    rx = re.compile(layers) if layers is not None else None
    shape = tuple(probe_inputs.shape[1:]) if probe_inputs is not None else None
    if name in ("J2", "chi"):
        records = _fc_records(model, shape, conv1x1)
        chosen = ([r for r in records if rx.search(r.name)] if rx is not None
                  else [r for r in records if r.role != "head"] or records)
        if not chosen:
            raise ConfigError(f"control.layers={layers!r} selects none of the FC maps of {type(model).__name__}: "
                              f"{', '.join(r.name for r in records) or '(none found)'}.")
        return WeightStatistic(chosen, name)
    if probe_inputs is None:
        raise ConfigError("control.statistic=gain reads the trunk's blocks at real inputs: give probe_inputs "
                          "(a batch of the inputs the model is trained on).")
    spans = find_trunk(model, None, probe_inputs[:1])
    chosen_spans = [s for s in spans if rx is None or rx.search(s[0])]
    if not chosen_spans:
        raise ConfigError(f"control.layers={layers!r} selects none of the trunk blocks of {type(model).__name__}: "
                          f"{', '.join(s[0] for s in spans)}.")
    return BlockGain(chosen_spans, probe_inputs, probes)
