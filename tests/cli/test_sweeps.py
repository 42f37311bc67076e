"""Sweeps through the launchers: batched groups, failed jobs, one thread per parallel job, the presets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stabilityscope import open_trace
from tests.conftest import compose_with_hydra, run_cli

pytestmark = pytest.mark.slow

QUICK = ("experiment=debug", "dataset.train_subset=600", "dataset.test_subset=200", "analysis=economy",
         "figures=false", "report=false")


def sweep_runs(root: Path) -> dict[str, dict]:
    """Job number → status, error, attributes and config of every trace of the one sweep under root."""
    (sweep,) = root.glob("multirun/*")
    out = {}
    for trace in sweep.glob("*/trace.h5"):
        with open_trace(trace) as tr:
            out[trace.parent.name] = {"status": tr.status, "error": tr.error, "attrs": tr.attrs,
                                      "config": tr.config, "J": tr.stat("hidden", "J") if len(tr) else None}
    return out


def run_sweep(tmp_path: Path, data_root: Path, *overrides: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = run_cli("-m", *QUICK, *overrides, f"checkpoint_root={tmp_path}", cwd=tmp_path,
                   env={"STABILITYSCOPE_DATA": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, sweep_runs(tmp_path)


def test_default_launcher_batches_and_a_failing_job_does_not_end_the_sweep(tmp_path, data_root):
    # 6 jobs: lr = -1 fails validation, lr = 1e10 diverges, the other two finish; batch 32 and 64 form two groups
    proc, runs = run_sweep(tmp_path, data_root, "model.activation=relu", "optim.lr=0.01,1e10,-1",
                           "train.batch_size=32,64")
    assert len(runs) == 6
    by = {(r["config"]["optim"]["lr"], r["config"]["train"]["batch_size"]): r for r in runs.values()}
    for batch in (32, 64):
        ok, blown, bad = by[(0.01, batch)], by[(1e10, batch)], by[(-1.0, batch)]
        assert ok["status"] == "finished" and ok["attrs"]["batch_group"] == 2 and len(ok["J"]) == 3
        assert blown["status"] == "diverged" and "loss became" in blown["error"]
        assert blown["attrs"]["batch_group"] == 2  # it trained in the group until it blew up
        assert bad["status"] == "failed" and "optim.lr=-1" in bad["error"] and bad["J"] is None
    (sweep,) = tmp_path.glob("multirun/*")
    summary = (sweep / "sweep_summary.txt").read_text()
    assert "6 runs, 2 diverged, 2 failed, 2 finished" in summary and summary in proc.stdout


def test_batching_can_be_switched_off_and_gives_the_same_runs(tmp_path, data_root):
    sweep = ("optim.lr=0.01,0.05", "optim.momentum=0.5", "train.seed=3")
    _, batched = run_sweep(tmp_path / "on", data_root, *sweep)
    _, single = run_sweep(tmp_path / "off", data_root, *sweep, "batching.enabled=false")
    assert {r["attrs"]["batch_group"] for r in batched.values()} == {2}
    assert {r["attrs"]["batch_group"] for r in single.values()} == {1}
    for job in ("0", "1"):
        assert batched[job]["config"]["optim"] == single[job]["config"]["optim"]
        np.testing.assert_allclose(batched[job]["J"], single[job]["J"], rtol=1e-4)


def test_parallel_launcher_runs_one_thread_per_job(tmp_path, data_root):
    _, runs = run_sweep(tmp_path, data_root, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                        "optim.lr=0.01,-1")
    assert sorted(r["status"] for r in runs.values()) == ["failed", "finished"]
    ok = next(r for r in runs.values() if r["status"] == "finished")
    assert ok["attrs"]["torch_threads"] == 1 and ok["attrs"]["batch_group"] == 1


def test_ray_launcher_runs_the_jobs(tmp_path, data_root):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")  # the `ray` extra (part of `dev`)
    _, runs = run_sweep(tmp_path, data_root, "hydra/launcher=ray_jobs", "optim.lr=0.01,0.02")
    assert [r["status"] for r in runs.values()] == ["finished", "finished"]
    assert {r["attrs"]["torch_threads"] for r in runs.values()} == {1}


@pytest.mark.parametrize("target,extra,threads,expected", [
    ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", {}, None, None),  # torch's default
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", {}, None, 1),
    ("hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", {}, None, 1),
    ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", {"cpus_per_task": 3}, None, 3),
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", {}, 2, 2),  # train.threads wins
])
def test_torch_threads_per_launcher(target, extra, threads, expected):
    import torch
    from omegaconf import OmegaConf

    from stabilityscope.cli.sweep import set_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(5)
        set_threads(OmegaConf.create({"train": {"threads": threads}}),
                    OmegaConf.create({"launcher": {"_target_": target, **extra}}), multirun=True)
        assert torch.get_num_threads() == (5 if expected is None else expected)
    finally:
        torch.set_num_threads(before)


def test_slurm_launcher_preset_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")  # the `slurm` extra (part of `dev`)
    proc = run_cli("hydra/launcher=slurm", "--cfg", "hydra", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in proc.stdout
    assert "timeout_min: 240" in proc.stdout and "cpus_per_task: 4" in proc.stdout


def test_a_sweep_preset_without_multirun_says_to_add_m(tmp_path):
    proc = run_cli("experiment=eoc_scaling_lr_quick", f"checkpoint_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and "add -m" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------ the presets



def _values(text: str) -> list[float]:
    return [float(v) for v in str(text).split(",")]


# EOC-training's sweeps (issue 6, docs/science/mean-field.md): swept key → values, and the fixed (lr, momentum, batch)
PRESETS = {
    "eoc_scaling_lr": ("optim.lr", [0.0005, 0.001, 0.002, 0.003, 0.005, 0.007, 0.01, 0.02, 0.05, 0.1],
                       {"optim.momentum": 0.0, "train.batch_size": 32}),
    "eoc_scaling_momentum": ("optim.momentum", [0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95],
                             {"optim.lr": 0.01, "train.batch_size": 32}),
    "eoc_scaling_batch": ("train.batch_size", [4, 8, 16, 24, 32, 64, 128, 192, 256, 512],
                          {"optim.lr": 0.01, "optim.momentum": 0.0}),
    "eoc_weight_decay": ("optim.weight_decay", [2 * lam for lam in (0, 1e-5, 5e-5, 9e-5, 1.5e-4, 3e-4, 5e-4, 1e-3)],
                         {"optim.lr": 0.02, "optim.momentum": 0.5, "train.batch_size": 32}),
}


@pytest.mark.parametrize("quick", ["", "_quick"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_scaling_presets_sweep_the_published_values(name, quick):
    key, values, fixed = PRESETS[name]
    cfg = compose_with_hydra(f"experiment={name}{quick}")
    params = cfg.hydra.sweeper.params
    np.testing.assert_allclose(_values(params[key]), values)
    for k, v in fixed.items():
        assert cfg[k.split(".")[0]][k.split(".")[1]] == v, k
    if name == "eoc_weight_decay":
        seeds = params["train.seed"]
        assert seeds == ("range(10)" if not quick else "0,1") and cfg.train.epochs == 501 - 491 * bool(quick)
    if quick:
        assert cfg.dataset.train_subset == 6000 and cfg.train.epochs <= 20


def _case(name: str) -> tuple:
    cfg = compose_with_hydra("experiment=eoc_same_ratio" if "same" in name else "experiment=eoc_rescaled_time",
                   f"+eoc_case={name}")
    return cfg.train.epochs, cfg.optim.lr, cfg.train.batch_size, cfg.optim.momentum


def test_case_presets_hold_the_published_tuples():
    same = [_case(f"same_ratio_{i}")[1:] for i in range(1, 6)]
    assert same == [(0.005, 8, 0.5), (0.01, 16, 0.5), (0.02, 32, 0.5), (0.04, 64, 0.5), (0.08, 128, 0.5)]
    full = [_case(f"rescaled_time_{i}") for i in range(1, 6)]
    assert full == [(8001, 0.0025, 32, 0), (4001, 0.005, 32, 0), (2001, 0.01, 32, 0), (1001, 0.01, 32, 0.5),
                    (501, 0.02, 32, 0.5)]
    quick = [_case(f"rescaled_time_quick_{i}") for i in range(1, 6)]
    assert [q[1:] for q in quick] == [f[1:] for f in full] and [q[0] for q in quick] == [80, 40, 20, 10, 5]
    tau_end = {round(e * lr / ((1 - m) * b), 2) for e, lr, b, m in full}
    assert tau_end == {0.63}  # all five end at one rescaled time
    assert compose_with_hydra("experiment=eoc_same_ratio").hydra.sweeper.params["+eoc_case"] == "glob(same_ratio_*)"
    assert compose_with_hydra("experiment=eoc_rescaled_time_quick").hydra.sweeper.params["+eoc_case"] == \
        "glob(rescaled_time_quick_*)"


# ------------------------------------------------------------------- reduced presets, end to end

def test_reduced_presets_run_through_the_launcher_and_the_scaling_task(reduced_sweeps, tmp_path):
    import json

    for name, n_runs in (("lr", 10), ("decay", 16)):
        sweep = reduced_sweeps[name]
        assert f"{n_runs} runs, {n_runs} finished" in (sweep / "sweep_summary.txt").read_text()
        proc = run_cli("task=scaling", f"sweep={sweep}", f"checkpoint_root={tmp_path / name}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (out,) = (tmp_path / name).glob("scaling/*")
        result = json.loads((out / "scaling.json").read_text())
        assert (out / "scaling.md").exists() and (out / "runs.csv").exists()
        if name == "lr":
            # 10 learning rates, one group: J² grows faster with every larger lr, roughly in proportion
            # (over so few epochs on 1,000 examples the exponent is ~1.2; on 6,000 over 10 epochs ~0.7)
            (law,) = result["power_laws"]
            assert law["variable"] == "lr" and law["n_runs"] == 10 and 0.5 < law["exponent"] < 1.5
            slopes = [r["A"] for r in sorted(result["runs"], key=lambda r: r["lr"])]
            assert all(a < b for a, b in zip(slopes, slopes[1:])), slopes
            assert result["combined"]["C"] > 0 and result["combined"]["C_ci"][0] < result["combined"]["C"]
        else:
            # four epochs are far too short for the plateaus: λ* is not claimed, and the report says why
            decay = result["decay"]
            assert decay["weight_decay_star"] is None and decay["explanation"]
            assert len(decay["table"]) == 8  # one row per decay, averaged over the 2 seeds
