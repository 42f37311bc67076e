"""The batched trainer: K stacked runs equal K sequential runs, member by member, trace by trace."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stabilityscope import open_trace
from stabilityscope.models.registry import FashionFC
from stabilityscope.training.batched import BatchedRuns, StackedCanonical, batching_obstacle, group_key
from stabilityscope.training.trainer import Run, build_optimizer, load_state, saved_state_keys

pytestmark = pytest.mark.slow

BASE = ("experiment=debug", "dataset.train_subset=600", "dataset.test_subset=200", "analysis=standard",
        "analysis.n_inputs=4", "analysis.steps=30", "analysis.eigen=false", "train.epochs=3", "figures=false",
        "report=false")
# lr, momentum, decay and seed all differ; the third member stops after 2 epochs with a log schedule; the
# fourth checkpoints inside epochs (a step schedule, 19 steps per epoch) and records SGD-complexity's measures
MEMBERS = (("optim.lr=0.05", "optim.momentum=0.5", "optim.weight_decay=0.0", "train.seed=0"),
           ("optim.lr=0.02", "optim.momentum=0.0", "optim.weight_decay=0.001", "train.seed=1"),
           ("optim.lr=0.1", "optim.momentum=0.9", "optim.weight_decay=0.0002", "train.seed=2", "train.epochs=2",
            "train.checkpoints.kind=log", "train.checkpoints.num=2"),
           ("optim.lr=0.05", "optim.momentum=0.9", "train.seed=3", "train.checkpoints.unit=step",
            "train.checkpoints.kind=list", "train.checkpoints.steps=[1,5,19,30,45]", "analysis.explainability=true",
            "analysis.explainability_boot=50"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory, data_root, one_thread):
    """The same three configs trained once sequentially (Run) and once as one batched group.

    On one thread: with two, the GEMM reductions' order differs between the sequential (mm) and the
    stacked (bmm) kernels by more than two epochs of SGD keep within the momentum buffers' tolerance
    (a 0.3% of entries off by up to 7e-5 was seen on a 2-core machine, before and after the layout change).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from stabilityscope.cli.app import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfgs = [compose(config_name="config", overrides=[*BASE, f"dataset.root={data_root}", *m]) for m in MEMBERS]
    GlobalHydra.instance().clear()
    root = tmp_path_factory.mktemp("batched")
    seq = [root / "seq" / str(i) for i in range(len(cfgs))]
    bat = [root / "bat" / str(i) for i in range(len(cfgs))]
    for cfg, d in zip(cfgs, seq):
        assert Run(cfg, d).execute() == "finished"
    statuses = BatchedRuns(cfgs, bat).execute()
    assert set(statuses.values()) == {"finished"}
    return cfgs, seq, bat


def test_batched_traces_equal_sequential_traces(pair):
    cfgs, seq, bat = pair
    for s, b in zip(seq, bat):
        with open_trace(s / "trace.h5") as ts, open_trace(b / "trace.h5") as tb:
            assert tb.status == "finished"
            assert ts.checkpoints.tolist() == tb.checkpoints.tolist()
            assert ts.steps.tolist() == tb.steps.tolist()
            for m in ts.metrics:
                np.testing.assert_allclose(tb.metric(m), ts.metric(m), rtol=2e-4, atol=1e-5, err_msg=m)
            assert ts.layers == tb.layers
            for layer in ts.layers:
                for stat in ("J", "J0", "chi", "spectral_radius" if "spectral_radius" in ts.stats(layer) else "J"):
                    np.testing.assert_allclose(tb.stat(layer, stat), ts.stat(layer, stat), rtol=1e-4,
                                               err_msg=f"{layer}/{stat}")
            assert tb.config == ts.config  # the trace records the member's own config
            if ts.has_predictions:
                assert (tb.predictions != ts.predictions).mean() < 0.01  # argmax flips of near-ties only
    with open_trace(bat[2] / "trace.h5") as tr:  # the short member left the stack after epoch 2
        assert tr.checkpoints.tolist() == [0, 1, 2]
    with open_trace(bat[3] / "trace.h5") as tr:  # 600 examples / batch 32 = 19 steps per epoch
        assert tr.steps.tolist() == [0, 1, 5, 19, 30, 45, 57]
        assert tr.checkpoints.tolist() == [0, 0, 0, 1, 1, 2, 3]
        np.testing.assert_allclose(tr.epoch_fraction, np.array([0, 1, 5, 19, 30, 45, 57]) / 19)
        assert tr.baseline is not None and "mu_F_L" in tr.metrics


