"""The EdgeController on real training: which groups it sets, the trace it leaves, and resumes that change nothing.

A controlled run stopped at a checkpoint (Ctrl-C), or killed while a checkpoint was being written (after its
controller rows, before its commit marker), and resumed must end with the weights, decays and trace of an
uninterrupted run, bit for bit (the same process, the same threads): through the app's hand-written step with
checkpoints beside training, through autograd, and through a Recorder in a plain loop.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import stabilityscope as ss
from stabilityscope.config import (
    AnalysisConfig,
    Config,
    ControlConfig,
    DatasetConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.recording.trace import TraceWriter
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import Run, build_optimizer, load_state


def controlled_config(data_root: Path, epochs: int = 4, **train: object) -> Config:
    """A seconds-long controlled canonical run: 500 examples (16 steps per epoch), an update every 5 steps, a
    target just above the initial J² so that the decay moves."""
    return Config(dataset=DatasetConfig(root=str(data_root), train_subset=500, test_subset=100),
                  optim=OptimConfig(lr=0.3),
                  train=TrainConfig(epochs=epochs, control="edge", **train),
                  control=ControlConfig(statistic="J2", every=5, target=0.255),
                  analysis=AnalysisConfig(maps=False, eigen=False, n_inputs=8), figures=False, report=False)


def assert_same_run(a: Path, b: Path, model_a: torch.nn.Module, model_b: torch.nn.Module) -> None:
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with ss.open_trace(a) as ta, ss.open_trace(b) as tb:
        assert ta.steps.tolist() == tb.steps.tolist()
        np.testing.assert_array_equal(ta.metric("test_loss"), tb.metric("test_loss"))
        ca, cb = ta.control, tb.control
        assert len(ca) > 0
        np.testing.assert_array_equal(ca.step, cb.step)
        np.testing.assert_array_equal(ca.statistic, cb.statistic)
        np.testing.assert_array_equal(ca.weight_decay, cb.weight_decay)


# --------------------------------------------------------------------------------------------- the groups
def test_it_sets_the_decay_of_the_group_holding_the_maps_and_no_other(data_root):
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(), (1, 28, 28), 10)
    opt = build_optimizer(model, OptimConfig(weight_decay=3e-4))  # matrices in group 0, biases in group 1
    ctl = ss.EdgeController(model, opt, ControlConfig(statistic="chi", decay_init=1e-4), steps_per_epoch=10)
    assert ctl.maps == ["hidden"] and ctl.group_index == [0] and ctl.group_maps == [[0]]
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(1e-4) and opt.param_groups[1]["weight_decay"] == 0
    # groups of one's own: one loop per group, each over its maps
    opt = torch.optim.AdamW([{"params": [model.hidden.weight]}, {"params": [model.head.weight]},
                             {"params": [model.head.bias], "weight_decay": 0.0}], lr=1e-3)
    ctl = ss.EdgeController(model, opt, ControlConfig(statistic="J2", layers="hidden|head"), steps_per_epoch=10)
    assert ctl.group_index == [0, 1] and ctl.group_maps == [[0], [1]]
    action = ctl.update(10)
    assert action.statistic.shape == (2,) and action.weight_decay.shape == (2,)
    assert [g["weight_decay"] for g in opt.param_groups] == [*action.weight_decay.tolist(), 0.0]
    # J² of the hidden layer at init is 0.25 (below the edge 1): its decay steps down, to the bound at most
    assert action.error[0] == pytest.approx(math.log(action.statistic[0]))


def test_bad_set_ups_are_refused_with_what_to_do():
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(), (1, 28, 28), 10)
    other = torch.optim.SGD(torch.nn.Linear(3, 3).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="no parameter group of the optimiser holds the weights of 'hidden'"):
        ss.EdgeController(model, other, steps_per_epoch=10)
    with pytest.raises(ConfigError, match="steps_per_epoch=0 must be a positive integer"):
        ss.EdgeController(model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=0)
    with pytest.raises(ConfigError, match="control.decay_init=2.0: within"):
        ControlConfig(decay_init=2.0)
    with pytest.raises(ConfigError, match="control.layers='\\(': a regular expression"):
        ControlConfig(layers="(")


def test_step_acts_every_every_steps_and_state_dict_continues_it_exactly():
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(width=64), (1, 28, 28), 10)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    weights0 = {k: v.clone() for k, v in model.state_dict().items()}

    def train(steps, ctl, opt):
        acted = []
        for i in range(steps):
            opt.zero_grad()
            batch = slice(i % 4 * 16, (i % 4 + 1) * 16)
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
            if ctl.step() is not None:
                acted.append(ctl.steps_taken)
        return acted

    options = ControlConfig(statistic="J2", every=3, target=0.2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    ctl = ss.EdgeController(model, opt, options, steps_per_epoch=4)
    assert train(10, ctl, opt) == [3, 6, 9]
    saved = copy.deepcopy((ctl.state_dict(), model.state_dict(), opt.state_dict()))
    train(10, ctl, opt)
    whole = (ctl.decays.copy(), {k: v.clone() for k, v in model.state_dict().items()})
    # again from the saved state, in a new controller and optimiser
    model.load_state_dict(saved[1])
    opt2 = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    opt2.load_state_dict(saved[2])
    ctl2 = ss.EdgeController(model, opt2, options, steps_per_epoch=4)
    ctl2.load_state_dict(saved[0])
    assert ctl2.steps_taken == 10 and train(10, ctl2, opt2) == [12, 15, 18]
    np.testing.assert_array_equal(ctl2.decays, whole[0])
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, whole[1][k], rtol=0, atol=0)
    assert any(not torch.equal(weights0[k], v) for k, v in model.state_dict().items())


# -------------------------------------------------------------------------------------- the app's runs
@pytest.mark.parametrize("fast_step", [True, False], ids=["hand-written step, checkpoints beside", "autograd"])
def test_a_controlled_run_stopped_and_resumed_is_the_uninterrupted_run(tmp_path, data_root, monkeypatch, fast_step):
    cfg = controlled_config(data_root, fast_step=fast_step)
    whole = Run(cfg, tmp_path / "whole")
    assert whole.execute() == "finished"
    original = Run.checkpoint

    def stop_after_epoch_2(self, run, perm=None, generator=None):
        numbers = original(self, run, perm, generator)
        if run.epoch == 2:
            raise KeyboardInterrupt
        return numbers

    monkeypatch.setattr(Run, "checkpoint", stop_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        Run(cfg, tmp_path / "cut").execute()
    monkeypatch.setattr(Run, "checkpoint", original)
    state = load_state(tmp_path / "cut", 2, torch.device("cpu"))
    assert state["control"]["last_update"] == 30  # 32 steps: the last update at a multiple of 5 is step 30
    with ss.open_trace(tmp_path / "cut") as tr:
        assert tr.control.step.tolist() == [5, 10, 15, 20, 25, 30]
    resumed = Run(cfg, tmp_path / "cut")
    assert resumed.execute(resume=True) == "finished"
    assert_same_run(tmp_path / "whole", tmp_path / "cut", whole.model, resumed.model)
    with ss.open_trace(tmp_path / "whole") as tr:
        c = tr.control
        assert c.step.tolist() == list(range(5, 65, 5)) and c.maps == ["hidden"] and c.statistic_name == "J2"
        # the decay was stepped by the law: it moved, within its bounds, by at most max_step per update
        steps = np.diff(np.log(np.concatenate([[1e-6], c.weight_decay[:, 0]])))
        assert np.abs(steps).max() <= 0.5 + 1e-12 and np.ptp(c.weight_decay) > 0
        assert c.law["every"] == 5 and c.law["steps_per_epoch"] == 16
        # the updates at checkpoint steps read what the checkpoint recorded: J² of the same weights
        at = {int(s): i for i, s in enumerate(c.step)}
        for k, s in enumerate(tr.steps):
            if int(s) in at:
                assert c.statistic[at[int(s)], 0] == pytest.approx(float(tr.stat("hidden", "J")[k]) ** 2, rel=1e-12)


def test_a_run_killed_while_writing_a_checkpoint_drops_its_controller_rows_and_resumes(tmp_path, data_root,
                                                                                        monkeypatch):
    cfg = controlled_config(data_root)
    whole = Run(cfg, tmp_path / "whole")
    assert whole.execute() == "finished"
    real_append = TraceWriter.append

    def fail_at_checkpoint_3(self, **row):
        if self.num_checkpoints == 3:  # its controller rows are in the file already; its marker never comes
            raise OSError(28, "No space left on device")
        return real_append(self, **row)

    monkeypatch.setattr(TraceWriter, "append", fail_at_checkpoint_3)
    with pytest.raises(OSError, match="No space left"):
        Run(cfg, tmp_path / "cut").execute()
    monkeypatch.setattr(TraceWriter, "append", real_append)
    with ss.open_trace(tmp_path / "cut") as tr:
        assert tr.steps.tolist() == [0, 16, 32] and tr.control.step.tolist() == [5, 10, 15, 20, 25, 30]
    resumed = Run(cfg, tmp_path / "cut")
    assert resumed.execute(resume=True) == "finished"
    assert_same_run(tmp_path / "whole", tmp_path / "cut", whole.model, resumed.model)


def test_resuming_an_uncontrolled_run_with_control_is_refused(tmp_path, data_root):
    cfg = controlled_config(data_root, epochs=1)
    plain = Config(**{**cfg.__dict__, "train": TrainConfig(epochs=1)})
    assert Run(plain, tmp_path / "run").execute() == "finished"
    with pytest.raises(TraceError, match="records no controller"):
        Run(Config(**{**cfg.__dict__, "train": TrainConfig(epochs=2, control="edge")}), tmp_path / "run")


@pytest.mark.slow
def test_the_controller_holds_j2_near_its_target_where_the_uncontrolled_run_runs_off(tmp_path, data_root):
    # lr 0.3, momentum 0.5, 2,000 examples: uncontrolled, J² leaves 0.25 for ≈ 2 in the first epoch and keeps growing
    def run(control: str, name: str) -> np.ndarray:
        cfg = Config(dataset=DatasetConfig(root=str(data_root), train_subset=2000, test_subset=100),
                     optim=OptimConfig(lr=0.3, momentum=0.5), train=TrainConfig(epochs=8, control=control),
                     control=ControlConfig(statistic="J2", every=8, target=0.27),
                     analysis=AnalysisConfig(maps=False, eigen=False, n_inputs=8), figures=False, report=False)
        assert Run(cfg, tmp_path / name).execute() == "finished"
        with ss.open_trace(tmp_path / name) as tr:
            return tr.stat("hidden", "J") ** 2

    free, held = run("none", "free"), run("edge", "held")
    assert free[-1] > 10 * 0.27  # uncontrolled: ten times the target and still growing
    assert free[-1] > free[-2] > free[-3]
    # from epoch 4 on within a factor e^0.5 of the target (seen: within e^±0.23; at this lr J² moves ±30% between
    # updates, and another thread count rounds differently)
    assert np.all(np.abs(np.log(held[4:] / 0.27)) < 0.5)


# -------------------------------------------------------------------------------------------- a plain loop
def plain_loop(run_dir: Path, data, epochs: int, stop_at: int | None = None) -> tuple[torch.nn.Module, float]:
    """A user's loop: model, SGD, an EdgeController and a Recorder; its own state file per epoch."""
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(width=128), (1, 28, 28), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    saved = run_dir / "mine.pt"
    start = 0
    if saved.exists():
        state = torch.load(saved, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"]
    ctl = ss.EdgeController(model, opt, ControlConfig(statistic="J2", every=4, target=0.26), steps_per_epoch=10)
    options = AnalysisConfig(maps=False, eigen=False)
    with ss.Recorder(model, run_dir, probe_inputs=data.x_test[:8], options=options) as rec:
        rec.attach_controller(ctl)  # a continued run: the controller's state comes back from state/recorder.pt
        assert ctl.steps_taken == 10 * start
        if start == 0:
            rec.checkpoint(0)
        for epoch in range(start + 1, epochs + 1):
            g = torch.Generator().manual_seed(epoch)
            perm = torch.randperm(320, generator=g)
            for b in range(10):
                idx = perm[32 * b:32 * (b + 1)]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
                opt.step()
                ctl.step()
            rec.checkpoint(epoch, metrics={"test_loss": 1.0 / epoch})
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, saved)
            if epoch == stop_at:
                raise KeyboardInterrupt
    return model, float(ctl.decays[0])


