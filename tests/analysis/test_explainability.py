"""SGD-complexity over training: step schedules, predictions in the trace, the baseline L, μ per checkpoint."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import stabilityscope as ss
from stabilityscope.config import CheckpointSchedule, Config, as_options, validate
from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.recording.trace import EXPLAINABILITY_METRICS
from stabilityscope.training.schedule import checkpoint_steps
from stabilityscope.training.trainer import Run, evaluate, load_state, saved_state_keys

SMALL = {"dataset": {"train_subset": 600, "test_subset": 300}, "model": {"width": 32},
         "analysis": {"maps": False, "chains": False, "eigen": False, "weight_structure": False, "n_inputs": 4},
         "figures": False, "report": False}


def small_config(data_root, **sections) -> Config:
    """A seconds-long run of the canonical network on Fashion-MNIST subsets (600 train: 19 steps of 32)."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in SMALL.items()}
    raw["dataset"]["root"] = str(data_root)
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value) if isinstance(value, dict) else raw.__setitem__(key, value)
    cfg = as_options(raw, Config)
    validate(cfg)
    return cfg


# -- schedules ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule, expected", [
    (CheckpointSchedule(unit="step", kind="every", every=10), [0, 10, 20, 30, 38]),
    (CheckpointSchedule(unit="step", kind="list", steps=[3, 7, 99]), [0, 3, 7, 38]),
    (CheckpointSchedule(unit="step", kind="log", num=4), [0, 1, 3, 11, 38]),
    (CheckpointSchedule(unit="epoch", kind="every", every=1), [0, 19, 38]),
])
def test_checkpoint_steps_count_steps_or_whole_epochs(schedule, expected):
    # 600 examples in batches of 32: 19 steps per epoch, 2 epochs = 38 steps
    assert checkpoint_steps(as_options(schedule, CheckpointSchedule), 2, 600, 32) == expected


def test_a_list_of_steps_needs_the_step_unit():  # the schedule's options refuse it when built
    with pytest.raises(ConfigError, match="train.checkpoints.steps.*unit=step"):
        as_options({"train": {"checkpoints": {"kind": "list", "steps": [5]}}}, Config)
    with pytest.raises(ConfigError, match="train.checkpoints.steps"):
        as_options({"train": {"checkpoints": {"unit": "step", "kind": "list", "epochs": [5]}}}, Config)


# -- a step-scheduled run with explainability ------------------------------------------------------------
@pytest.fixture(scope="module")
def explained_run(tmp_path_factory, data_root):
    cfg = small_config(data_root, train={"epochs": 2, "checkpoints": {"unit": "step", "kind": "list",
                                                                       "steps": [1, 2, 4, 8, 25]}},
                       analysis={"explainability": True, "explainability_boot": 100})
    run_dir = tmp_path_factory.mktemp("explained") / "run"
    run = Run(cfg, run_dir)
    assert run.execute() == "finished"
    return cfg, run_dir, run


def test_a_step_schedule_records_steps_and_fractional_epochs(explained_run):
    cfg, run_dir, run = explained_run
    with ss.open_trace(run_dir) as tr:
        assert tr.schema_version == 2
        assert tr.steps.tolist() == [0, 1, 2, 4, 8, 25, 38]  # the start and the end are always checkpoints
        assert tr.checkpoints.tolist() == [0, 0, 0, 0, 0, 1, 2]  # whole epochs done at each checkpoint
        np.testing.assert_allclose(tr.epoch_fraction, tr.steps / 19)
        np.testing.assert_allclose(tr.position("step"), tr.steps)
        assert tr.step_schedule
    assert saved_state_keys(run_dir, "step") == [25, 38]  # keep_states = 2, named by step


def test_the_trace_stores_every_checkpoints_test_predictions(explained_run):
    cfg, run_dir, run = explained_run
    _, acc, predicted = evaluate(run.model, run.data.x_test, run.data.y_test, predictions=True)
    with ss.open_trace(run_dir) as tr:
        pred = tr.predictions
        assert pred.shape == (7, 300) and pred.dtype == np.int8  # compact: 10 classes fit in int8
        assert np.array_equal(tr.test_labels, run.data.y_test.numpy())
        assert np.array_equal(pred[-1], predicted.numpy())  # the final model's classes
        np.testing.assert_allclose((pred == tr.test_labels).mean(1), tr.metric("test_acc"), atol=1e-12)


