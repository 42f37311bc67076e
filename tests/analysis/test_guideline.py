"""The guideline (stabilityscope.analysis.guideline) on the original model (a given c): the recommended settings,
fed back into the model they come from, bring J² within tolerance of the edge by the requested epoch and hold its
plateau at 1. The calibrated laws' path is tested in tests/analysis/test_calibration.py."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import stabilityscope as ss
from stabilityscope.analysis.canonical import CANONICAL_RUN
from stabilityscope.analysis.guideline import CANONICAL_A, CANONICAL_C, CANONICAL_C_EPOCH, Recommendation, recommend
from stabilityscope.analysis.scaling import analyze_sweep

SIM_RTOL = 1e-9  # ODE integration


def simulate(r: Recommendation, epochs: float, c: float | None = None) -> float:
    """J² after ``epochs`` of dJ²/d(epoch) = ρ(c − 2·wd·J²), with ρ recomputed from the recommended
    lr, momentum and batch (not taken from the recommendation)."""
    c = r.c if c is None else c
    rho = r.lr * r.n_train / ((1 - r.momentum) * r.batch_size)
    sol = solve_ivp(lambda t, y: rho * (c - 2 * r.weight_decay * y), (0.0, epochs), [r.j_init ** 2],
                    rtol=SIM_RTOL, atol=1e-12)
    return float(sol.y[0, -1])


def test_canonical_constants_are_rebuilt_from_the_packaged_run():
    """CANONICAL_A is the canonical run's slope over the ordered checkpoints of its first 50 epochs, rebuilt from the
    run's packaged series (the constant keeps 4 significant digits); C and c follow from it."""
    run = analyze_sweep(CANONICAL_RUN, n_boot=0).runs.iloc[0]
    assert (run.lr, run.momentum, run.batch_size, run.n_train, run.weight_decay) == (0.02, 0.5, 32, 60000, 0.0)
    assert run.n_fit == 51 and float(f"{run.A:.4g}") == CANONICAL_A
    assert CANONICAL_C_EPOCH == pytest.approx(CANONICAL_A * (1 - 0.5) * 32 / 0.02, rel=1e-12)  # A·(1−α)B/η
    assert CANONICAL_C == pytest.approx(CANONICAL_C_EPOCH / 60000, rel=1e-12)  # per example of the 60,000
    r = recommend(100, c=CANONICAL_C)
    assert r.weight_decay == pytest.approx(CANONICAL_C / 2) and r.keras_l2 == pytest.approx(CANONICAL_C / 4)
    assert r.weight_decay_source == "model" and r.plateau == 1.0 and r.model_plateau == pytest.approx(1.0)


@pytest.mark.parametrize("budget, n_train, c, momentum, batch, reach, tol, j_init", [
    (100, 60000, CANONICAL_C, 0.5, 32, 0.5, 0.05, 0.5),  # the canonical case
    (500, 60000, CANONICAL_C, 0.9, 128, 0.3, 0.02, 0.5),
    (20, 5000, 4e-3, 0.0, 64, 0.8, 0.1, 0.2),  # a data subset, another c
    (40, 60000, CANONICAL_C, 0.5, 32, 0.5, 0.05, 0.5),  # η would exceed max_lr: the batch is lowered
])
def test_recommended_settings_reach_the_edge_on_time_and_stay(budget, n_train, c, momentum, batch, reach, tol, j_init):
    r = recommend(budget, n_train, c=c, momentum=momentum, batch_size=batch, reach_fraction=reach, tolerance=tol,
                  j_init=j_init)
    t_reach = reach * budget
    assert r.reach_epoch == pytest.approx(t_reach)
    gap = 1 - simulate(r, t_reach)
    assert gap == pytest.approx(tol, rel=1e-6)  # just within tolerance at the requested epoch ...
    assert 1 - simulate(r, 0.9 * t_reach) > tol  # ... and not before
    assert abs(1 - simulate(r, 50 * budget)) < 1e-6  # the plateau is the edge
    assert c / (2 * r.weight_decay) == pytest.approx(1.0)
    assert r.rho == pytest.approx(r.lr * n_train / ((1 - momentum) * r.batch_size))
    assert r.predicted_A == pytest.approx(r.rho * c)
    assert r.lr <= 0.1 and r.momentum == momentum
    np.testing.assert_allclose(r.j2([0.0, t_reach]), [j_init ** 2, 1 - tol])


def test_a_batch_too_large_for_max_lr_is_halved_keeping_the_rate():
    free = recommend(40, c=CANONICAL_C, max_lr=10.0)  # no cap: batch 32 at a large lr
    capped = recommend(40, c=CANONICAL_C)
    assert free.batch_size == 32 and free.lr > 0.1
    assert capped.batch_lowered_from == 32 and capped.batch_size < 32
    assert capped.batch_size & (capped.batch_size - 1) == 0  # a power of two
    assert capped.lr <= 0.1 and 2 * capped.lr > 0.1  # the largest such batch
    assert capped.rate == pytest.approx(free.rate) and capped.rho == pytest.approx(free.rho)
    assert "lowered from 32" in capped.explain()


