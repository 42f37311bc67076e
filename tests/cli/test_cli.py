"""The Hydra app end to end: a short real run, resume after SIGKILL, and every user error."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stabilityscope import open_trace
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

QUICK = ("experiment=debug", "dataset.train_subset=1000", "dataset.test_subset=300", "analysis=economy")


def _only_run_dir(root: Path) -> Path:
    traces = sorted(root.glob("fmnist_fc-fashion_mnist/*/trace.h5"))
    assert len(traces) == 1, traces
    return traces[0].parent


def test_two_epoch_run_writes_a_readable_trace(tmp_path, data_root):
    proc = run_cli(*QUICK, f"checkpoint_root={tmp_path}", cwd=tmp_path, env={"STABILITYSCOPE_DATA": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run_dir(tmp_path)
    with open_trace(run_dir / "trace.h5") as tr:
        assert tr.status == "finished"
        assert tr.checkpoints.tolist() == [0, 1, 2] and tr.steps.tolist() == [0, 32, 64]  # ceil(1000/32) = 32
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert tr.metric(name).shape == (3,) and np.isfinite(tr.metric(name)).all()
        assert tr.metric("test_acc")[-1] > 0.5 and tr.metric("train_loss")[-1] < tr.metric("train_loss")[0]
        assert tr.metric("train_loss")[0] == pytest.approx(np.log(10), rel=0.15)  # untrained: near chance
        assert set(tr.layers) == {"hidden", "head"}
        j = tr.stat("hidden", "J")
        assert abs(j[0] - 0.5) < 0.01 and np.all(np.diff(j) > 0)  # J grows as training diffuses the weights
        assert tr.stat("hidden", "weight_distance")[0] == 0.0 and tr.stat("hidden", "weight_distance")[-1] > 0
        assert tr.config["train"]["epochs"] == 2 and tr.config["dataset"]["train_subset"] == 1000
        assert tr.config["dataset"]["root"] == str(data_root)
    assert (run_dir / "figures" / "phase_path.png").stat().st_size > 10_000
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert sorted(p.name for p in (run_dir / "state").iterdir()) == ["epoch_000001.pt", "epoch_000002.pt"]


def _wait_for_checkpoints(trace: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        if trace.exists():
            try:
                with open_trace(trace) as tr:
                    if len(tr) >= n:
                        return
            except Exception:  # the file may be between creation and its first flush
                pass
        time.sleep(0.2)
    raise TimeoutError(f"{trace} did not reach {n} checkpoints")


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, data_root):
    env = {"STABILITYSCOPE_DATA": str(data_root)}
    args = (*QUICK, "train.epochs=6", "figures=false")
    ref = run_cli(*args, f"checkpoint_root={tmp_path / 'ref'}", cwd=tmp_path, env=env)
    assert ref.returncode == 0, ref.stderr[-3000:]

    root = tmp_path / "killed"
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "stabilityscope", *args, f"checkpoint_root={root}"],
                            cwd=tmp_path, env={**os.environ, **env}, stdout=log, stderr=log)
    deadline, trace = time.time() + 300, None
    while trace is None and time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        found = list(root.glob("fmnist_fc-fashion_mnist/*/trace.h5"))
        trace = found[0] if found else time.sleep(0.1)
    assert trace is not None
    _wait_for_checkpoints(trace, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_trace(trace) as tr:
        killed_at = len(tr)
        assert 3 <= killed_at <= 7 and tr.status == "running"

    resumed = run_cli(f"resume={trace.parent}", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open_trace(trace) as tr, open_trace(_only_run_dir(tmp_path / "ref")) as ref_tr:
        assert tr.status == "finished" and tr.checkpoints.tolist() == list(range(7))
        np.testing.assert_allclose(tr.stat("hidden", "J"), ref_tr.stat("hidden", "J"), rtol=1e-6)
        np.testing.assert_allclose(tr.metric("test_loss"), ref_tr.metric("test_loss"), rtol=1e-5)


def test_resume_refuses_to_change_the_stored_config(tmp_path, data_root):
    proc = run_cli(*QUICK, "train.epochs=1", "figures=false", f"checkpoint_root={tmp_path}", cwd=tmp_path,
                   env={"STABILITYSCOPE_DATA": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run_dir(tmp_path)
    bad = run_cli(f"resume={run_dir}", "optim.lr=0.5", cwd=tmp_path)
    assert bad.returncode != 0 and "optim.lr cannot be changed" in bad.stderr and "Traceback" not in bad.stderr
    more = run_cli(f"resume={run_dir}", "train.epochs=2", cwd=tmp_path, env={"STABILITYSCOPE_DATA": str(data_root)})
    assert more.returncode == 0, more.stderr[-3000:]
    with open_trace(run_dir) as tr:
        assert tr.checkpoints.tolist() == [0, 1, 2] and tr.config["train"]["epochs"] == 2


@pytest.mark.parametrize("overrides,expected", [
    (["model=nope"], "fmnist_fc"),  # Hydra lists the available options
    (["train.epoch=3"], "epoch"),
    (["train.epochs=many"], "many"),
    (["optim.lr=-1"], "optim.lr=-1.0"),
    (["train.epochs=0"], "train.epochs=0"),
    (["train.batch_size=0"], "train.batch_size=0"),
    (["dataset.root=/nonexistent/data"], "/nonexistent/data"),
    (["resume=/nonexistent/run"], "/nonexistent/run"),
])
def test_bad_input_gives_one_clear_message(tmp_path, overrides, expected):
    proc = run_cli(*overrides, f"checkpoint_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_divergence_stops_keeps_the_trace_and_exits_nonzero(tmp_path, data_root):
    proc = run_cli(*QUICK, "optim.lr=1e10", "model.activation=relu", f"checkpoint_root={tmp_path}", cwd=tmp_path,
                   env={"STABILITYSCOPE_DATA": str(data_root)})
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "loss became" in proc.stderr and "Traceback" not in proc.stderr
    with open_trace(_only_run_dir(tmp_path)) as tr:
        assert tr.status == "diverged" and tr.checkpoints[0] == 0


def test_phase_diagram_task_writes_h5_and_png(tmp_path):
    proc = run_cli("task=phase_diagram", "phase_diagram.n=200", "phase_diagram.steps=120",
                   "phase_diagram.j0_over_j.num=9", "phase_diagram.inv_j.num=7", "phase_diagram.inv_j.start=0.2",
                   "phase_diagram.inv_j.stop=2.0", f"checkpoint_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (h5,) = tmp_path.glob("phase_diagram/*/phase_diagram.h5")
    import h5py

    with h5py.File(h5, "r") as f:
        sep = f["separation"][...]
        assert sep.shape == (7, 9) and f.attrs["n"] == 200 and f.attrs["steps"] == 120 and f.attrs["seed"] == 0
    # 1/J = 0.2 (J = 5, deep chaos) is far apart; 1/J = 2 (J = 0.5, order) has collapsed
    assert sep[0, 4] > 5.0 and sep[-1, 4] < 1e-3
    assert (h5.parent / "phase_diagram.png").stat().st_size > 10_000


def test_phase_diagram_task_rejects_bad_grid(tmp_path):
    proc = run_cli("task=phase_diagram", "phase_diagram.inv_j.start=0", f"checkpoint_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and "phase_diagram.inv_j" in proc.stderr and "Traceback" not in proc.stderr
