"""Per-checkpoint layer statistics (engine issue, item 7) on networks with known phase coordinates."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from stabilityscope.config import AnalysisConfig
from stabilityscope.dynamics.lyapunov import ATTRACTORS
from stabilityscope.models.dissect import dissect
from stabilityscope.models.registry import FashionFC
from stabilityscope.recording.trace import TraceWriter, open_trace
from stabilityscope.recording.tracking import LayerTracker
from stabilityscope.theory.meanfield import PHASES


def _network(J: float, seed: int = 0) -> FashionFC:
    torch.manual_seed(seed)
    return FashionFC(784, 784, 10, "tanh", init_J=J)


def _tracker(model, **analysis) -> LayerTracker:
    a = OmegaConf.structured(AnalysisConfig(**{"n_inputs": 16, "steps": 400, **analysis}))
    probe = torch.rand(a.n_inputs, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return LayerTracker(model, dissect(model), a, probe_inputs=probe)


@pytest.mark.parametrize("J,phase,attractor,chi", [(0.5, "P", "fixed_point", 0.25), (1.5, "SG", "chaotic", 1.1393)])
def test_hidden_layer_state_matches_theory(J, phase, attractor, chi):
    model = _network(J)
    stats = _tracker(model).measure(model)["hidden"]
    assert stats["J"] == pytest.approx(J, rel=0.01) and abs(stats["J0"]) < 0.1
    assert stats["chi"] == pytest.approx(chi, rel=0.02)
    assert stats["edge_distance"] == pytest.approx(0.5 * math.log(stats["chi"]))
    assert PHASES[stats["phase"]] == phase and ATTRACTORS[stats["attractor"]] == attractor
    # s² ≈ χ for random tanh layers (EOC-optimality vs EOC-training consistency check)
    assert stats["s_mean"] == pytest.approx(math.sqrt(chi), rel=0.06)
    if attractor == "chaotic":
        assert stats["lambda_max"] > 0.02 and stats["map_steps"] == 400
        assert stats["asymptotic_distance"] > 1.0
    else:
        assert stats["asymptotic_distance"] < 1e-6 and stats["map_steps"] < 400  # collapsed early
    assert stats["spectral_radius"] == pytest.approx(J, rel=0.06)
    assert 0.9 < stats["complex_fraction"] <= 1.0 and stats["poincare"].shape == (8, 200, 2)
    assert stats["eigenvalues"].shape == (784, 2)


def test_head_gets_surrogate_coordinates_only():
    model = _network(0.5)
    tracker = _tracker(model)
    specs = tracker.layer_specs()
    assert specs["head"].attrs["surrogate"] and not specs["hidden"].attrs["surrogate"]
    # the trace says which computation gave each radius: the tracker's full decomposition, none for the head
    assert specs["hidden"].attrs["spectral_radius_method"] == "exact" and specs["head"].attrs["spectral_radius_method"] == ""
    head_stats = {s.name for s in specs["head"].stats}
    assert {"J", "J0", "chi", "phase"} <= head_stats and "s_mean" not in head_stats and "eigenvalues" not in head_stats
    stats = tracker.measure(model)["head"]
    w = model.head.weight.detach().double()
    assert stats["J"] == pytest.approx(float(w.std(correction=0) * math.sqrt(784)))


def test_step_statistics_follow_the_weights():
    model = _network(0.5)
    tracker = _tracker(model, maps=False, eigen=False)
    first = tracker.measure(model)["hidden"]
    assert math.isnan(first["step_displacement"]) and first["weight_distance"] == 0.0
    delta = torch.full_like(model.hidden.weight, 1e-3)
    for sign in (1, -1):  # +δ then −δ: increments anti-parallel, an oscillation
        with torch.no_grad():
            model.hidden.weight += sign * delta
        stats = tracker.measure(model)["hidden"]
    assert stats["step_displacement"] == pytest.approx(1e-3 * 784, rel=1e-4)  # ||δ||_F = 1e-3·sqrt(784²)
    assert stats["increment_cosine"] == pytest.approx(-1.0, abs=1e-4)
    assert stats["weight_distance"] == pytest.approx(0.0, abs=1e-5)


def test_economy_writes_no_map_statistics(tmp_path):
    model = _network(0.5)
    tracker = _tracker(model, maps=False, eigen=False)
    w = TraceWriter.create(tmp_path / "trace.h5", attrs={"config": "{}"}, layers=tracker.layer_specs())
    w.append(epoch=0, step=0, wall_time=0.0, metrics=dict.fromkeys(("train_loss", "train_acc", "test_loss", "test_acc"), 0.0),
             layer_stats=tracker.measure(model))
    w.close("finished")
    with open_trace(tmp_path / "trace.h5") as tr:
        assert "s_mean" not in tr.stats("hidden") and "chi" in tr.stats("hidden")
        assert tr.stat("hidden", "phase").tolist() == ["P"]


def test_spectrum_is_recorded_when_asked():
    model = _network(1.5)
    stats = _tracker(model, spectrum_k=4, spectrum_inputs=2, eigen=False, weight_structure=False).measure(model)["hidden"]
    spec = stats["lyapunov_spectrum"]
    assert spec.shape == (4,) and np.all(np.diff(spec) <= 1e-9) and spec[0] > 0
    assert spec[0] == pytest.approx(stats["lambda_max"], abs=0.05)