def test_a_plain_loop_with_a_recorder_records_every_update_and_resumes_exactly(tmp_path, data_root):
    data = load_dataset("fashion_mnist", str(data_root), train_subset=320, test_subset=8)
    whole, decay = plain_loop(tmp_path / "whole", data, 4)
    with pytest.raises(KeyboardInterrupt):
        plain_loop(tmp_path / "cut", data, 4, stop_at=2)
    with ss.open_trace(tmp_path / "cut") as tr:
        assert tr.status == "interrupted" and tr.control.step.tolist() == [4, 8, 12, 16, 20]
    resumed, decay2 = plain_loop(tmp_path / "cut", data, 4)
    assert decay2 == decay
    assert_same_run(tmp_path / "whole", tmp_path / "cut", whole, resumed)
    with ss.open_trace(tmp_path / "whole") as tr:
        assert tr.steps.tolist() == [0, 10, 20, 30, 40]  # the Recorder took the controller's count of steps
        assert tr.control.step.tolist() == list(range(4, 41, 4))


def test_a_controller_attached_to_a_trace_made_without_one_is_refused(tmp_path, data_root):
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(width=32), (1, 28, 28), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ss.Recorder(model, tmp_path, options=AnalysisConfig(maps=False)) as rec:
        rec.checkpoint(0, metrics={"test_loss": 1.0})
        with pytest.raises(TraceError, match="was created without a controller: attach it before the first"):
            rec.attach_controller(ss.EdgeController(model, opt, steps_per_epoch=5))


# ------------------------------------------------------------------------------ the command line, figure, report
def test_the_app_trains_a_controlled_run_and_its_report_shows_the_controller(tmp_path, data_root):
    from tests.conftest import run_cli

    proc = run_cli("experiment=debug", "dataset.train_subset=500", "dataset.test_subset=100", "analysis=economy",
                   "train.epochs=2", "train.control=edge", "control.statistic=J2", "control.every=4",
                   "control.target=0.26", "optim.lr=0.3", "phase_background.enabled=false", "pick=J:hidden",
                   f"checkpoint_root={tmp_path}", cwd=tmp_path, env={"STABILITYSCOPE_DATA": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p.parent for p in tmp_path.glob("*/*/trace.h5")]
    with ss.open_trace(run_dir) as tr:
        assert tr.control.step.tolist() == list(range(4, 33, 4)) and tr.config["train"]["control"] == "edge"
    report = (run_dir / "report.md").read_text()
    assert "### Weight decay held at the edge" in report and "every 4 steps (8 updates)" in report
    assert "| label-free pick (rule `J:hidden`" in report
    assert (run_dir / "figures" / "control.png").exists() and "figures/control.png" in report
