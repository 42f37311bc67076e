"""The atlas: order and chaos of modern vision networks over training, family by family.

``python -m stabilityscope task=atlas runs=[<run dirs or globs>]`` (or :func:`atlas`) reads traces
recorded with ``analysis=atlas`` (the ``atlas_<family>`` presets; the seed models' runs with
``analysis.depthwise=true`` join as reference rows) and computes, per family (the model name):

- **depth profiles**: per trunk block, at initialisation, at the best test loss and at the end of
  training, each reading averaged over the family's runs: J and χ of the FC layers inside the block
  (median), the depth-wise RMS gain of the block's scale-free Jacobian, s and λ_max of the iterated
  chains (MLP branches) and of the iterated block where the map is defined (orbits labelled divergent,
  drifting or near-identity are left out: they are neither chaos nor the edge), and the head's J, χ;
- **maps over training**: every reading per checkpoint on one log scale (ln s; √χ for an FC layer,
  whose mean-field χ is s² for a random matrix), with the best checkpoint and the test loss;
- **EOC-optimality's three claims**, with the verdict rules of the reproduction report
  (:mod:`stabilityscope.analysis.reproduction`, :mod:`stabilityscope.analysis.verdicts`): s at the best
  test loss near 1 (for each block, the deepest block, the median over blocks, the iterated maps),
  λ_max ≈ ln s over the checkpoints the attractor classifier calls chaotic (and its depth-wise
  analogue, the trunk's top depth exponent against the blocks' mean log-gain), and the attractor
  sequence (the best checkpoint at the boundary of (quasi-)periodic and chaotic maps);
- **a label-free checkpoint pick**: for each candidate edge statistic, the first checkpoint where it
  crosses its edge value (χ = 1, gain = 1, s = 1, λ = 0), against the best-test-loss checkpoint: the
  error in epochs and the excess test loss, per run and across all runs.

Everything is a function of the traces; :mod:`stabilityscope.reports.atlas` writes it down and
:mod:`stabilityscope.plots.atlas` draws it.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from stabilityscope.analysis.collection import Source, find_traces, flatten_config, natural_key
from stabilityscope.analysis.reproduction import RULES
from stabilityscope.analysis.stats import origin_slope
from stabilityscope.analysis.verdicts import Margin, Verdict, judge, judge_fraction, judge_mean
from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import Trace, open_trace

__all__ = ["Atlas", "AtlasRun", "Pick", "Reading", "UNDEFINED", "atlas", "family_of", "PICK_MARGIN"]

UNDEFINED = ("divergent", "drifting", "near_identity")  # attractor labels of maps that are neither chaos nor edge
FC_KINDS = ("linear", "qkv_view", "conv1x1")
# A label-free pick is near-best when its test loss is within 5% of the best: about the spread of the best
# test loss between seeds of one recipe here, and less than the gap between neighbouring recipes.
PICK_MARGIN = Margin(-math.inf, 0.05, "the picked checkpoint's test loss within 5% of the best one's")
_FAMILIES = (("vit", "ViT"), ("deit", "ViT"), ("mixer", "MLP-Mixer"), ("resmlp", "ResMLP"), ("convnext", "ConvNeXt"),
             ("resnet", "ResNet"), ("eoc_mlp", "EOC-optimality MLP"), ("eoc_cnn", "EOC-optimality CNN"),
             ("fmnist_fc", "canonical MLP"))
REFERENCE_MODELS = ("eoc_mlp", "eoc_cnn", "fmnist_fc")  # the seed models: the atlas's reference rows


@contextlib.contextmanager
def _all_nan_is_nan():
    """NaN-aware reductions of slices with no finite value give NaN without a RuntimeWarning: a map undefined at
    every checkpoint of a stage is a result here (left out), not an accident."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def family_of(model_name: str) -> str:
    """The family a model name belongs to (ViT, MLP-Mixer, ...; the name itself when unknown)."""
    low = model_name.lower()
    return next((label for key, label in _FAMILIES if low.startswith(key)), model_name)


