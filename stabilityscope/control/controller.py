"""The edge controller: a weight decay that holds chosen maps at the edge of chaos while the network trains.

EOC-training finds that weight decay decides where training settles relative to the edge, and that the
decay whose J² plateau is the edge gives the best final test loss. :func:`~stabilityscope.recommend`
predicts that decay from laws calibrated on one network; this controller measures instead. Every
``every`` optimiser steps it reads a cheap edge statistic of the chosen maps
(:mod:`stabilityscope.control.statistics`) and sets the weight decay of the parameter groups that
hold them by a bounded PI step on ln λ (:mod:`stabilityscope.control.law`). It needs no calibration
sweep and applies to any model whose maps the statistic can read.

In your own loop, like a learning-rate scheduler::

    import stabilityscope as ss

    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.5)
    ctl = ss.EdgeController(model, opt, ss.ControlConfig(statistic="chi", layers="hidden"),
                            steps_per_epoch=len(loader))
    with ss.Recorder(model, "runs/controlled", probe_inputs=x_test[:16]) as rec:
        rec.attach_controller(ctl)                 # every action goes into the trace, its state into state/
        rec.checkpoint(0)
        for epoch in range(1, epochs + 1):
            for x, y in loader:
                ...; opt.step()
                ctl.step()                         # acts every `every` steps, returns the action or None
            rec.checkpoint(epoch, metrics={...})

The app runs it with ``train.control=edge`` (options ``control.*``), the Lightning callback with
``StabilityCallback(..., control=ss.ControlConfig(...))``.

Which decay is set: the controller adjusts ``weight_decay`` of the optimiser's parameter groups that
hold the maps' weight matrices, the whole group (the app's optimisers put every matrix in one decayed
group, so the decay is the network's, as in a decay sweep). Give the controlled maps a group of their
own to decay them alone. One loop per group: its error is the median (``combine``) over the group's
maps of ln(S/S*).

Resume: :meth:`state_dict` / :meth:`load_state_dict` (the app and the Recorder save it with every
checkpoint); loading it sets the groups' decays again, so a resumed run continues with the decay an
uninterrupted one had.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from stabilityscope.config import ControlConfig, as_options, value_of
from stabilityscope.control.law import BoundedPI, LawSettings
from stabilityscope.control.statistics import EdgeStatistic, edge_statistic
from stabilityscope.errors import ConfigError

__all__ = ["ControlAction", "EdgeController"]

_COMBINE = {"median": np.median, "mean": np.mean, "max": np.max}


@dataclass(frozen=True)
class ControlAction:
    """One update of the controller: when, what it read, and the decay it set."""

    step: int  # the optimiser steps taken when it read the statistic
    epoch: float  # step / steps per epoch
    statistic: np.ndarray  # (M,) the statistic of each map
    error: np.ndarray  # (G,) ln(S/S*) per parameter group, combined over its maps (and filtered)
    weight_decay: np.ndarray  # (G,) the decay set, in force from the next optimiser step on


class EdgeController:
    """Hold the chosen maps' edge statistic at its target by setting their parameter groups' weight decay.

    Args:
        model: the model being trained.
        optimizer: its optimiser (any ``torch.optim`` optimiser whose groups take ``weight_decay``).
        options: a :class:`~stabilityscope.config.ControlConfig` (or a mapping of its fields).
        steps_per_epoch: optimiser steps per epoch: the law's time unit (its integral gain is per epoch).
        probe_inputs: a few real inputs (B, ...): required by ``statistic=gain`` (the first
            ``options.probe_inputs`` are used); for J2 and chi they only let the dissection read each
            layer's activation from a forward pass.
        conv1x1: read 1×1 convolutions as FC maps too (``model.conv1x1``).
        recorder: a :class:`~stabilityscope.recording.recorder.Recorder` to attach to (its trace then holds
            every action).

    Raises:
        ConfigError: bad options, no map selected, or maps whose weights no optimiser group holds.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, options: Any = None, *,
                 steps_per_epoch: int, probe_inputs: Optional[torch.Tensor] = None, conv1x1: bool = False,
                 recorder: Any = None) -> None:
        self.options = as_options(options, ControlConfig, "control")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ConfigError(f"EdgeController: steps_per_epoch={steps_per_epoch!r} must be a positive integer "
                              f"(the optimiser steps of one epoch, e.g. len(train_loader)): the law's time unit.")
        self.model, self.optimizer, self.steps_per_epoch = model, optimizer, steps_per_epoch
        o = self.options
        if probe_inputs is not None:
            p = next(model.parameters(), None)
            probe_inputs = probe_inputs[: o.probe_inputs].to(p.device if p is not None else "cpu")
        self.statistic: EdgeStatistic = edge_statistic(model, value_of(o.statistic), o.layers,
                                                       probe_inputs=probe_inputs, probes=o.probes, conv1x1=conv1x1)
        self.maps = list(self.statistic.maps)
        self.targets = (np.full(len(self.maps), float(o.target)) if o.target is not None
                        else np.asarray(self.statistic.edges, dtype=np.float64))
        self.group_index, self.group_maps = self._groups(self.statistic.parameters(model))
        self.settings = LawSettings(o.proportional_gain, o.integral_gain, o.max_step, o.decay_min, o.decay_max,
                                    o.smoothing)
        self.law = BoundedPI(len(self.group_index), self.settings, o.decay_init)
        self.last_update: Optional[int] = None  # the step of the newest update
        self.steps_taken = 0  # step()'s own count when it is not given the step
        self.actions: list[ControlAction] = []  # every update of this session (a resumed run: since the resume)
        self.apply()
        # (step, the state after that update): a checkpoint saved while training goes on takes its own
        # (state_at); step −1 holds the state before any update
        self._states: list[tuple[int, dict[str, Any]]] = [(-1, self.state_dict())]
        if recorder is not None:
            recorder.attach_controller(self)

    def _groups(self, params: list[list[torch.Tensor]]) -> tuple[list[int], list[list[int]]]:
        """The optimiser groups holding the maps' matrices, and each group's maps (indices into ``maps``)."""
        where = {id(p): g for g, group in enumerate(self.optimizer.param_groups) for p in group["params"]}
        groups: dict[int, list[int]] = {}
        for m, tensors in enumerate(params):
            held = sorted({where[id(p)] for p in tensors if id(p) in where})
            if not held:
                raise ConfigError(f"EdgeController: no parameter group of the optimiser holds the weights of "
                                  f"{self.maps[m]!r}; make the optimiser over the model being controlled.")
            for g in held:
                groups.setdefault(g, []).append(m)
        index = sorted(groups)
        for g in index:
            if "weight_decay" not in self.optimizer.param_groups[g]:
                raise ConfigError(f"EdgeController: the optimiser {type(self.optimizer).__name__} has no "
                                  f"weight_decay in its parameter group {g}; use SGD, Adam, AdamW or another "
                                  f"optimiser that takes one.")
        return index, [groups[g] for g in index]

    # -- the loop ------------------------------------------------------------------------------------
    @property
    def every(self) -> int:
        return int(self.options.every)

    @property
    def decays(self) -> np.ndarray:
        """The decay of every controlled group now, (G,)."""
        return self.law.decay

    def next_update(self, step: int) -> int:
        """The first step after ``step`` at which the controller acts (a multiple of ``every``)."""
        return (step // self.every + 1) * self.every

    def due(self, step: int) -> bool:
        """Whether the controller acts at ``step`` (a positive multiple of ``every`` not yet acted on)."""
        return step > 0 and step % self.every == 0 and (self.last_update is None or step > self.last_update)

    def step(self, step: Optional[int] = None) -> Optional[ControlAction]:
        """Call after each optimiser step: acts when ``step`` (default: its own count of calls) is due."""
        if step is None:
            self.steps_taken += 1
            step = self.steps_taken
        else:
            self.steps_taken = int(step)
        return self.update(step) if self.due(step) else None

    def read(self, weights: Optional[Mapping[str, torch.Tensor]] = None) -> np.ndarray:
        """The statistic of every map now, (M,), without acting."""
        return self.statistic.read(self.model, weights)

    def update(self, step: int, weights: Optional[Mapping[str, torch.Tensor]] = None) -> ControlAction:
        """Read the statistic, step the law and set the groups' decays; returns (and logs) the action.

        Args:
            step: the optimiser steps taken so far.
            weights: the maps' current weight matrices by name, when the model does not hold them (the app's
                hand-written canonical step trains a stacked copy).
        """
        step = int(step)
        values = self.read(weights)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_map = np.log(values / self.targets)
        combine = _COMBINE[value_of(self.options.combine)]
        errors = np.array([_combine(combine, per_map[maps]) for maps in self.group_maps])
        previous = self.last_update if self.last_update is not None else step - self.every
        dt = max(step - previous, 0) / self.steps_per_epoch
        used = self.law.step(errors, dt)
        self.last_update = step
        self.apply()
        action = ControlAction(step, step / self.steps_per_epoch, values, used, self.law.decay.copy())
        self.actions.append(action)
        self._states.append((step, self.state_dict()))
        return action

    def apply(self) -> None:
        """Write the law's decays into the optimiser's groups."""
        for g, decay in zip(self.group_index, self.law.decay):
            self.optimizer.param_groups[g]["weight_decay"] = float(decay)

    # -- resume --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the law's state and the last update's step (plain Python numbers)."""
        return {"law": self.law.state_dict(), "last_update": self.last_update, "steps_taken": self.steps_taken,
                "maps": list(self.maps), "groups": list(self.group_index)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (of a controller of the same maps and groups); sets the groups' decays."""
        same_groups = list(state.get("groups", self.group_index)) == self.group_index
        if list(state.get("maps", self.maps)) != self.maps or not same_groups:
            raise ConfigError(f"the saved controller state reads the maps {state.get('maps')} in the optimiser groups "
                              f"{state.get('groups')}, this controller {self.maps} in {self.group_index}: resume a "
                              f"controlled run with the options it was started with.")
        self.law.load_state_dict(state["law"])
        self.last_update = state["last_update"]
        self.steps_taken = int(state.get("steps_taken", self.last_update or 0))
        self.actions = []  # those before the state was saved are in the trace already
        self.apply()
        self._states = [(-1 if self.last_update is None else self.last_update, self.state_dict())]

    def state_at(self, step: int) -> dict[str, Any]:
        """The state as it was after the last update at or before ``step`` (a checkpoint's state, which may be
        saved while training has gone on); states before it are forgotten."""
        i = max(k for k, (s, _) in enumerate(self._states) if s <= step)  # entry 0 (step −1 or the resume) always is
        del self._states[:i]
        return {**self._states[0][1], "steps_taken": int(step)}

    # -- what the trace records ----------------------------------------------------------------------
    def trace_attrs(self) -> dict[str, Any]:
        """The ``/control`` group's attributes: what is read and held, by which law."""
        o = self.options
        return {"statistic": self.statistic.name, "maps": list(self.maps), "targets": self.targets.tolist(),
                "groups": json.dumps(self.group_maps), "group_index": list(self.group_index),
                "law": json.dumps({**self.settings.as_dict(), "every": int(o.every), "combine": value_of(o.combine),
                                   "decay_init": float(self.settings.decay_min if o.decay_init is None
                                                       else o.decay_init),
                                   "steps_per_epoch": int(self.steps_per_epoch), "probe_inputs": int(o.probe_inputs),
                                   "probes": int(o.probes)})}

    def __repr__(self) -> str:
        return (f"EdgeController({self.statistic.name} of {len(self.maps)} map(s) in {len(self.group_index)} group(s), "
                f"every {self.every} steps, decay {', '.join(f'{d:.3g}' for d in self.decays)})")


def _combine(fn: Any, values: np.ndarray) -> float:
    """``fn`` over the finite values (NaN maps are left out; all NaN gives NaN; any +inf gives +inf for max)."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return math.nan
    with np.errstate(invalid="ignore"):
        return float(fn(finite))
