"""pick_checkpoint: the label-free pick on synthetic traces whose crossing is known, and in task=report.

The synthetic canonical trace (tests/trace_factory.py) has J² = 0.25 + 0.05·epoch in its hidden layer, so
J reaches 1 at epoch 15 exactly, and its test loss is a parabola with its minimum at ``best_epoch``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import stabilityscope as ss
from stabilityscope.errors import ConfigError
from stabilityscope.reports.run import write_report
from stabilityscope.theory.meanfield import order_parameters
from tests.trace_factory import synthetic_trace


@pytest.fixture
def trace(tmp_path):
    return synthetic_trace(tmp_path / "run" / "trace.h5", epochs=30, best_epoch=12)


def test_j_of_a_layer_picks_the_checkpoint_where_it_reaches_the_edge(trace):
    p = ss.pick_checkpoint(trace, rule="J:hidden")
    assert p.picked and p.index == 15 and p.epoch == 15 and p.value == pytest.approx(1.0)
    assert p.edge == 1.0 and p.statistic == "J of hidden"
    assert p.best_index == 12
    assert p.excess_loss == pytest.approx((0.4 + 0.002 * 3 ** 2) / 0.4 - 1)  # the parabola at 15 against its minimum
    assert "epoch 15" in p.describe() and "above the best checkpoint's" in p.describe()


def test_auto_on_the_canonical_network_is_chi_of_its_hidden_layer_against_1(trace):
    e = np.arange(31, dtype=float)
    _, _, chi = order_parameters(-0.02 + 0.001 * e, np.sqrt(0.25 + 0.05 * e))  # the trace's hidden layer
    expected = int(np.flatnonzero(chi >= 1)[0])
    for rule in ("auto", "chi", "χ, median over the trunk's FC layers", "chi:hidden"):
        p = ss.pick_checkpoint(trace, rule=rule)
        assert p.index == expected and p.edge == 1.0 and p.value == pytest.approx(chi[expected], rel=1e-9), rule
    assert ss.pick_checkpoint(trace).rule == "auto"
    assert ss.pick_checkpoint(trace).statistic == "χ, median over the trunk's FC layers"


@pytest.mark.parametrize("model", ["eoc_mlp", "eoc_cnn"])
def test_auto_on_eoc_optimalitys_models_is_s_of_their_iterated_model_map(tmp_path, model):
    from tests.analysis.test_atlas import atlas_trace, parabola

    path = atlas_trace(tmp_path / "eoc" / "trace.h5", model=model, seed=0, loss=parabola(6),
                       gain=lambda t, i: 1.0, chi=lambda t, i: 0.2,
                       model_map=lambda t: (0.5 + 0.1 * t, math.log(0.5 + 0.1 * t), "periodic", 1.0, 1.0))
    p = ss.pick_checkpoint(path)
    assert p.statistic == "s of the iterated model map" and p.index == 5 and p.value == pytest.approx(1.0)
    assert p.best_index == 6 and ss.pick_checkpoint(path, rule="s_model").index == 5


def test_a_statistic_that_never_reaches_its_edge_picks_nothing(tmp_path):
    path = synthetic_trace(tmp_path / "slow" / "trace.h5", epochs=10, j2_slope=0.01)
    p = ss.pick_checkpoint(path, rule="J:hidden")
    assert not p.picked and p.index is None and math.isnan(p.epoch) and math.isnan(p.excess_loss)
    assert "never reached its edge value 1" in p.describe()


def test_unknown_rules_say_what_the_run_offers(trace):
    with pytest.raises(ConfigError, match="has nothing to read.*this run offers: chi, chi_head"):
        ss.pick_checkpoint(trace, rule="gain")
    with pytest.raises(ConfigError, match="records no layer 'nope'; it has: head, hidden"):
        ss.pick_checkpoint(trace, rule="J:nope")
    with pytest.raises(ConfigError, match="has no edge value"):
        ss.pick_checkpoint(trace, rule="J0:hidden")


def test_the_report_states_the_pick(trace, tmp_path):
    text = write_report(trace, tmp_path / "report", figures=False, pick="J:hidden").read_text()
    assert "| label-free pick (rule `J:hidden`: J of hidden reaches 1) | epoch 15 (step" in text
    text = write_report(trace, tmp_path / "report2", figures=False, pick="gain").read_text()
    assert "| label-free pick (rule `gain`) | none: pick rule 'gain'" in text
    assert "label-free pick" not in write_report(trace, tmp_path / "r3", figures=False, pick=None).read_text()
