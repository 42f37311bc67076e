"""task=atlas on synthetic traces whose answers are known: the claims' verdicts, the label-free pick, the
depth profiles, undefined maps left out; the report and its figures."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import yaml

from stabilityscope.analysis.atlas import (
    PICK_MARGIN,
    UNDEFINED,
    atlas,
    family_of,
    first_crossing,
    pick_statistics,
    read_run,
)
from stabilityscope.dynamics.lyapunov import ATTRACTORS
from stabilityscope.recording.trace import LayerSpec, StatSpec, TraceWriter
from stabilityscope.recording.tracking import BLOCK_STATS, DEPTH_STATS
from stabilityscope.reports.atlas import write_atlas

MAP = ("s_mean", "lambda_max")
Curve = Callable[[int], float]  # checkpoint index → value


def atlas_trace(path: Path, *, model: str, seed: int, loss: Callable[[np.ndarray], np.ndarray],
                gain: Callable[[int, int], float], n_blocks: int = 3, checkpoints: int = 11,
                chain: Optional[Callable[[int, int], tuple[float, float, str]]] = None,
                block_map: Optional[Callable[[int, int], tuple[float, float, str]]] = None,
                chi: Callable[[int, int], float] = lambda t, i: 0.5, depth: Curve = lambda t: 0.0,
                model_map: Optional[Callable[[int], tuple[float, float, str, float, float]]] = None,
                modules: Optional[list[str]] = None, span: bool = True) -> Path:
    """A trace as analysis=atlas writes it: per block an FC layer, optionally a chain, the block's depth-wise
    readings (``gain(t, block)``) and optionally its iterated map; the trunk's depth exponent (its span: the
    blocks' modules in forward order, unless ``span=False``, as older traces); a head. ``modules``: the blocks'
    module names in forward order (default ``blocks.<i>``)."""
    modules = modules or [f"blocks.{i}" for i in range(n_blocks)]
    path.parent.mkdir(parents=True, exist_ok=True)
    layers: dict[str, LayerSpec] = {}
    mapspec = [StatSpec("s_mean"), StatSpec("lambda_max"), StatSpec("attractor", ATTRACTORS)]
    fc = [StatSpec("J"), StatSpec("J0"), StatSpec("chi")]
    for i in range(n_blocks):
        layers[f"blocks.{i}.mlp.fc1"] = LayerSpec({"kind": "linear", "role": "mlp_in", "square": False}, fc)
        if chain:
            layers[f"blocks.{i}.mlp"] = LayerSpec({"kind": "chain", "role": "mlp_block", "module": f"blocks.{i}.mlp"},
                                                  mapspec)
        layers[f"block:{modules[i]}"] = LayerSpec({"kind": "block", "role": "block", "module": modules[i]},
                                                [StatSpec(s) for s in BLOCK_STATS] + (mapspec if block_map else []))
    layers["depth:trunk"] = LayerSpec({"kind": "depth", "role": "depth", **({"span": modules} if span else {})},
                                      [StatSpec(s) for s in DEPTH_STATS] + [StatSpec("depth_exponents", shape=(2,))])
    layers["head"] = LayerSpec({"kind": "linear", "role": "head", "square": False}, fc)
    if model_map:
        layers["map:act3"] = LayerSpec({"kind": "model_map", "role": "model_map", "module": "act3"},
                                       mapspec + [StatSpec("gain_rms_input"), StatSpec("gain_rms_attractor")])
    cfg = {"model": {"name": model}, "train": {"seed": seed}, "dataset": {"name": "cifar10"}}
    w = TraceWriter.create(path, attrs={"config": yaml.safe_dump(cfg), "seed": seed, "model": model,
                                        "dataset": "cifar10", "device": "cpu", "task": "train"}, layers=layers)
    losses = loss(np.arange(checkpoints, dtype=float))
    for t in range(checkpoints):
        stats: dict[str, dict] = {}
        for i in range(n_blocks):
            c = chi(t, i)
            stats[f"blocks.{i}.mlp.fc1"] = {"J": math.sqrt(c), "J0": 0.0, "chi": c}
            if chain:
                s, lam, att = chain(t, i)
                stats[f"blocks.{i}.mlp"] = {"s_mean": s, "lambda_max": lam, "attractor": ATTRACTORS.index(att)}
            g = gain(t, i)
            stats[f"block:{modules[i]}"] = {"gain_rms": g, "gain_rms_std": 0.0, "gain_rms_stderr": 0.0,
                                            "gain_top": 2 * g, "raw_rms": g, "branch_ratio": 0.5, "stream_ratio": 1.0}
            if block_map:
                s, lam, att = block_map(t, i)
                stats[f"block:{modules[i]}"].update(s_mean=s, lambda_max=lam, attractor=ATTRACTORS.index(att))
        stats["depth:trunk"] = {"depth_lambda_max": depth(t), "depth_lambda_max_std": 0.0,
                                "depth_exponents": np.array([depth(t), depth(t) - 1])}
        stats["head"] = {"J": 1.0, "J0": 0.0, "chi": 1.2 + 0.1 * t}  # above the edge throughout
        if model_map:
            sm, lam, att, g_in, g_att = model_map(t)
            stats["map:act3"] = {"s_mean": sm, "lambda_max": lam, "attractor": ATTRACTORS.index(att),
                                 "gain_rms_input": g_in, "gain_rms_attractor": g_att}
        w.append(epoch=t, step=10 * t, wall_time=60.0 * t, layer_stats=stats,
                 metrics={"train_loss": 1.0, "train_acc": 0.5, "test_loss": float(losses[t]), "test_acc": 0.5})
    w.close("finished")
    return path


def parabola(best: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda e: 1.0 + 0.01 * (e - best) ** 2


def claim(a, family: str, map_name: str, rule: str = "optimum near s = 1") -> dict:
    return next(c for c in a.claims if c["family"] == family and c["map"] == map_name and c["rule"] == rule)


def test_a_best_test_loss_far_from_s_1_is_not_reproduced_and_one_at_s_1_is(tmp_path):
    # family "far": at the best checkpoint (6) every block's gain is 1.6 ± 0.01 over three seeds; family "edge":
    # the gain crosses 1 exactly at the best checkpoint in every seed
    for seed in range(3):
        atlas_trace(tmp_path / f"far{seed}/trace.h5", model="vit_far", seed=seed, loss=parabola(6),
                    gain=lambda t, i, seed=seed: 1.0 + 0.1 * t + 0.01 * seed)
        atlas_trace(tmp_path / f"edge{seed}/trace.h5", model="mixer_edge", seed=seed, loss=parabola(6),
                    gain=lambda t, i, seed=seed: 1.0 + 0.05 * (t - 6) + 0.002 * (seed - 1) * (t - 6))
    a = atlas(str(tmp_path / "*"))
    assert {family_of("vit_far"), family_of("mixer_edge")} == {"ViT", "MLP-Mixer"} == set(a.families)
    far = claim(a, "ViT", "depth-wise gain, median over blocks")
    assert far["verdict"] == "not reproduced" and far["estimate"] == pytest.approx(1.61)
    edge = claim(a, "MLP-Mixer", "depth-wise gain, deepest block")
    assert edge["verdict"] == "reproduced" and edge["estimate"] == pytest.approx(1.0)
    assert edge["interval"] == pytest.approx([1.0, 1.0])


def test_the_pick_of_a_statistic_that_crosses_the_edge_at_the_best_checkpoint_is_exact(tmp_path):
    for seed in range(3):  # the gain crosses 1 at checkpoint 6, the best; χ of the FC layers crosses at 2
        atlas_trace(tmp_path / f"r{seed}/trace.h5", model="convnext_atto", seed=seed, loss=parabola(6),
                    gain=lambda t, i: 0.7 + 0.05 * t, chi=lambda t, i: 0.6 + 0.2 * t)
    a = atlas(str(tmp_path / "*"))
    table = {row["statistic"]: row for row in a.pick_table}
    exact = table["gain, median over blocks (depth-wise)"]
    assert exact["picked"] == exact["runs"] == 3 and exact["median_abs_epoch_error"] == 0.0
    assert exact["mean_excess_loss"] == 0.0 and exact["verdict"] == "reproduced" and exact["near_best_everywhere"]
    early = table["χ, median over the trunk's FC layers"]
    # crosses at checkpoint 2: four epochs early, test loss 1 + 0.01·16 = 1.16 against 1.0: 16% above the best
    assert early["median_abs_epoch_error"] == 4.0 and early["mean_excess_loss"] == pytest.approx(0.16)
    assert early["verdict"] == "not reproduced" and not early["near_best_everywhere"]
    at_once = table["depth exponent λ₁ of the trunk"]  # 0 from the start: it "reaches" the edge at checkpoint 0
    assert at_once["picked"] == 3 and at_once["median_abs_epoch_error"] == 6.0
    never = table["χ of the head"]  # 1.2 + 0.1·t: above the edge throughout, it never crosses
    assert never["picked"] == 0 and never["verdict"] == "not reproduced" and "never crosses" in never["text"]
    assert PICK_MARGIN.high == 0.05


def test_first_crossing_reads_reaching_and_passing_the_edge_and_never():
    assert first_crossing(np.array([0.5, 0.8, 1.0, 1.2]), 1.0) == 2
    assert first_crossing(np.array([1.5, 1.2, 0.9]), 1.0) == 2
    assert first_crossing(np.array([np.nan, 0.5, 0.7, 1.1]), 1.0) == 3
    assert first_crossing(np.array([0.5, 0.6, 0.7]), 1.0) is None


def test_divergent_drifting_and_near_identity_maps_are_left_out_of_s_and_lambda(tmp_path):
    # every chain diverges at every checkpoint; the block maps are near-identity at even checkpoints and
    # chaotic with λ_max = ln s exactly at odd ones
    labels = {0: "near_identity", 1: "chaotic"}
    for seed in range(2):
        atlas_trace(tmp_path / f"r{seed}/trace.h5", model="resmlp_cifar", seed=seed, loss=parabola(5),
                    gain=lambda t, i: 1.0, chain=lambda t, i: (0.3, 0.6, "divergent"),
                    block_map=lambda t, i: (1.0 + 0.1 * (t % 2) * (t + i + 1),
                                            math.log(1.0 + 0.1 * (t % 2) * (t + i + 1)), labels[t % 2]))
    a = atlas(str(tmp_path / "*"))
    chains = claim(a, "ResMLP", "iterated chains, median s")
    assert chains["verdict"] == "not run" and chains["n"] == 0
    assert "2 run(s) without a defined value" in chains["detail"]
    lam = claim(a, "ResMLP", "iterated blocks", "lambda_max = ln s")
    assert lam["verdict"] == "reproduced" and lam["estimate"] == pytest.approx(1.0)
    assert lam["n"] == 2 * 5 * 3  # odd checkpoints of 11, three blocks, two runs
    assert "36 labelled divergent, drifting or near-identity" in lam["detail"]  # 6 even checkpoints, 3 blocks, 2 runs
    chain_lam = claim(a, "ResMLP", "iterated chains", "lambda_max = ln s")
    assert chain_lam["verdict"] == "not run" and chain_lam["n"] == 0
    run = read_run(Path(tmp_path / "r0/trace.h5"))
    chain = next(r for r in run.readings if r.kind == "chain")
    assert not chain.defined.any() and set(chain.attractor) <= set(UNDEFINED)


def test_depth_profiles_hold_the_written_values_at_init_best_and_end(tmp_path):
    atlas_trace(tmp_path / "r/trace.h5", model="vit_x", seed=0, loss=parabola(4), gain=lambda t, i: 1.0 + 0.1 * i + t,
                chi=lambda t, i: 0.5 + t)
    a = atlas(str(tmp_path / "r"))
    p = a.profiles["ViT"]
    np.testing.assert_allclose(p["gain (depth-wise)"]["init"][:3], [1.0, 1.1, 1.2])
    np.testing.assert_allclose(p["gain (depth-wise)"]["best"][:3], [5.0, 5.1, 5.2])
    np.testing.assert_allclose(p["gain (depth-wise)"]["end"][:3], [11.0, 11.1, 11.2])
    np.testing.assert_allclose(p["χ (FC, median)"]["best"], [4.5, 4.5, 4.5, 1.6])  # the head's χ = 1.2 + 0.1·t last


def test_the_blocks_are_read_in_the_order_of_the_forward_pass_not_of_their_names(tmp_path):
    """A ConvNeXt stage's downsample runs before its blocks but sorts after them; twelve ViT blocks sort
    blocks.10 before blocks.2. The depth record's span gives the order; without it, the names' natural order."""
    convnext = ["stages.0.downsample", "stages.0.blocks.0", "stages.1.downsample", "stages.1.blocks.0"]
    atlas_trace(tmp_path / "c/trace.h5", model="convnext_x", seed=0, loss=parabola(4), n_blocks=4, modules=convnext,
                gain=lambda t, i: 1.0 + 0.1 * i)
    assert read_run(tmp_path / "c/trace.h5").blocks == [f"block:{m}" for m in convnext]
    a = atlas(str(tmp_path / "c"))
    np.testing.assert_allclose(a.profiles["ConvNeXt"]["gain (depth-wise)"]["init"][:4], [1.0, 1.1, 1.2, 1.3])
    # every per-block number follows that order: the deepest block is stages.1.blocks.0 (gain 1.3), not the
    # downsample that sorts last by name (1.2), in the claims and in the label-free pick's statistic alike
    optimum = {c["map"]: c["estimate"] for c in a.claims if c["claim"] == "the best test loss lies near s = 1"}
    assert optimum["depth-wise gain, deepest block"] == pytest.approx(1.3)
    assert [optimum[f"depth-wise gain, block {i}"] for i in range(4)] == pytest.approx([1.0, 1.1, 1.2, 1.3])
    values, _ = pick_statistics(read_run(tmp_path / "c/trace.h5"))["gain of the deepest block (depth-wise)"]
    np.testing.assert_allclose(values, 1.3)
    vit = [f"blocks.{i}" for i in range(12)]
    atlas_trace(tmp_path / "v/trace.h5", model="vit_x", seed=0, loss=parabola(4), n_blocks=12, span=False,
                gain=lambda t, i: 1.0 + 0.1 * i)
    assert read_run(tmp_path / "v/trace.h5").blocks == [f"block:{m}" for m in vit]


def test_the_report_writes_its_tables_json_and_figures(tmp_path):
    for seed in range(2):
        atlas_trace(tmp_path / f"runs/r{seed}/trace.h5", model="vit_x", seed=seed, loss=parabola(6),
                    gain=lambda t, i: 0.7 + 0.05 * t, chain=lambda t, i: (0.5 + 0.1 * t, math.log(0.5 + 0.1 * t),
                                                                        "chaotic" if t > 5 else "periodic"))
    a = atlas(str(tmp_path / "runs/*"))
    md = write_atlas(a, tmp_path / "out")
    text = md.read_text()
    assert "## EOC-optimality's claims per family" in text and "## A label-free checkpoint pick" in text
    assert "gain, median over blocks (depth-wise)" in text and "optimum near s = 1" in text
    doc = json.loads((tmp_path / "out/atlas.json").read_text())
    assert {c["family"] for c in doc["claims"]} == {"ViT"} and len(doc["runs"]) == 2
    pngs = sorted(p.name for p in (tmp_path / "out/figures").glob("*.png"))
    assert pngs == ["maps_vit_r0.png", "maps_vit_r1.png", "profile_vit.png"]
    seq = claim(a, "ViT", "iterated chains", "attractor sequence")  # best at 6: chaotic, periodic just before
    assert seq["estimate"] == 1.0


def test_a_run_that_never_passed_its_best_is_noted(tmp_path):
    atlas_trace(tmp_path / "r/trace.h5", model="vit_x", seed=0, loss=lambda e: 2.0 - 0.1 * e, gain=lambda t, i: 1.0)
    a = atlas(str(tmp_path / "r"))
    assert any("did not train past its best" in n for n in a.notes)


def test_the_seed_models_s_is_compared_with_the_depth_wise_readings(tmp_path):
    # the gain at the orbits' ends equals s; the gain at the inputs is s², off by ln s in log and in the same order
    atlas_trace(tmp_path / "r/trace.h5", model="eoc_mlp", seed=0, loss=parabola(5), gain=lambda t, i: 1.0,
                model_map=lambda t: (0.5 + 0.1 * t, math.log(0.5 + 0.1 * t), "chaotic" if t > 5 else "periodic",
                                     (0.5 + 0.1 * t) ** 2, 0.5 + 0.1 * t))
    a = atlas(str(tmp_path / "r"))
    rows = {c["reading"]: c for c in a.correspondence}
    end = rows["gain of the map at its orbits' ends"]
    assert end["median_abs_log_ratio"] == pytest.approx(0.0) and end["rank_correlation"] == pytest.approx(1.0)
    inputs = rows["gain of the map at the test inputs"]
    s = 0.5 + 0.1 * np.arange(11)
    assert inputs["median_abs_log_ratio"] == pytest.approx(float(np.median(np.abs(np.log(s)))))
    assert a.runs[0].reference and a.runs[0].family == "EOC-optimality MLP"