def test_recorded_measures_equal_a_recomputation_from_the_stored_predictions(explained_run):
    cfg, run_dir, run = explained_run
    with ss.open_trace(run_dir) as tr:
        base = tr.baseline
        y, pred = tr.test_labels, tr.predictions
        assert base["converged"] and base["warning"] == ""
        assert base["test_acc"] == pytest.approx((base["test_predictions"] == y).mean())
        assert base["info_L_Y"] == pytest.approx(ss.explainability.mutual_information(base["test_predictions"], y))
        for t in (0, 3, len(pred) - 1):
            pc = ss.explainability.performance_correlation(pred[t], base["test_predictions"], y, num_classes=10)
            assert tr.metric("info_F_Y")[t] == pytest.approx(pc.i_fy, abs=1e-12)
            assert tr.metric("info_F_Y_given_L")[t] == pytest.approx(pc.i_fy_given_l, abs=1e-12)
            assert tr.metric("mu_F_L")[t] == pytest.approx(pc.mu, abs=1e-12)
            lo, hi = tr.metric("mu_F_L_low")[t], tr.metric("mu_F_L_high")[t]
            assert lo <= hi  # a bootstrap interval (it need not contain the plug-in value)
        # the table computed from the predictions alone (what a trace without the metrics gets) agrees
        table = ss.explainability.explainability_table(tr)
        np.testing.assert_allclose(table["mu_F_L"], tr.metric("mu_F_L"))
    assert (run_dir / "baseline.pt").exists()


def test_the_complexity_matrix_matches_pairwise_information(explained_run):
    _, run_dir, _ = explained_run
    m = ss.explainability.complexity_matrix(run_dir)
    with ss.open_trace(run_dir) as tr:
        pred, y = tr.predictions, tr.test_labels
    n = len(pred)
    assert m.mu.shape == (n, n)
    # μ_Y(F_t; F_t) = I(F_t; Y): conditioning on itself leaves nothing
    np.testing.assert_allclose(np.diag(m.mu), m.info, atol=1e-12)
    for t, s in ((6, 2), (3, 5), (5, 0)):  # against the independent two-variable functions
        i_fy = ss.explainability.mutual_information(pred[t], y, num_classes=10)
        i_fy_s = ss.explainability.conditional_mutual_information(pred[t], y, pred[s], num_classes=10)
        assert m.mu[t, s] == pytest.approx(i_fy - i_fy_s, abs=1e-12)
    assert np.isnan(m.explained_by_earlier()[2, 5]) and np.isfinite(m.explained_by_earlier()[5, 2])


def test_linear_phase_end_reads_the_ratio(explained_run):
    _, run_dir, _ = explained_run
    table = ss.explainability.explainability_table(run_dir)
    end = ss.explainability.linear_phase_end(run_dir, threshold=0.9)
    ratio = table["mu_F_L"] / table["info_F_Y"]
    steps = table["step"]
    # the checkpoints read: trained (step > 0) and with at least a tenth of L's information
    valid = (steps > 0) & (table["info_F_Y"] >= 0.1 * table["info_L_Y"])
    assert np.array_equal(ss.explainability.considered(table), valid)
    if end is not None:  # every valid checkpoint up to `end` has ratio >= 0.9, the next valid one less
        upto = valid & (steps <= end)
        assert (ratio[upto] >= 0.9).all()
        after = valid & (steps > end)
        assert not after.any() or ratio[np.flatnonzero(after)[0]] < 0.9
    summary = ss.explainability.explainability_summary(run_dir)
    assert summary["gap_F_L"] == pytest.approx(table["info_F_Y"][-1] - table["info_L_Y"])
    assert summary["max_share"] == pytest.approx(ratio[valid].max())
    # an always-explained case: with threshold -inf every valid checkpoint counts
    assert ss.explainability.linear_phase_end(run_dir, threshold=-np.inf) == int(steps[valid][-1])
    # and a never-explained one
    assert ss.explainability.linear_phase_end(run_dir, threshold=np.inf) is None