def test_batched_states_resume_like_single_runs(pair):
    """A member's saved state has the single-run format: model, SGD momentum buffers, generators."""
    cfgs, seq, bat = pair
    for cfg, s, b in zip(cfgs, seq, bat):
        unit = cfg.train.checkpoints.unit
        assert saved_state_keys(s, unit) == saved_state_keys(b, unit)
        key = saved_state_keys(s, unit)[-1]
        ss, sb = load_state(s, key, torch.device("cpu"), unit), load_state(b, key, torch.device("cpu"), unit)
        assert ss["step"] == sb["step"]
        for k in ss["model"]:
            torch.testing.assert_close(sb["model"][k], ss["model"][k], rtol=2e-4, atol=1e-5)
        assert ss["optimizer"]["param_groups"] == sb["optimizer"]["param_groups"]
        assert ss["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
        for i, st in ss["optimizer"]["state"].items():
            torch.testing.assert_close(sb["optimizer"]["state"][i]["momentum_buffer"], st["momentum_buffer"],
                                       rtol=2e-3, atol=1e-5)
        assert torch.equal(ss["shuffle_rng"], sb["shuffle_rng"]) and torch.equal(ss["torch_rng"], sb["torch_rng"])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_one_stacked_step_equals_torch_sgd(activation, one_thread):
    """The hand-written gradient and update equal autograd + torch.optim.SGD (decay on matrices only)."""
    torch.manual_seed(0)
    hyper = [(0.05, 0.9, 1e-3), (0.01, 0.0, 0.0), (0.2, 0.5, 5e-4)]
    models = [FashionFC(12, 7, 3, activation) for _ in hyper]
    for m in models:  # non-zero head biases, so their update is tested too
        torch.nn.init.normal_(m.head.bias)
    stack = StackedCanonical(models, *zip(*hyper), device=torch.device("cpu"))
    from types import SimpleNamespace

    opts = [build_optimizer(m, SimpleNamespace(name="sgd", lr=lr, momentum=mo, weight_decay=wd)) for m, (lr, mo, wd)
            in zip(models, hyper)]
    for _ in range(3):
        x, y = torch.randn(3, 5, 12), torch.randint(0, 3, (3, 5))
        losses = stack.step(x, y)
        for k, (m, opt) in enumerate(zip(models, opts)):
            loss = torch.nn.functional.cross_entropy(m(x[k]), y[k])
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert float(losses[k]) == pytest.approx(loss.item(), rel=1e-5)
    for k, m in enumerate(models):
        torch.testing.assert_close(stack.w1[k], m.hidden.weight.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stack.w2[k], m.head.weight.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stack.b2[k, 0], m.head.bias.detach(), rtol=1e-5, atol=1e-6)


def test_a_diverging_member_leaves_the_group_and_the_others_finish(tmp_path, data_root, compose_cfg):
    cfgs = [compose_cfg(*BASE, f"dataset.root={data_root}", "train.epochs=2", "analysis=economy",
                        "model.activation=relu", f"optim.lr={lr}") for lr in (0.02, 1e10)]
    statuses = BatchedRuns(cfgs, [tmp_path / "ok", tmp_path / "bad"]).execute()
    assert statuses == {tmp_path / "ok": "finished", tmp_path / "bad": "diverged"}
    with open_trace(tmp_path / "bad" / "trace.h5") as tr:
        assert tr.status == "diverged" and "optim.lr=10000000000.0" in tr.error
        assert tr.checkpoints.tolist() == [0]  # the initialisation, nothing after the blow-up
    with open_trace(tmp_path / "ok" / "trace.h5") as tr:
        assert tr.checkpoints.tolist() == [0, 1, 2] and tr.error == ""


def test_which_runs_can_be_batched(compose_cfg):
    canonical = compose_cfg()
    assert batching_obstacle(canonical) is None
    assert batching_obstacle(compose_cfg("optim=adam")) == "optim.name=adam"
    assert batching_obstacle(compose_cfg("model=resnet18", "dataset=cifar10")) == "model resnet18"
    assert batching_obstacle(compose_cfg("dataset.augment=true")) == "dataset.augment=true"
    # lr, momentum, decay, seed and epochs may differ inside a group; the batch size may not
    assert group_key(compose_cfg("optim.lr=0.1", "optim.momentum=0.9", "optim.weight_decay=1e-4", "train.seed=3",
                                 "train.epochs=7")) == group_key(canonical)
    assert group_key(compose_cfg("train.batch_size=64")) != group_key(canonical)


def test_a_group_needs_one_batch_size(tmp_path, compose_cfg):
    from stabilityscope.errors import ConfigError

    with pytest.raises(ConfigError, match="one dataset, network shape, batch size"):
        BatchedRuns([compose_cfg(), compose_cfg("train.batch_size=64")], [tmp_path / "a", tmp_path / "b"])


def test_a_batched_member_resumes_on_its_own_like_its_single_run(pair):
    """resume=<member dir> continues a batched run with the ordinary trainer, as from a single run's state."""
    cfgs, seq, bat = pair
    cfg = cfgs[0].copy()
    cfg.train.epochs = 4  # one more epoch than the group trained
    for d in (seq[0], bat[0]):
        assert Run(cfg, d).execute(resume=True) == "finished"
    with open_trace(seq[0] / "trace.h5") as ts, open_trace(bat[0] / "trace.h5") as tb:
        assert tb.checkpoints.tolist() == ts.checkpoints.tolist() == [0, 1, 2, 3, 4]
        for m in ts.metrics:
            np.testing.assert_allclose(tb.metric(m), ts.metric(m), rtol=5e-4, atol=1e-5, err_msg=m)
        np.testing.assert_allclose(tb.stat("hidden", "J"), ts.stat("hidden", "J"), rtol=1e-4)


def test_a_batched_group_resumes_as_a_group_like_an_uninterrupted_one(tmp_path, data_root, compose_cfg, one_thread):
    """Two members trained 2 epochs, then resumed together to 4, equal the same two trained 4 epochs at once:
    weights, momentum buffers and generators come back from each member's state, so every number agrees."""
    members = [(*BASE, f"dataset.root={data_root}", "analysis=economy", *m) for m in MEMBERS[:2]]
    whole = [compose_cfg(*m, "train.epochs=4") for m in members]
    BatchedRuns(whole, [tmp_path / "whole" / str(i) for i in range(2)]).execute()
    parts = [tmp_path / "parts" / str(i) for i in range(2)]
    BatchedRuns([compose_cfg(*m, "train.epochs=2") for m in members], parts).execute()
    resumed = []
    for m, d in zip(members, parts):
        cfg = compose_cfg(*m, "train.epochs=4")
        cfg.resume = str(d)
        resumed.append(cfg)
    assert len({group_key(c) for c in resumed}) == 1 and group_key(resumed[0]) != group_key(whole[0])  # from epoch 2
    assert set(BatchedRuns(resumed, parts).execute().values()) == {"finished"}
    for i in range(2):
        with open_trace(tmp_path / "whole" / str(i) / "trace.h5") as tw, open_trace(parts[i] / "trace.h5") as tp:
            assert tp.status == "finished" and tp.checkpoints.tolist() == tw.checkpoints.tolist() == [0, 1, 2, 3, 4]
            assert tp.attrs["batch_group"] == 2
            for m in tw.metrics:
                np.testing.assert_array_equal(tp.metric(m), tw.metric(m), err_msg=m)
            np.testing.assert_array_equal(tp.stat("hidden", "J"), tw.stat("hidden", "J"))
            assert np.all(np.diff(tp.wall_time) >= 0)  # the resumed part continues the wall clock


def test_a_batched_group_refuses_members_that_continue_from_different_epochs(tmp_path, data_root, compose_cfg):
    from stabilityscope.errors import ConfigError

    dirs = [tmp_path / "a", tmp_path / "b"]
    base = (*BASE, f"dataset.root={data_root}", "analysis=economy")
    BatchedRuns([compose_cfg(*base, "train.epochs=1"), compose_cfg(*base, "train.epochs=2")], dirs).execute()
    cfgs = [compose_cfg(*base, "train.epochs=3") for _ in dirs]
    for cfg, d in zip(cfgs, dirs):
        cfg.resume = str(d)
    with pytest.raises(ConfigError, match="one starting step"):  # the group key tells them apart
        BatchedRuns(cfgs, dirs)
    # d's newest state is damaged, so its restore falls back to epoch 1 after the group was formed
    dirs = [tmp_path / "c", tmp_path / "d"]
    BatchedRuns([compose_cfg(*base, "train.epochs=2") for _ in dirs], dirs).execute()
    (dirs[1] / "state" / "epoch_000002.pt").write_bytes(b"cut short")
    for cfg, d in zip(cfgs, dirs):
        cfg.resume = str(d)
    with pytest.raises(ConfigError, match="continue from steps 19, 38"):
        BatchedRuns(cfgs, dirs).execute()
    for d, last in zip(dirs, (2, 1)):  # nothing lost: each still resumes on its own
        with open_trace(d / "trace.h5") as tr:
            assert tr.checkpoints.tolist()[-1] == last
        assert Run(cfgs[0].copy(), d).execute(resume=True) == "finished"


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_single_run_through_the_stacked_step_equals_autograd(tmp_path, data_root, one_thread, momentum):
    """train.fast_step (the default for fmnist_fc + SGD) trains a single run through the hand-written step;
    the trace and the saved state equal autograd + torch.optim.SGD's within float32 round-off, and a run
    resumed inside an epoch continues the same way."""
    from stabilityscope.config import Config, as_options

    def cfg(fast: bool) -> Config:
        return as_options({"dataset": {"root": str(data_root), "train_subset": 600, "test_subset": 200},
                           "model": {"width": 64}, "optim": {"lr": 0.05, "momentum": momentum, "weight_decay": 1e-3},
                           "train": {"epochs": 2, "fast_step": fast, "checkpoints": {"unit": "step", "kind": "list",
                                                                                     "steps": [7, 25]}},
                           "analysis": {"maps": False, "chains": False, "eigen": False, "n_inputs": 4},
                           "figures": False, "report": False}, Config)

    runs = {fast: Run(cfg(fast), tmp_path / str(fast)) for fast in (True, False)}
    assert runs[True]._stacked_step() is not None and runs[False]._stacked_step() is None
    for run in runs.values():
        assert run.execute() == "finished"
    for a, b in zip(runs[True].model.parameters(), runs[False].model.parameters()):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=1e-5)
    with open_trace(tmp_path / "True") as tf, open_trace(tmp_path / "False") as ta:
        assert tf.steps.tolist() == ta.steps.tolist() == [0, 7, 25, 38]
        for m in ("train_loss", "test_loss", "test_acc"):
            np.testing.assert_allclose(tf.metric(m), ta.metric(m), rtol=2e-4, atol=1e-5, err_msg=m)
    sf, sa = (load_state(tmp_path / str(f), 25, torch.device("cpu"), "step") for f in (True, False))
    for k in sf["model"]:
        torch.testing.assert_close(sf["model"][k], sa["model"][k], rtol=2e-4, atol=1e-5)
    assert sf["optimizer"]["state"].keys() == sa["optimizer"]["state"].keys()
    # resuming the fast run from its mid-epoch state (step 25) reproduces its own end exactly
    (tmp_path / "True" / "state" / "step_000000038.pt").unlink()
    again = Run(cfg(True), tmp_path / "True")
    assert again.execute(resume=True) == "finished"
    for a, b in zip(again.model.parameters(), runs[True].model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _overlap_cfg(data_root, overlap: bool):
    from stabilityscope.config import Config, as_options

    return as_options({"dataset": {"root": str(data_root), "train_subset": 600, "test_subset": 200},
                       "model": {"width": 784}, "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
                       "train": {"epochs": 3, "overlap_checkpoints": overlap, "keep_states": 10,
                                 "checkpoints": {"unit": "step", "kind": "list", "steps": [7, 25, 40]}},
                       "analysis": {"maps": True, "eigen": True, "weight_structure": True, "n_inputs": 4, "steps": 30},
                       "figures": False, "report": False}, Config)


def test_checkpoints_beside_training_record_what_checkpoints_in_line_record(tmp_path, data_root, one_thread):
    """train.overlap_checkpoints: a checkpoint measured in a worker thread while the stack trains on records
    the same trace (every statistic, maps included) and the same resumable states as one measured in line."""
    runs = {overlap: Run(_overlap_cfg(data_root, overlap), tmp_path / str(overlap)) for overlap in (True, False)}
    assert runs[True]._overlaps_checkpoints(runs[True]._stacked_step())
    assert not runs[False]._overlaps_checkpoints(runs[False]._stacked_step())
    for run in runs.values():
        assert run.execute() == "finished"
    with open_trace(tmp_path / "True") as to, open_trace(tmp_path / "False") as ti:
        assert to.steps.tolist() == ti.steps.tolist() == [0, 7, 25, 40, 57]
        for m in ("train_loss", "test_loss", "test_acc"):
            np.testing.assert_array_equal(to.metric(m), ti.metric(m), err_msg=m)
        for stat in ("J", "J0", "s_mean", "lambda_max", "spectral_radius", "step_displacement", "increment_cosine"):
            np.testing.assert_array_equal(to.stat("hidden", stat), ti.stat("hidden", stat), err_msg=stat)
    for key in (7, 25, 40, 57):  # the shuffle generator as it was at the checkpoint, not as training moved it
        so, si = (load_state(tmp_path / str(o), key, torch.device("cpu"), "step") for o in (True, False))
        assert torch.equal(so["shuffle_rng"], si["shuffle_rng"]) and so["step"] == si["step"] == key
        for k in so["model"]:
            assert torch.equal(so["model"][k], si["model"][k]), k


@pytest.mark.parametrize("total, share", [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)])
def test_training_and_the_checkpoint_worker_get_equal_thread_shares(total, share):
    """Equal shares (MKL's thread count is process-wide: unequal ones would leave each side's GEMMs to
    whichever count was set last); an odd count leaves one thread idle."""
    from stabilityscope.training.trainer import CoreShare

    cores = CoreShare(total)
    assert (cores.training, cores.worker, cores.total) == (share, share, total)


