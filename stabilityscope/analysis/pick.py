"""A label-free checkpoint pick: the first checkpoint at which an edge statistic reaches its edge value.

EOC-training places the best test loss near the edge (J = 1 on the canonical network); the atlas
(:mod:`stabilityscope.analysis.atlas`) measures, for every candidate statistic and every run, how far the
checkpoint where the statistic first crosses its edge value lies from the best-test-loss checkpoint.
:func:`pick_checkpoint` is that pick for one run, without the test labels: what to keep when there is no
held-out set to choose by. Its rules are the atlas's candidates (the same functions:
:func:`~stabilityscope.analysis.atlas.pick_statistics` and :func:`~stabilityscope.analysis.atlas.first_crossing`)
plus any recorded statistic of one layer::

    import stabilityscope as ss

    p = ss.pick_checkpoint("checkpoints/fmnist_fc-fashion_mnist/<stamp>")     # rule="auto"
    p.epoch, p.statistic, p.value                  # where χ of the hidden layer first reached 1
    ss.pick_checkpoint(run, rule="J:hidden")       # J of one layer against its edge J_c
    ss.pick_checkpoint(run, rule="gain")           # the median depth-wise block gain (analysis.depthwise runs)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.recording.trace import Trace, open_trace
from stabilityscope.theory.meanfield import critical_coupling

__all__ = ["CheckpointPick", "PICK_RULES", "AUTO_RULES", "pick_checkpoint"]

# Short names of the atlas's candidate statistics (analysis.atlas.pick_statistics names them in full).
PICK_RULES = {
    "chi": "χ, median over the trunk's FC layers",
    "chi_head": "χ of the head",
    "gain": "gain, median over blocks (depth-wise)",
    "gain_deepest": "gain of the deepest block (depth-wise)",
    "depth_lambda": "depth exponent λ₁ of the trunk",
    "s_chain": "s, median over iterated chains",
    "s_model": "s of the iterated model map",
}
# rule="auto", by model family (analysis.atlas.family_of); any other family: "chi". On the canonical network
# "chi" is χ of its hidden layer from the weights (its only FC map below the head), edge 1. On EOC-optimality's
# MLP and CNN it is s of the iterated model map, the statistic EOC-optimality places at the best checkpoint and
# the only one the atlas saw pick within two epochs of it. On the atlas's modern families no statistic picked a
# near-best checkpoint (docs/results/atlas.md), so none is made their default: they get "chi" like any model.
AUTO_RULES: dict[str, str] = {"canonical MLP": "chi", "EOC-optimality MLP": "s_model",
                               "EOC-optimality CNN": "s_model"}
# the edge value of a layer statistic named in a "<stat>:<layer>" rule
_LAYER_EDGES = {"chi": 1.0, "s_mean": 1.0, "gain_rms": 1.0, "lambda_max": 0.0, "edge_distance": 0.0}


@dataclass(frozen=True)
class CheckpointPick:
    """The checkpoint a rule picks in one run; the test-loss fields only judge the pick (it never reads them)."""

    rule: str  # as asked (auto resolved: see ``statistic``)
    statistic: str  # the statistic read, in full
    edge: float  # its edge value
    index: Optional[int]  # the checkpoint (row of the trace); None: the statistic never reached its edge
    epoch: float  # its fractional epoch (NaN without a pick)
    step: int  # its optimiser step (−1 without a pick)
    value: float  # the statistic there (NaN without a pick)
    best_index: Optional[int]  # the best-test-loss checkpoint, when the trace has test losses
    excess_loss: float  # test loss at the pick / best test loss − 1 (NaN without either)

    @property
    def picked(self) -> bool:
        return self.index is not None

    def describe(self) -> str:
        if self.index is None:
            return f"{self.statistic} never reached its edge value {self.edge:g}: no checkpoint picked"
        text = (f"epoch {self.epoch:.4g} (step {self.step}), where {self.statistic} first reached {self.edge:g} "
                f"({self.value:.4g})")
        if math.isfinite(self.excess_loss):
            text += f"; its test loss is {100 * self.excess_loss:.2f}% above the best checkpoint's"
        return text


def _layer_statistic(tr: Trace, rule: str) -> tuple[str, np.ndarray, float]:
    stat, _, layer = rule.partition(":")
    if layer not in tr.layers:
        raise ConfigError(f"pick rule {rule!r}: the trace records no layer {layer!r}; it has: {', '.join(tr.layers)}.")
    stats = tr.stats(layer)
    name = "s_mean" if stat == "s" else stat
    if name not in stats:
        raise ConfigError(f"pick rule {rule!r}: layer {layer!r} has no statistic {stat!r}; it has: {', '.join(stats)}.")
    values = tr.stat(layer, name).astype(float)
    if name == "J":  # its edge: J_c of the layer's mean-field activation (1 for tanh, √2 for ReLU)
        info = tr.layer_info(layer)
        act = str(info.get("meanfield_activation") or "tanh")
        return f"J of {layer}", values, critical_coupling(act if act in ("tanh", "relu") else "tanh")
    if name not in _LAYER_EDGES:
        raise ConfigError(f"pick rule {rule!r}: {stat!r} has no edge value; use one of J, "
                          f"{', '.join(sorted(_LAYER_EDGES))} (or s for s_mean).")
    return f"{stat} of {layer}", values, _LAYER_EDGES[name]


def pick_checkpoint(trace: Union[str, Path, Trace], rule: str = "auto") -> CheckpointPick:
    """The label-free pick of one run: the first checkpoint where the rule's statistic reaches its edge value.

    Measured error (the atlas's runs of 2026-12-06, docs: Results → Atlas; the pick against the
    best-test-loss checkpoint). ``chi`` on the canonical network (one run, 100 epochs): epoch 53 against the
    best at 33, a test loss 5.7% above the best. ``s_model`` on EOC-optimality's MLP (two seeds): 2 and 1
    epochs before the best, 0.9% and 3.4% above it; on its CNN (one seed, 10 epochs, a checkpoint every half
    epoch): the best checkpoint itself (epoch 4). Over the three runs the mean excess is 1.4% (95% interval
    −3.0% to +5.9%: about five runs would settle it). On the ViT, MLP-Mixer, ResMLP, ConvNeXt and ResNet-18
    runs no statistic picked a checkpoint within 5% of the best in every run: χ of their FC maps mostly never
    reaches 1, and the depth-wise gain crosses 1 in the first epoch or two, 30 or more epochs before the best.
    There, use a validation split (``dataset.validation``) instead.

    Args:
        trace: a trace, its ``trace.h5`` or its run directory.
        rule: ``auto`` (the model family's default, :data:`AUTO_RULES`: ``s_model`` on EOC-optimality's MLP
            and CNN, ``chi`` otherwise), a short name of
            :data:`PICK_RULES` (``chi``: the median χ of the FC maps below the head; ``gain``: the median
            depth-wise block gain; ...), one of the atlas's full statistic names, or ``<stat>:<layer>`` for
            one recorded layer statistic (``J:hidden`` against J_c, ``chi:hidden``, ``s:hidden``,
            ``gain_rms:block:blocks.3``, ``lambda_max:...`` against 0).

    Raises:
        ConfigError: an unknown rule, or one the trace has nothing to read for (naming what it has).
        TraceError: no trace, or no checkpoint.
    """
    from stabilityscope.analysis.atlas import first_crossing, pick_statistics, read_run  # its module reads verdicts

    path = Path(trace.path if isinstance(trace, Trace) else trace)
    path = path / "trace.h5" if path.is_dir() else path
    run = read_run(path)
    if run is None:
        raise TraceError(f"{path} holds no checkpoint yet; there is nothing to pick.")
    asked = str(rule)
    if asked == "auto":
        rule = AUTO_RULES.get(run.family, "chi")
    with open_trace(path) as tr:
        steps, epochs = tr.steps, tr.epoch_fraction
        if ":" in rule and rule not in PICK_RULES.values():
            name, values, edge = _layer_statistic(tr, rule)
        else:
            full = PICK_RULES.get(rule, rule)
            candidates = pick_statistics(run)
            if full not in candidates:
                known = [k for k, v in PICK_RULES.items() if v in candidates]
                raise ConfigError(f"pick rule {asked!r} ({full}) has nothing to read in {path}; this run offers: "
                                  f"{', '.join(known) or 'none of the atlas statistics'}, or <stat>:<layer> with a "
                                  f"layer of {', '.join(tr.layers)}.")
            name, (values, edge) = full, candidates[full]
    values = np.asarray(values, dtype=float)
    t = first_crossing(values, edge)
    loss = run.test_loss
    best = int(np.nanargmin(loss)) if np.isfinite(loss).any() else None
    excess = (float(loss[t] / loss[best] - 1) if t is not None and best is not None and np.isfinite(loss[t])
              else math.nan)
    if t is None:
        return CheckpointPick(asked, name, float(edge), None, math.nan, -1, math.nan, best, math.nan)
    return CheckpointPick(asked, name, float(edge), int(t), float(epochs[t]), int(steps[t]), float(values[t]), best,
                          excess)


def pick_rule_names() -> list[str]:
    """Every short rule name (``auto`` first)."""
    return ["auto", *PICK_RULES]