@dataclass
class Reading:
    """One reading of one map over a run's checkpoints (C,).

    ``s`` is the reading on the s scale (the edge is 1): s of an iterated map, the RMS gain of a block,
    √χ of an FC layer; NaN where the map is undefined (``defined`` False: its orbit was labelled
    divergent, drifting or near-identity).
    """

    name: str  # e.g. "block:blocks.3 (depth-wise)", "blocks.3.mlp (iterated)", "blocks.3.mlp.fc1"
    layer: str  # the trace layer it comes from
    kind: str  # fc, chain, block_gain, block_map, model_map
    block: int  # trunk block index (-1 before the trunk, n_blocks for the head)
    s: np.ndarray
    lam: np.ndarray  # λ_max (iterated maps) or ln gain (depth-wise); NaN for FC layers
    attractor: Optional[np.ndarray] = None  # labels per checkpoint (iterated maps)
    J: Optional[np.ndarray] = None  # FC layers
    chi: Optional[np.ndarray] = None

    @property
    def defined(self) -> np.ndarray:
        if self.attractor is None:
            return np.isfinite(self.s)
        return ~np.isin(self.attractor, UNDEFINED) & np.isfinite(self.s)


@dataclass
class AtlasRun:
    """One atlas run: its family, model and seed, its checkpoints' epochs and test loss, its trunk blocks."""

    path: str
    family: str
    model: str
    seed: Any
    reference: bool
    epochs: np.ndarray  # (C,) fractional epochs of the checkpoints
    test_loss: np.ndarray  # (C,)
    blocks: list[str]  # the trunk's block records, in order
    readings: list[Reading]
    depth_lambda: np.ndarray  # (C,) the trunk's top depth exponent (NaN without depth-wise readings)
    wall_hours: float
    # the model map's scale-free gain at its start states and at its orbits' ends (seed models with
    # analysis.depthwise), beside its s: where the depth-wise reading and EOC-optimality's s are compared
    map_gains: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def best(self) -> int:
        return int(np.nanargmin(self.test_loss))

    def of_kind(self, kind: str) -> list[Reading]:
        """The readings of one kind in the order of the forward pass (trunk index, the head last; the trace lists
        them by name, and a ConvNeXt stage's downsample sorts after the blocks it runs before)."""
        return sorted((r for r in self.readings if r.kind == kind), key=lambda r: r.block)


@dataclass
class Pick:
    """A statistic's label-free pick in one run."""

    statistic: str
    run: str
    family: str
    checkpoint: Optional[int]  # None: the statistic never crossed its edge value
    best: int
    epoch_error: float  # epochs of the pick − epochs of the best (NaN without a pick)
    excess_loss: float  # test loss at the pick / best test loss − 1


@dataclass
class Atlas:
    """The atlas of a set of runs: per-family depth profiles, EOC-optimality's claims with verdicts, label-free
    picks."""

    runs: list[AtlasRun]
    profiles: dict[str, dict[str, dict[str, np.ndarray]]]  # family → reading → stage → (L,) per block
    claims: list[dict[str, Any]]  # one row per (family, claim, map): the verdict and its numbers
    picks: list[Pick]
    pick_table: list[dict[str, Any]]  # one row per statistic, across runs
    notes: list[str] = field(default_factory=list)
    correspondence: list[dict[str, Any]] = field(default_factory=list)  # s against the depth-wise readings (seeds)

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(r.family for r in self.runs))


# ---------------------------------------------------------------------------------------------- reading


def _block_of(layer: str, blocks: Sequence[tuple[str, str]], head: bool) -> int:
    """Trunk index of a layer: the block whose first module prefixes its name; heads after the trunk."""
    if head:
        return len(blocks)
    for i, (_, module) in enumerate(blocks):
        if layer == module or layer.startswith(module + "."):
            return i
    return -1