def test_checkpoints_beside_training_split_the_threads_and_stay_deterministic(tmp_path, data_root, monkeypatch):
    """On 2 threads an overlapped run trains on 1 and measures each checkpoint on 1 (the last, which training
    only waits for, on 2), gives the threads back at the end, and two such runs end bit for bit equal: the
    split is fixed, so the GEMMs' summation order does not follow the worker's timing."""
    import threading

    from stabilityscope.training import trainer

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: dict[str, list[int]] = {"checkpoint": [], "training": []}
    original_checkpoint, original_steps = Run.checkpoint, trainer.stacked_steps

    def checkpoint(self, run, perm=None, generator=None):
        assert threading.current_thread() is not threading.main_thread()  # checkpoint 0 included
        seen["checkpoint"].append(torch.get_num_threads())
        return original_checkpoint(self, run, perm, generator)

    def steps(*args):
        seen["training"].append(torch.get_num_threads())
        return original_steps(*args)

    monkeypatch.setattr(Run, "checkpoint", checkpoint)
    monkeypatch.setattr(trainer, "stacked_steps", steps)
    try:
        runs = [Run(_overlap_cfg(data_root, True), tmp_path / str(i)) for i in range(2)]
        for run in runs:
            assert run.execute() == "finished"
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)
    assert seen["checkpoint"] == 2 * [1, 1, 1, 1, 2] and set(seen["training"]) == {1}
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("slow_step, stop_batch, kept, last_epoch", [(25, 30, [0, 7, 25], 1), (0, 3, [0], 0)])
def test_a_stop_during_training_keeps_the_checkpoint_in_flight(tmp_path, data_root, one_thread, monkeypatch,
                                                                slow_step, stop_batch, kept, last_epoch):
    """Ctrl-C while a checkpoint (checkpoint 0 too) is being measured beside training: the run waits for it,
    so the trace and the state keep it, and the run resumes from it to the same end as an uninterrupted run."""
    import time

    from stabilityscope.training import trainer

    whole = Run(_overlap_cfg(data_root, True), tmp_path / "whole")
    assert whole.execute() == "finished"
    original, stops = Run.checkpoint, []

    def slow_checkpoint(self, run, perm=None, generator=None):
        if run.step == slow_step:
            time.sleep(1.0)  # still in flight when training stops
        return original(self, run, perm, generator)

    def stop_soon_after_the_slow_checkpoint():
        stops.append(1)
        if len(stops) == stop_batch:  # a few steps after the slow checkpoint was handed over
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "checkpoint", slow_checkpoint)
    monkeypatch.setattr(trainer, "raise_if_stop_requested", stop_soon_after_the_slow_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        Run(_overlap_cfg(data_root, True), tmp_path / "cut").execute()
    monkeypatch.undo()
    with open_trace(tmp_path / "cut") as tr:
        assert tr.steps.tolist() == kept and tr.status == "interrupted"
        assert f"checkpoint is epoch {last_epoch}" in tr.error
    assert saved_state_keys(tmp_path / "cut", "step")[-1] == slow_step
    resumed = Run(_overlap_cfg(data_root, True), tmp_path / "cut")
    assert resumed.execute(resume=True) == "finished"
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
