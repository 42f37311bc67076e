"""Per-checkpoint layer statistics (engine issue, item 7) on networks with known phase coordinates."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from stabilityscope.config import AnalysisConfig
from stabilityscope.dynamics.lyapunov import ATTRACTORS
from stabilityscope.dynamics.maps import LayerMap
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
    assert specs["hidden"].attrs["spectral_radius_method"] == "exact"
    assert specs["head"].attrs["spectral_radius_method"] == ""
    head_stats = {s.name for s in specs["head"].stats}
    assert {"J", "J0", "chi", "phase"} <= head_stats and "s_mean" not in head_stats and "eigenvalues" not in head_stats
    stats = tracker.measure(model)["head"]
    w = model.head.weight.detach().double()
    assert stats["J"] == pytest.approx(float(w.std(correction=0) * math.sqrt(784)))



def test_a_one_shot_tracker_keeps_no_initial_weights_and_measures_the_same():
    # weight_distance=False (inspect's tracker): no W(0) copy, no weight_distance stat, every other
    # number as the run tracker's (J, J0 now per layer, not from a stacked copy)
    model = _network(1.5)
    full = _tracker(model, maps=False).measure(model)
    a = OmegaConf.structured(AnalysisConfig(n_inputs=16, steps=400, maps=False))
    one_shot = LayerTracker(model, dissect(model), a, weight_distance=False)
    assert one_shot.initial is None
    assert "weight_distance" not in {s.name for s in one_shot.layer_specs()["hidden"].stats}
    got = one_shot.measure(model)
    for layer in ("hidden", "head"):
        assert "weight_distance" not in got[layer] and full[layer]["weight_distance"] == 0.0
        assert got[layer]["J"] == full[layer]["J"] and got[layer]["J0"] == full[layer]["J0"]
        assert got[layer]["chi"] == full[layer]["chi"]
    w = model.hidden.weight.detach().double()
    assert got["hidden"]["J0"] == pytest.approx(float(w.mean() * 784), rel=1e-12, abs=1e-12)
    assert got["hidden"]["spectral_radius"] == full["hidden"]["spectral_radius"]


def test_holding_settled_orbits_changes_no_map_statistic(monkeypatch):
    # an ordered layer with a bias settles at a non-zero fixed point: analysis.hold_tol (default) holds it there
    # and iterates only the tangent vectors; hold_tol=None iterates everything all T steps
    torch.manual_seed(3)
    nn = torch.nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 784), nn.Tanh(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.normal_(0, 0.7 / 28)
        model[1].bias.normal_(0, 0.5)
    calls = []
    linearization = LayerMap.linearization
    monkeypatch.setattr(LayerMap, "linearization", lambda self, x: calls.append(1) or linearization(self, x))
    held = _tracker(model, eigen=False).measure(model)["1"]
    assert calls == [1]  # it was held: from then on only the tangent vectors moved
    full = _tracker(model, eigen=False, hold_tol=None).measure(model)["1"]
    assert calls == [1]
    assert ATTRACTORS[held["attractor"]] == ATTRACTORS[full["attractor"]] == "fixed_point"
    assert held["map_steps"] == full["map_steps"] == 400
    for key in ("s_mean", "lambda_max", "jacobian_product_exponent"):
        assert held[key] == pytest.approx(full[key], rel=1e-5, abs=1e-7)

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
    w.append(epoch=0, step=0, wall_time=0.0,
             metrics=dict.fromkeys(("train_loss", "train_acc", "test_loss", "test_acc"), 0.0),
             layer_stats=tracker.measure(model))
    w.close("finished")
    with open_trace(tmp_path / "trace.h5") as tr:
        assert "s_mean" not in tr.stats("hidden") and "chi" in tr.stats("hidden")
        assert tr.stat("hidden", "phase").tolist() == ["P"]


def test_spectrum_is_recorded_when_asked():
    model = _network(1.5)
    tracker = _tracker(model, spectrum_k=4, spectrum_inputs=2, eigen=False, weight_structure=False)
    stats = tracker.measure(model)["hidden"]
    spec = stats["lyapunov_spectrum"]
    assert spec.shape == (4,) and np.all(np.diff(spec) <= 1e-9) and spec[0] > 0
    assert spec[0] == pytest.approx(stats["lambda_max"], abs=0.05)