def _trunk_order(tr: Trace, blocks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The trunk's blocks (record name, module) in the order of the forward pass.

    The trace lists records by name; the trunk's depth record spans the blocks' modules in forward order
    (traces written since that record held it). Older traces fall back to the names' natural order, right for
    ``blocks.0`` … ``blocks.11`` and ResNet's ``layer1.0`` …, wrong where a name does not follow the forward
    pass (a ConvNeXt stage's ``downsample`` runs before its ``blocks``).
    """
    span: list[str] = []
    for layer in tr.layers:
        info = tr.layer_info(layer)
        if info.get("kind") == "depth" and info.get("span") is not None:
            span = [str(m) for m in np.atleast_1d(info["span"])]
    if span and all(module in span for _, module in blocks):
        return sorted(blocks, key=lambda b: span.index(b[1]))
    return sorted(blocks, key=lambda b: natural_key(b[1] or b[0]))


def read_run(path: Path) -> Optional[AtlasRun]:
    """The atlas's view of one trace (None when it has no checkpoint)."""
    with open_trace(path) as tr:
        if len(tr) == 0:
            return None
        flat = flatten_config(tr.config or {})
        model = str(flat.get("model.name", path.parent.name))
        blocks = _trunk_order(tr, [(layer, str(tr.layer_info(layer).get("module", ""))) for layer in tr.layers
                                   if tr.layer_info(layer).get("kind") == "block"])
        readings: list[Reading] = []
        map_gains: dict[str, np.ndarray] = {}
        depth = np.full(len(tr), np.nan)
        for layer in tr.layers:
            info = tr.layer_info(layer)
            kind, stats = str(info.get("kind", "linear")), set(tr.stats(layer))
            block = _block_of(layer, blocks, info.get("role") == "head")
            att = np.asarray([str(a) for a in tr.stat(layer, "attractor")]) if "attractor" in stats else None
            if kind == "depth":
                depth = tr.stat(layer, "depth_lambda_max").astype(float)
            elif kind in FC_KINDS:
                J = tr.stat(layer, "J").astype(float)
                chi = tr.stat(layer, "chi").astype(float) if "chi" in stats else None
                s = np.sqrt(chi) if chi is not None else np.full(len(tr), np.nan)
                readings.append(Reading(layer, layer, "fc", block, s, np.full(len(tr), np.nan), None, J, chi))
                if "s_mean" in stats:  # a square FC layer iterated as φ(Wx + b)
                    readings.append(Reading(f"{layer} (iterated)", layer, "fc_map", block,
                                            tr.stat(layer, "s_mean").astype(float),
                                            tr.stat(layer, "lambda_max").astype(float), att))
            elif kind == "block":
                index = next(i for i, (name, _) in enumerate(blocks) if name == layer)
                g = tr.stat(layer, "gain_rms").astype(float)
                readings.append(Reading(f"{layer} (depth-wise)", layer, "block_gain", index, g, np.log(g)))
                if "s_mean" in stats:
                    readings.append(Reading(f"{layer} (iterated)", layer, "block_map", index,
                                            tr.stat(layer, "s_mean").astype(float),
                                            tr.stat(layer, "lambda_max").astype(float), att))
            if kind == "model_map" and "gain_rms_input" in stats:
                map_gains = {k: tr.stat(layer, k).astype(float) for k in ("gain_rms_input", "gain_rms_attractor")}
            if kind in ("chain", "model_map") and "s_mean" in stats:
                readings.append(Reading(f"{layer} (iterated)", layer, "chain" if kind == "chain" else "model_map",
                                        block if kind == "chain" else len(blocks),
                                        tr.stat(layer, "s_mean").astype(float),
                                        tr.stat(layer, "lambda_max").astype(float), att))
        wall = tr.wall_time.astype(float)
        return AtlasRun(str(path), family_of(model), model, flat.get("train.seed"), model in REFERENCE_MODELS,
                        tr.epoch_fraction.astype(float), tr.metric("test_loss").astype(float),
                        [name for name, _ in blocks], readings, depth,
                        float(wall[-1]) / 3600 if len(wall) else math.nan, map_gains)


# ---------------------------------------------------------------------------------------------- profiles


STAGES = ("init", "best", "end")
PROFILE_READINGS = ("J (FC, median)", "χ (FC, median)", "gain (depth-wise)", "s (iterated chain)",
                    "s (iterated block)", "λ_max (iterated chain)", "λ_max (iterated block)", "ln gain (depth-wise)")


def _profile(run: AtlasRun, t: int) -> dict[str, np.ndarray]:
    """Each profile reading per trunk block at checkpoint ``t``, (L + 1,) with the head last (NaN where none)."""
    n = len(run.blocks) + 1
    out = {name: np.full(n, np.nan) for name in PROFILE_READINGS}
    for i in range(n):
        here = [r for r in run.readings if r.block == i]
        fc = [r for r in here if r.kind == "fc"]
        if fc:
            with _all_nan_is_nan():
                out["J (FC, median)"][i] = np.nanmedian([r.J[t] for r in fc])
                if all(r.chi is not None for r in fc):
                    out["χ (FC, median)"][i] = np.nanmedian([r.chi[t] for r in fc])
        for kind, s_key, l_key in (("chain", "s (iterated chain)", "λ_max (iterated chain)"),
                                   ("block_map", "s (iterated block)", "λ_max (iterated block)"),
                                   ("block_gain", "gain (depth-wise)", "ln gain (depth-wise)")):
            maps = [r for r in here if r.kind == kind and r.defined[t]]
            if maps:
                out[s_key][i] = float(np.median([r.s[t] for r in maps]))
                out[l_key][i] = float(np.median([r.lam[t] for r in maps]))
    return out


def depth_profiles(runs: Sequence[AtlasRun]) -> dict[str, dict[str, np.ndarray]]:
    """Reading → stage → (L + 1,): the family's mean over runs at init, best and end (runs of equal depth)."""
    stages: dict[str, dict[str, list[np.ndarray]]] = {}
    for run in runs:
        for stage, t in zip(STAGES, (0, run.best, len(run.epochs) - 1)):
            for name, values in _profile(run, t).items():
                stages.setdefault(name, {}).setdefault(stage, []).append(values)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, by_stage in stages.items():
        for stage, rows in by_stage.items():
            if len({len(r) for r in rows}) == 1:
                with _all_nan_is_nan():
                    out.setdefault(name, {})[stage] = np.nanmean(np.vstack(rows), axis=0)
    return out


# ---------------------------------------------------------------------------------------------- claims


def _median_defined(readings: Sequence[Reading], t: int) -> float:
    vals = [r.s[t] for r in readings if r.defined[t]]
    return float(np.median(vals)) if vals else math.nan


def _optimum_values(run: AtlasRun) -> dict[str, float]:
    """The s-scale readings at the run's best checkpoint, by map."""
    b = run.best
    gains = run.of_kind("block_gain")
    out: dict[str, float] = {}
    if gains:
        with _all_nan_is_nan():
            out["depth-wise gain, median over blocks"] = float(np.nanmedian([r.s[b] for r in gains]))
        out["depth-wise gain, deepest block"] = float(gains[-1].s[b])
        for i, r in enumerate(gains):
            out[f"depth-wise gain, block {i}"] = float(r.s[b])
    for kind, label in (("chain", "iterated chains, median s"), ("block_map", "iterated blocks, median s"),
                        ("fc_map", "iterated square FC layers, median s"), ("model_map", "iterated model map, s")):
        maps = run.of_kind(kind)
        if maps:
            out[label] = _median_defined(maps, b)
    return out


def _claim_row(family: str, claim: str, rule: str, map_name: str, verdict: Verdict, detail: str = "") -> dict[str, Any]:
    return {"family": family, "claim": claim, "rule": rule, "map": map_name, "verdict": verdict.verdict,
            "estimate": verdict.estimate, "interval": list(verdict.interval), "n": verdict.n, "unit": verdict.unit,
            "needed": verdict.needed, "margin": verdict.margin.describe(), "text": verdict.describe(),
            "detail": detail}


def family_claims(family: str, runs: Sequence[AtlasRun], confidence: float = 0.95,
                  power: float = 0.8) -> list[dict[str, Any]]:
    """EOC-optimality's three claims on one family's runs (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    # 1. the best test loss near s = 1, map by map: one value per run
    rule = "optimum near s = 1"
    values: dict[str, list[float]] = {}
    for run in runs:
        for name, v in _optimum_values(run).items():
            values.setdefault(name, []).append(v)
    for name, vals in values.items():
        finite = [v for v in vals if math.isfinite(v)]
        v = judge_mean(finite, RULES[rule].margin(), confidence=confidence, power=power, unit="runs")
        left = len(vals) - len(finite)
        rows.append(_claim_row(family, "the best test loss lies near s = 1", rule, name, v,
                               f"{left} run(s) without a defined value at the best checkpoint" if left else ""))
    # 2. λ_max ≈ ln s over chaotic checkpoints, per kind of iterated map; and the depth-wise analogue
    rule = "lambda_max = ln s"
    for kind, label in (("chain", "iterated chains"), ("block_map", "iterated blocks"),
                        ("fc_map", "iterated square FC layers"), ("model_map", "iterated model map")):
        maps = [r for run in runs for r in run.of_kind(kind)]
        if not maps:
            continue
        pairs = [(r.lam[t], math.log(r.s[t])) for r in maps for t in range(len(r.s))
                 if r.attractor is not None and r.attractor[t] == "chaotic" and r.s[t] > 0]
        undefined = sum(int(np.isin(r.attractor, UNDEFINED).sum()) for r in maps if r.attractor is not None)
        detail = (f"{len(pairs)} chaotic checkpoints of {sum(len(r.s) for r in maps)} map-checkpoints; "
                  f"{undefined} labelled divergent, drifting or near-identity are left out")
        if len(pairs) >= 2:
            lam, ln_s = (np.asarray(v, float) for v in zip(*pairs))
            k, lo, hi = origin_slope(ln_s, lam, confidence)
            v = judge(k, (lo, hi), RULES[rule].margin(), len(lam), confidence=confidence, power=power, params=1,
                      unit="chaotic checkpoints")
            rows.append(_claim_row(family, "λ_max ≈ ln s in the chaotic regime", rule, label, v, detail))
        else:
            rows.append({"family": family, "claim": "λ_max ≈ ln s in the chaotic regime", "rule": rule, "map": label,
                         "verdict": "not run", "estimate": math.nan, "interval": [math.nan, math.nan],
                         "n": len(pairs), "unit": "chaotic checkpoints", "needed": None,
                         "margin": RULES[rule].margin().describe(), "text": "fewer than two chaotic checkpoints",
                         "detail": detail})
    gains = [(run, run.of_kind("block_gain")) for run in runs]
    xs, ys = [], []
    for run, gs in gains:
        if gs and np.isfinite(run.depth_lambda).any():
            with _all_nan_is_nan():
                mean_log = np.nanmean(np.vstack([np.log(r.s) for r in gs]), axis=0)
            ok = np.isfinite(mean_log) & np.isfinite(run.depth_lambda)
            xs += list(mean_log[ok])
            ys += list(run.depth_lambda[ok])
    if len(xs) >= 2:
        k, lo, hi = origin_slope(np.asarray(xs), np.asarray(ys), confidence)
        v = judge(k, (lo, hi), RULES[rule].margin(), len(xs), confidence=confidence, power=power, params=1,
                  unit="checkpoints")
        rows.append(_claim_row(family, "λ_max ≈ ln s through depth (depth exponent λ₁ against the blocks' mean "
                               "ln gain)", rule, "trunk, depth-wise", v, f"{len(xs)} checkpoints, all of them"))
    # 3. the attractor sequence: the best checkpoint at the boundary of (quasi-)periodic and chaotic maps
    rule = "attractor sequence"
    for kind, label in (("chain", "iterated chains"), ("block_map", "iterated blocks"),
                        ("fc_map", "iterated square FC layers"), ("model_map", "iterated model map")):
        maps = [(run, r) for run in runs for r in run.of_kind(kind) if r.attractor is not None]
        if not maps:
            continue
        hits = sum(at_boundary(r.attractor, run.best) for run, r in maps)
        undefined = sum(int(r.attractor[run.best] in UNDEFINED) for run, r in maps)
        v = judge_fraction(hits, len(maps), RULES[rule].margin(), confidence=confidence, power=power)
        rows.append(_claim_row(family, "the best test loss sits at the boundary of (quasi-)periodic and chaotic "
                               "maps", rule, label, v,
                               f"{hits} of {len(maps)} maps; at the best checkpoint {undefined} of them are "
                               f"divergent, drifting or near-identity"))
    return rows


def at_boundary(attractor: np.ndarray, best: int) -> bool:
    """The reproduction report's boundary rule: the best checkpoint periodic or quasi-periodic with a chaotic
    checkpoint within two, or chaotic with a periodic or quasi-periodic one among the two before it."""
    ordered = ("periodic", "quasi_periodic")
    if attractor[best] in ordered:
        return "chaotic" in attractor[max(0, best - 2): best + 3]
    return attractor[best] == "chaotic" and any(a in ordered for a in attractor[max(0, best - 2): best])


def correspondence(run: AtlasRun) -> list[dict[str, Any]]:
    """Where EOC-optimality's s (of the iterated model map, at its orbits' ends) and the depth-wise readings
    coincide, on a seed model's run: per reading, over the checkpoints where both are defined, the median
    |ln(reading/s)| and the rank correlation with s."""
    from scipy.stats import spearmanr

    maps = run.of_kind("model_map")
    if not maps:
        return []
    s = np.where(maps[0].defined, maps[0].s, np.nan)
    gains = run.of_kind("block_gain")
    candidates = {"gain of the map at its orbits' ends": run.map_gains.get("gain_rms_attractor"),
                  "gain of the map at the test inputs": run.map_gains.get("gain_rms_input")}
    if gains:
        with _all_nan_is_nan():
            layer_gains = np.vstack([r.s for r in gains])  # (layers, checkpoints)
            candidates["depth-wise gain, median over the map's layers"] = np.nanmedian(layer_gains, 0)
            candidates["depth-wise gain, product over the map's layers"] = np.exp(np.nansum(np.log(layer_gains), 0))
    rows = []
    for name, values in candidates.items():
        if values is None:
            continue
        ok = np.isfinite(s) & np.isfinite(values) & (s > 0) & (values > 0)
        if ok.sum() < 3:
            continue
        constant = np.ptp(s[ok]) == 0 or np.ptp(values[ok]) == 0  # no ranking to correlate
        rho = math.nan if constant else float(spearmanr(s[ok], values[ok]).statistic)
        rows.append({"run": run.path, "family": run.family, "reading": name, "checkpoints": int(ok.sum()),
                     "median_abs_log_ratio": float(np.median(np.abs(np.log(values[ok] / s[ok])))),
                     "rank_correlation": rho})
    return rows


# ---------------------------------------------------------------------------------------------- picks


def pick_statistics(run: AtlasRun) -> dict[str, tuple[np.ndarray, float]]:
    """Candidate label-free statistics of one run: name → (value per checkpoint (C,), edge value)."""
    out: dict[str, tuple[np.ndarray, float]] = {}
    fc = run.of_kind("fc")
    with _all_nan_is_nan():
        if fc and all(r.chi is not None for r in fc):
            body = [r for r in fc if 0 <= r.block < len(run.blocks)] or [r for r in fc if r.block != len(run.blocks)]
            if body:
                out["χ, median over the trunk's FC layers"] = (np.nanmedian(np.vstack([r.chi for r in body]), 0), 1.0)
            head = [r for r in fc if r.block == len(run.blocks)]
            if head:
                out["χ of the head"] = (head[-1].chi, 1.0)
        gains = run.of_kind("block_gain")
        if gains:
            g = np.vstack([r.s for r in gains])
            out["gain, median over blocks (depth-wise)"] = (np.nanmedian(g, 0), 1.0)
            out["gain of the deepest block (depth-wise)"] = (g[-1], 1.0)
        if np.isfinite(run.depth_lambda).any():
            out["depth exponent λ₁ of the trunk"] = (run.depth_lambda, 0.0)
        for kind, label in (("chain", "s, median over iterated chains"), ("model_map", "s of the iterated model map")):
            maps = run.of_kind(kind)
            if maps:
                s = np.vstack([np.where(r.defined, r.s, np.nan) for r in maps])
                out[label] = (np.nanmedian(s, 0), 1.0)
    return out


def first_crossing(values: np.ndarray, edge: float) -> Optional[int]:
    """The first checkpoint at which ``values`` has crossed ``edge`` (reached it, or passed to its other side)
    from where it started; None when it never does."""
    finite = np.flatnonzero(np.isfinite(values))
    if len(finite) < 2:
        return None
    start = np.sign(values[finite[0]] - edge)
    if start == 0:
        return int(finite[0])
    for t in finite[1:]:
        if np.sign(values[t] - edge) != start:
            return int(t)
    return None


def label_free_picks(runs: Sequence[AtlasRun]) -> list[Pick]:
    picks = []
    for run in runs:
        b = run.best
        for name, (values, edge) in pick_statistics(run).items():
            t = first_crossing(values, edge)
            err = math.nan if t is None else float(run.epochs[t] - run.epochs[b])
            excess = math.nan if t is None else float(run.test_loss[t] / run.test_loss[b] - 1)
            picks.append(Pick(name, run.path, run.family, t, b, err, excess))
    return picks


def pick_table(picks: Sequence[Pick], runs: Sequence[AtlasRun], confidence: float = 0.95,
               power: float = 0.8) -> list[dict[str, Any]]:
    """Per statistic across runs: how often it picks, its epoch error and excess test loss, and whether its
    picks are near-best (the excess loss's interval inside :data:`PICK_MARGIN`)."""
    length = {r.path: float(r.epochs[-1] - r.epochs[0]) or 1.0 for r in runs}
    rows = []
    for name in dict.fromkeys(p.statistic for p in picks):
        mine = [p for p in picks if p.statistic == name]
        got = [p for p in mine if p.checkpoint is not None]
        excess = [p.excess_loss for p in got]
        v = judge_mean(excess, PICK_MARGIN, confidence=confidence, power=power, unit="runs")
        verdict, text = v.verdict, v.describe()
        if not got:  # a statistic that never reaches its edge picks nothing: it fails the claim outright
            verdict, text = "not reproduced", f"never crosses its edge value in any of the {len(mine)} runs"
        elif len(got) < len(mine):
            text += f"; it never crosses its edge value in {len(mine) - len(got)} of the {len(mine)} runs"
        rows.append({
            "statistic": name, "runs": len(mine), "picked": len(got), "families": sorted({p.family for p in mine}),
            "median_abs_epoch_error": float(np.median([abs(p.epoch_error) for p in got])) if got else math.nan,
            "median_relative_epoch_error": float(np.median([abs(p.epoch_error) / length[p.run] for p in got]))
            if got else math.nan,
            "mean_excess_loss": v.estimate, "excess_interval": list(v.interval), "verdict": verdict,
            "needed": v.needed, "text": text,
            "near_best_everywhere": bool(len(got) == len(mine) and verdict == "reproduced")})
    return rows


# ---------------------------------------------------------------------------------------------- the atlas


def atlas(source: Source, *, confidence: float = 0.95, power: float = 0.8) -> Atlas:
    """Read the traces of ``source`` (dirs, globs or a list) and compute the atlas (module docstring).

    Raises:
        TraceError: ``source`` matches no trace, or none of them has a checkpoint.
    """
    runs, notes = [], []
    for path in find_traces(source):
        try:
            run = read_run(path)
        except TraceError as exc:
            notes.append(f"{path}: unreadable ({exc})")
            continue
        if run is None:
            notes.append(f"{path}: no checkpoint yet")
        elif not run.blocks:
            notes.append(f"{path}: recorded without depth-wise readings (analysis.depthwise=false); its FC maps "
                         f"still enter the profiles and picks")
            runs.append(run)
        else:
            runs.append(run)
    if not runs:
        raise TraceError(f"task=atlas: no trace with a checkpoint among {source!r}.")
    by_family: dict[str, list[AtlasRun]] = {}
    for run in runs:
        by_family.setdefault(run.family, []).append(run)
    profiles = {f: depth_profiles(rs) for f, rs in by_family.items()}
    claims = [row for f, rs in by_family.items() for row in family_claims(f, rs, confidence, power)]
    picks = label_free_picks(runs)
    for run in runs:
        if run.best == len(run.epochs) - 1:
            notes.append(f"{Path(run.path).parent.name}: the best test loss is at the last checkpoint: the run did not "
                         f"train past its best, so picks after it cannot be scored")
    return Atlas(runs, profiles, claims, picks, pick_table(picks, runs, confidence, power), notes,
                 [row for run in runs for row in correspondence(run)])