def test_a_measured_lambda_star_replaces_the_model():
    star = 1.2e-4
    r = recommend(200, c=CANONICAL_C, weight_decay_star=star)
    assert r.weight_decay == star and r.keras_l2 == star / 2 and r.weight_decay_source == "measured"
    assert r.model_plateau == pytest.approx(CANONICAL_C / (2 * star))
    # the measured plateau is 1: J² relaxes to it at the growth rate A = ρc (dJ²/dt = A·(1 − J²))
    A = r.lr * r.n_train / ((1 - r.momentum) * r.batch_size) * CANONICAL_C
    sol = solve_ivp(lambda t, y: A * (1 - y), (0.0, r.reach_epoch), [r.j_init ** 2], rtol=SIM_RTOL, atol=1e-12)
    assert 1 - float(sol.y[0, -1]) == pytest.approx(r.tolerance, rel=1e-6)
    assert "measured λ*" in r.explain()


def test_from_analysis_takes_c_and_lambda_star_from_a_sweep(tmp_path):
    analysis = {"combined": {"c": 2e-4}, "decay": {"weight_decay_star": 1.5e-4}}
    r = Recommendation.from_analysis(100, analysis)
    assert r.c == 2e-4 and r.weight_decay == 1.5e-4 and r.weight_decay_source == "measured"
    # a scaling sweep (c, no λ*) and a decay sweep (λ*) together; NaN means not measured
    scaling = {"combined": {"c": 3e-4}, "decay": {"weight_decay_star": None}}
    decay = {"combined": None, "decay": {"weight_decay_star": 1.4e-4}}
    r = Recommendation.from_analysis(100, scaling, decay)
    assert (r.c, r.weight_decay) == (3e-4, 1.4e-4)
    (tmp_path / "scaling.json").write_text(json.dumps(scaling))
    r = Recommendation.from_analysis(100, tmp_path)  # a task=scaling folder: c only, λ* from the model
    assert r.c == 3e-4 and r.weight_decay == pytest.approx(1.5e-4) and r.weight_decay_source == "model"
    assert Recommendation.from_analysis(100, scaling, c=1e-4).c == 1e-4  # explicit arguments win
    with pytest.raises(ValueError, match="neither a SweepAnalysis nor a scaling.json"):
        Recommendation.from_analysis(100, tmp_path / "missing")


def test_explain_and_overrides_state_the_settings():
    r = recommend(100, c=CANONICAL_C)
    text = r.explain()
    for piece in (f"lr {r.lr:.4g}", f"batch {r.batch_size}", f"weight decay {r.weight_decay:.4g}",
                  f"Keras L2 λ = {r.keras_l2:.4g}", "edge of chaos", "EOC-training", f"epoch {r.reach_epoch:.1f}"):
        assert piece in text, piece
    assert r.overrides() == [f"optim.lr={r.lr:.4g}", "optim.momentum=0.5", "train.batch_size=32",
                             f"optim.weight_decay={r.weight_decay:.4g}", "train.epochs=100"]
    assert json.loads(json.dumps(r.to_dict()))["rate"] == pytest.approx(r.rate)
    assert ss.recommend is recommend and ss.Recommendation is Recommendation


@pytest.mark.parametrize("kwargs, name", [
    ({"epochs_budget": 0}, "epochs_budget=0"),
    ({"epochs_budget": -5}, "epochs_budget=-5"),
    ({"epochs_budget": math.nan}, "epochs_budget=nan"),
    ({"epochs_budget": "100"}, "epochs_budget='100'"),
    ({"n_train": 0}, "n_train=0"),
    ({"n_train": 1.5}, "n_train=1.5"),
    ({"c": 0.0}, "c=0.0"),
    ({"c": -1e-4}, "c=-0.0001"),
    ({"weight_decay_star": 0.0}, "weight_decay_star=0.0"),
    ({"j_init": 1.0}, "j_init=1.0"),
    ({"j_init": -0.1}, "j_init=-0.1"),
    ({"tolerance": 0.0}, "tolerance=0.0"),
    ({"tolerance": 1.0}, "tolerance=1.0"),
    ({"reach_fraction": 0.0}, "reach_fraction=0.0"),
    ({"reach_fraction": 1.5}, "reach_fraction=1.5"),
    ({"momentum": 1.0}, "momentum=1.0"),
    ({"momentum": -0.1}, "momentum=-0.1"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"max_lr": 0.0}, "max_lr=0.0"),
])
def test_bad_arguments_are_refused_naming_the_value(kwargs, name):
    args = {"epochs_budget": 100, **kwargs}
    with pytest.raises(ValueError, match=re.escape(name)):
        recommend(**args)


def test_a_budget_too_short_names_the_shortest_that_works():
    with pytest.raises(ValueError, match=r"Allow at least (\d+) epochs") as info:
        recommend(1, c=CANONICAL_C)
    shortest = int(info.value.args[0].split("Allow at least ")[1].split()[0])
    r = recommend(shortest, c=CANONICAL_C)  # feasible: batch 1 at most at max_lr
    assert r.batch_size >= 1 and r.lr <= 0.1
    with pytest.raises(ValueError, match="Allow at least"):
        recommend(shortest - 1, c=CANONICAL_C)