def test_a_run_resumed_inside_an_epoch_continues_as_if_never_stopped(tmp_path, data_root, monkeypatch):
    cfg = small_config(data_root, train={"epochs": 2, "checkpoints": {"unit": "step", "kind": "list",
                                                                       "steps": [7, 30]}})
    whole = Run(cfg, tmp_path / "whole")
    assert whole.execute() == "finished"

    original = Run.checkpoint

    def stop_after_step_7(self, run, perm=None, generator=None):
        numbers = original(self, run, perm, generator)
        if run.step == 7:
            raise KeyboardInterrupt
        return numbers

    monkeypatch.setattr(Run, "checkpoint", stop_after_step_7)
    with pytest.raises(KeyboardInterrupt):
        Run(cfg, tmp_path / "cut").execute()
    monkeypatch.setattr(Run, "checkpoint", original)
    state = load_state(tmp_path / "cut", 7, torch.device("cpu"), "step")
    assert state["epoch"] == 0 and state["step"] == 7 and "perm" in state  # the epoch's permutation is kept
    resumed = Run(cfg, tmp_path / "cut")
    assert resumed.execute(resume=True) == "finished"
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with ss.open_trace(tmp_path / "whole") as tw, ss.open_trace(tmp_path / "cut") as tc:
        assert tc.steps.tolist() == tw.steps.tolist() == [0, 7, 30, 38]
        np.testing.assert_array_equal(tc.predictions, tw.predictions)
        np.testing.assert_array_equal(tc.metric("test_loss"), tw.metric("test_loss"))


# -- version 1 traces and bad input ----------------------------------------------------------------------
def test_a_version_1_trace_still_reads(explained_run, tmp_path):
    import shutil

    _, run_dir, _ = explained_run
    old = tmp_path / "v1.h5"
    shutil.copy(run_dir / "trace.h5", old)
    with h5py.File(old, "r+") as f:  # what a version-1 writer left: no epoch_fraction, predictions, baseline
        for key in ("checkpoints/epoch_fraction", "predictions", "baseline"):
            del f[key]
        f.attrs["schema_version"] = 1
    with ss.open_trace(old) as tr:
        assert tr.schema_version == 1
        np.testing.assert_array_equal(tr.epoch_fraction, tr.checkpoints.astype(float))
        assert tr.baseline is None and not tr.has_predictions
        with pytest.raises(TraceError, match="version-1 trace"):
            tr.predictions
        with pytest.raises(TraceError, match="no linear baseline"):
            ss.explainability.explainability_table(tr)
        assert len(tr.metric("test_loss")) == len(tr)


def test_explainability_needs_class_outputs(data_root):
    from stabilityscope.training.data import load_dataset
    from stabilityscope.training.trainer import check_explainable

    data = load_dataset("fashion_mnist", data_root, train_subset=10, test_subset=10)
    with pytest.raises(ConfigError, match=r"class outputs \(B, 10\).*shape \(2, 3\)"):
        check_explainable(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3)), data)
    regression = type(data)(data.name, data.x_train, data.y_train.float(), data.x_test, data.y_test.float(), 0,
                            data.input_shape)
    with pytest.raises(ConfigError, match="needs a classification dataset"):
        check_explainable(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), regression)


def test_a_baseline_that_does_not_converge_is_recorded_as_such(tmp_path, data_root):
    cfg = small_config(data_root, train={"epochs": 1}, analysis={"explainability": True, "baseline_max_iter": 2,
                                                                  "explainability_boot": 0})
    assert Run(cfg, tmp_path / "run").execute() == "finished"
    with ss.open_trace(tmp_path / "run") as tr:
        base = tr.baseline
        assert not base["converged"] and "did not converge" in base["warning"] and base["iterations"] <= 2
        assert np.isnan(tr.metric("mu_F_L_low")).all()  # no bootstrap asked for


def test_the_recorder_checks_prediction_lengths(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    labels = np.array([0, 1, 2, 1, 0])
    with ss.Recorder(model, tmp_path / "r", explainability=ss.ExplainabilityInputs(labels)) as rec:
        rec.checkpoint(0, step=0, metrics={"test_acc": 0.2}, predictions=np.array([0, 1, 2, 2, 0]))
        with pytest.raises(ConfigError, match=r"shape \(4,\) but there are 5 test labels"):
            rec.checkpoint(1, step=1, metrics={"test_acc": 0.2}, predictions=np.array([0, 1, 2, 2]))
        rec.checkpoint(1, step=1, metrics={"test_acc": 0.4})  # none given: recorded as -1
    with ss.open_trace(tmp_path / "r") as tr:
        assert tr.predictions.tolist() == [[0, 1, 2, 2, 0], [-1] * 5]
    with pytest.raises(ValueError, match="lengths f_pred 3, l_pred 2, y 3"):
        ss.explainability.performance_correlation([0, 1, 1], [0, 1], [0, 1, 0])


def test_the_metric_names_are_the_documented_ones():
    assert EXPLAINABILITY_METRICS == ("info_F_Y", "info_F_Y_low", "info_F_Y_high", "info_F_Y_given_L", "mu_F_L",
                                      "mu_F_L_low", "mu_F_L_high")


@pytest.mark.slow
def test_the_cifar10_quick_preset_runs_through_the_app(tmp_path, data_root):
    """experiment=sgd_complexity_cifar10_quick: binarised CIFAR-10 (vehicles = 1), the small CNN, step checkpoints."""
    from tests.conftest import run_cli

    done = run_cli("experiment=sgd_complexity_cifar10_quick", f"dataset.root={data_root}",
                   f"checkpoint_root={tmp_path}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (trace,) = tmp_path.glob("sgd_cnn-cifar10/*/trace.h5")
    with ss.open_trace(trace) as tr:
        assert tr.status == "finished" and tr.num_classes == 2
        assert set(np.unique(tr.test_labels)) == {0, 1} and (tr.test_labels == 1).mean() == pytest.approx(0.4, abs=0.03)
        assert tr.steps[-1] == 2 * 16 and len(tr) >= 8  # 1,000 images / 64 = 16 steps per epoch
        assert {"dense", "head"} <= set(tr.layers)
        base = tr.baseline
        assert 0.5 < base["test_acc"] < 1 and 0 < base["info_L_Y"] < 1  # a binary task: at most 1 bit
        assert np.isfinite(tr.metric("mu_F_L")).all()


def test_the_figures_show_the_recorded_numbers(explained_run):
    from stabilityscope import figures

    _, run_dir, _ = explained_run
    table = ss.explainability.explainability_table(run_dir)
    fig = figures.plot_explainability(run_dir)
    left, right = fig.axes[:2]
    np.testing.assert_allclose(left.lines[0].get_ydata(), table["info_F_Y"])  # I(F_t;Y) against ...
    np.testing.assert_allclose(left.lines[0].get_xdata(), table["step"])  # ... the step (a step schedule)
    np.testing.assert_allclose(left.lines[1].get_ydata(), table["mu_F_L"])
    assert left.get_xscale() == "symlog" and f"{table['info_L_Y']:.3f} bits" in " ".join(
        t.get_text() for t in fig.legends[0].get_texts())
    read = ss.explainability.considered(table)
    np.testing.assert_allclose(right.lines[0].get_ydata(), (table["mu_F_L"] / table["info_F_Y"])[read])
    heat = np.ma.filled(figures.plot_complexity_matrix(run_dir).axes[0].images[0].get_array(), np.nan)
    m = ss.explainability.complexity_matrix(run_dir)
    assert np.isnan(heat[0]).all()  # the initialisation's row is blank
    last = len(m.steps) - 1
    np.testing.assert_allclose(heat[last], m.mu[last] / m.info[last])
    assert heat[last, last] == pytest.approx(1.0)
