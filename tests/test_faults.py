"""Fault injection: what a run and its trace survive.

Damaged traces fail fast; one writer per run directory; Ctrl-C and SIGTERM stop a run (or a batched
sweep) with every completed checkpoint kept and a resume command; a full disk, a SIGKILL during a
state save, a corrupt state file and NaN weights each leave something that opens and resumes.
Each test here failed (or hung, or crashed the process) before the reliability fixes.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, Config, DatasetConfig, TrainConfig
from stabilityscope.errors import RunLockedError, TraceError
from stabilityscope.recording.lock import RunLock
from stabilityscope.recording.trace import TraceWriter
from stabilityscope.training import trainer
from stabilityscope.training.trainer import Run, saved_state_epochs
from tests.conftest import REPO, run_cli
from tests.trace_factory import synthetic_trace

pytestmark = pytest.mark.slow

QUICK = ("experiment=debug", "dataset.train_subset=1000", "dataset.test_subset=300", "analysis=economy",
         "figures=false", "report=false")


def small_config(data_root: Path, epochs: int = 3, **train: object) -> Config:
    """A seconds-long canonical run on data subsets, as typed options (no Hydra)."""
    return Config(dataset=DatasetConfig(root=str(data_root), train_subset=500, test_subset=100),
                  train=TrainConfig(epochs=epochs, **train),
                  analysis=AnalysisConfig(maps=False, eigen=False, n_inputs=8), figures=False, report=False)


def wait_for(trace: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before the signal"
        try:
            with ss.open_trace(trace) as tr:
                if len(tr) >= n:
                    return
        except TraceError:  # not created yet, or between creation and its first flush
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{trace} did not reach {n} checkpoints")


def timed_open(path: Path) -> tuple[float, BaseException | None]:
    start = time.perf_counter()
    try:
        with ss.open_trace(path) as tr:  # read everything a report would
            for layer in tr.layers:
                for stat in tr.stats(layer):
                    tr.stat(layer, stat)
            tr.metric("test_loss"), tr.status, tr.config
        return time.perf_counter() - start, None
    except BaseException as exc:  # noqa: BLE001 - the test asserts what it was
        return time.perf_counter() - start, exc


# ------------------------------------------------------------------------------------------ damaged traces


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "cut_5000":
        path.write_bytes(data[:5000])
    elif how == "cut_half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "cut_superblock":
        path.write_bytes(data[:30])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("not a trace\n" * 100)
    elif how == "zeroed_middle":
        mid = len(data) // 2
        path.write_bytes(data[: mid - 2000] + bytes(4000) + data[mid + 2000:])
    elif how == "other_hdf5":
        path.unlink()
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)


@pytest.mark.parametrize("how", ["cut_5000", "cut_half", "cut_superblock", "empty", "text", "zeroed_middle",
                                 "other_hdf5"])
def test_a_damaged_trace_fails_fast_with_a_trace_error(tmp_path, how):
    path = synthetic_trace(tmp_path / "trace.h5", epochs=40)
    _damage(path, how)
    seconds, exc = timed_open(path)
    assert seconds < 2.0
    if how == "zeroed_middle" and exc is None:
        return  # the zeros fell into raw values, not metadata: the file still reads, and quickly
    assert isinstance(exc, TraceError), repr(exc)
    assert str(path) in str(exc)
    if how.startswith("cut"):
        assert "truncated" in str(exc)


def _killed_writer_trace(path: Path, rows: int) -> None:
    """A trace whose SWMR writer was SIGKILLed after ``rows`` checkpoints (its write flags stay set)."""
    code = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from stabilityscope.recording.trace import LayerSpec, StatSpec, TraceWriter
        w = TraceWriter.create({str(path)!r}, attrs={{"config": "a: 1"}},
                               layers={{"hidden": LayerSpec({{"fan_in": 4}}, [StatSpec("J")], (30, 30))}})
        for e in range({rows}):
            w.append(epoch=e, step=e, wall_time=0.0, metrics={{"train_loss": 1.0, "train_acc": 0.1, "test_loss": 1.0,
                     "test_acc": 0.1}}, layer_stats={{"hidden": {{"J": 0.5}}}},
                     weights={{"hidden": np.ones((30, 30), "f4")}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def test_a_killed_writers_trace_reads_whole_and_fails_fast_when_cut(tmp_path):
    path = tmp_path / "trace.h5"
    _killed_writer_trace(path, 30)
    with ss.open_trace(path) as tr:
        assert len(tr) == 30 and tr.status == "running"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    seconds, exc = timed_open(path)
    assert isinstance(exc, TraceError) and "truncated" in str(exc) and seconds < 2.0


def test_open_traces_and_reports_skip_a_damaged_trace_and_go_on(tmp_path):
    from stabilityscope.reports.run import write_index

    good = synthetic_trace(tmp_path / "a" / "trace.h5", epochs=10)
    bad = synthetic_trace(tmp_path / "b" / "trace.h5", epochs=10)
    _damage(bad, "cut_5000")
    with pytest.warns(UserWarning, match="skipped an unreadable trace"):
        table = ss.open_traces(str(tmp_path / "*"))
    assert table["path"].tolist() == [str(good)]
    with pytest.warns(UserWarning, match="report skipped an unreadable trace"):
        index = write_index([good, bad], tmp_path / "report", figures=False)
    text = index.read_text()
    assert "Not reported" in text and "truncated" in text and "](runs/00_a/report.md)" in text


# ------------------------------------------------------------------------------------------ one writer


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom stabilityscope.recording.lock import RunLock\n"
            "RunLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, data_root):
    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir)
    try:
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(run_dir).acquire()
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            Run(small_config(data_root), run_dir).execute()
        assert not (run_dir / "trace.h5").exists()
        from stabilityscope.training.batched import BatchedRuns

        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            BatchedRuns([small_config(data_root), small_config(data_root, seed=1)],
                        [tmp_path / "free", run_dir]).execute()
        assert not (tmp_path / "free" / "trace.h5").exists()  # refused before any member started
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run_dir), RunLock(run_dir):  # taken over; re-entrant within a process
        pass
    assert Run(small_config(data_root, epochs=1), run_dir).execute() == "finished"


def test_resuming_a_run_that_is_being_written_is_refused_without_touching_it(tmp_path, data_root):
    env = {"STABILITYSCOPE_DATA": str(data_root)}
    first = run_cli(*QUICK, "train.epochs=1", f"checkpoint_root={tmp_path}", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = next(tmp_path.glob("fmnist_fc-fashion_mnist/*"))
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    holder = _hold_lock(run_dir)
    try:
        second = run_cli(f"resume={run_dir}", "train.epochs=3", cwd=tmp_path, env=env)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2 and f"pid {holder.pid}" in second.stderr and "Traceback" not in second.stderr
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before  # no .hydra/resume-*, no log
    with ss.open_trace(run_dir) as tr:
        assert tr.status == "finished" and tr.checkpoints.tolist() == [0, 1]


# ------------------------------------------------------------------------------------------ signals


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_keeps_its_checkpoints_and_says_how_to_resume(tmp_path, data_root, sig, code):
    env = {**os.environ, "STABILITYSCOPE_DATA": str(data_root), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "stabilityscope", *QUICK, "train.epochs=300",
                             f"checkpoint_root={tmp_path / 'runs'}"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "runs").glob("*/*/trace.h5")) and time.time() < deadline:
        time.sleep(0.1)
    trace = next((tmp_path / "runs").glob("*/*/trace.h5"))
    wait_for(trace, 3, proc)
    proc.send_signal(sig)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("stabilityscope: interrupted")]
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0]
    command = re.search(r"resume with: (python -m stabilityscope resume=\S+)", lines[0]).group(1)
    assert command == f"python -m stabilityscope resume={trace.parent.resolve()}"
    with ss.open_trace(trace) as tr:
        kept = len(tr)
        assert tr.status == "interrupted" and kept >= 3 and tr.checkpoints.tolist() == list(range(kept))
        assert signal.Signals(sig).name in tr.error
    resumed = run_cli(*command.split()[3:], f"train.epochs={kept + 1}", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with ss.open_trace(trace) as tr:
        assert tr.status == "finished" and tr.checkpoints.tolist() == list(range(kept + 2))


def test_sigterm_stops_a_batched_sweep_and_every_trace_says_interrupted(tmp_path, data_root):
    env = {**os.environ, "STABILITYSCOPE_DATA": str(data_root), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "stabilityscope", "-m", *QUICK, "train.epochs=300",
                             "train.seed=0,1", f"checkpoint_root={tmp_path / 'runs'}"], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list((tmp_path / "runs").glob("multirun/*/*/trace.h5"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    traces = sorted((tmp_path / "runs").glob("multirun/*/*/trace.h5"))
    assert len(traces) == 2
    for t in traces:
        wait_for(t, 3, proc)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    line = next(line for line in stderr.splitlines() if line.startswith("stabilityscope: interrupted"))
    assert "2 run(s) keep every completed checkpoint" in line and "for d in" in line
    for t in traces:
        assert str(t.parent.resolve()) in line
        with ss.open_trace(t) as tr:
            assert tr.status == "interrupted" and len(tr) >= 3
    # without a terminal the group logs one line per checkpoint epoch
    assert re.search(r"batched group of 2 runs, epoch 1/300: [\d.]+ s/epoch, 2 checkpointed",
                     (tmp_path / "sweep.log").read_text())


def test_without_a_terminal_each_checkpoint_logs_one_line(tmp_path, data_root):
    proc = run_cli(*QUICK, "train.epochs=2", f"checkpoint_root={tmp_path}", cwd=tmp_path,
                   env={"STABILITYSCOPE_DATA": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for epoch in (1, 2):
        assert re.search(rf"epoch {epoch}/2: [\d.e+-]+ s/epoch, test_loss [\d.]+, test_acc [\d.]+, hidden\.J [\d.]+, "
                         rf"head\.J [\d.]+", out), out[-2000:]


# ------------------------------------------------------------------------------------------ bad input


def test_unknown_top_level_keys_are_refused_before_training(tmp_path):
    proc = run_cli("+bogus_key=1", f"checkpoint_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Unknown top-level key(s) bogus_key; the valid top-level keys are: task, resume," in proc.stderr
    assert not list(tmp_path.rglob("trace.h5"))


def test_a_refused_resume_creates_nothing(tmp_path):
    target = tmp_path / "no" / "such" / "dir"
    proc = run_cli(f"resume={target}", cwd=tmp_path)
    assert proc.returncode == 2 and "no trace.h5 there" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "no").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(f"resume={empty}", cwd=tmp_path)
    assert proc.returncode == 2 and list(empty.iterdir()) == []


# ------------------------------------------------------------------------------------------ a full disk


def _reference_j(data_root: Path, tmp: Path, epochs: int) -> np.ndarray:
    run_dir = tmp / "reference"
    assert Run(small_config(data_root, epochs=epochs), run_dir).execute() == "finished"
    with ss.open_trace(run_dir) as tr:
        return tr.stat("hidden", "J")


def test_a_full_disk_during_a_trace_write_keeps_the_earlier_checkpoints_and_resumes(tmp_path, data_root, monkeypatch):
    real_append = TraceWriter.append

    def append_until_the_disk_fills(self, **row):
        if self.num_checkpoints == 2:  # checkpoint 2: its metrics reach the file, then the disk is full
            n = self.num_checkpoints
            for name, value in row["metrics"].items():
                d = self._f["metrics"][name]
                d.resize(n + 1, axis=0)
                d[n] = value
            raise OSError(28, "No space left on device")
        return real_append(self, **row)

    run_dir = tmp_path / "run"
    monkeypatch.setattr(TraceWriter, "append", append_until_the_disk_fills)
    with pytest.raises(OSError, match="No space left"):
        Run(small_config(data_root, epochs=4), run_dir).execute()
    monkeypatch.setattr(TraceWriter, "append", real_append)
    with ss.open_trace(run_dir) as tr:
        assert tr.checkpoints.tolist() == [0, 1] and tr.status == "failed" and "No space left" in tr.error
        assert tr.metric("test_loss").shape == (2,)  # the half-written row is not a checkpoint
    assert 1 in saved_state_epochs(run_dir)
    assert Run(small_config(data_root, epochs=4), run_dir).execute(resume=True) == "finished"
    with ss.open_trace(run_dir) as tr:
        assert tr.checkpoints.tolist() == [0, 1, 2, 3, 4]
        np.testing.assert_allclose(tr.stat("hidden", "J"), _reference_j(data_root, tmp_path, 4), rtol=1e-6)


# ------------------------------------------------------------------------------------------ state files


def test_sigkill_during_a_state_save_leaves_no_partial_state_in_use(tmp_path, data_root):
    run_dir = tmp_path / "run"
    code = textwrap.dedent(f"""
        import os, signal
        import torch
        from stabilityscope.training import trainer
        from tests.test_faults import small_config
        real_save, calls = torch.save, []
        def save_then_die(obj, path):
            calls.append(path)
            if len(calls) == 3:  # the state of epoch 2: half of it is on disk when the process dies
                real_save(obj, path)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            real_save(obj, path)
        trainer.torch.save = save_then_die
        trainer.Run(small_config({str(data_root)!r}, epochs=4), {str(run_dir)!r}).execute()
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert saved_state_epochs(run_dir) == [0, 1]  # the partial file is epoch_000002.tmp, never used
    assert (run_dir / "state" / "epoch_000002.tmp").exists()
    with ss.open_trace(run_dir) as tr:
        assert tr.checkpoints.tolist() == [0, 1] and tr.status == "running"
    assert Run(small_config(data_root, epochs=4), run_dir).execute(resume=True) == "finished"
    with ss.open_trace(run_dir) as tr:
        np.testing.assert_allclose(tr.stat("hidden", "J"), _reference_j(data_root, tmp_path, 4), rtol=1e-6)


def test_a_corrupt_state_file_falls_back_to_the_one_before(tmp_path, data_root, caplog):
    run_dir = tmp_path / "run"
    assert Run(small_config(data_root, epochs=3), run_dir).execute() == "finished"
    assert saved_state_epochs(run_dir) == [2, 3]
    (run_dir / "state" / "epoch_000003.pt").write_bytes(b"\x00garbage" * 1000)
    with caplog.at_level("WARNING", logger=trainer.log.name):
        assert Run(small_config(data_root, epochs=4), run_dir).execute(resume=True) == "finished"
    assert "epoch 3" in caplog.text and "unreadable" in caplog.text
    with ss.open_trace(run_dir) as tr:
        assert tr.checkpoints.tolist() == [0, 1, 2, 3, 4]
        np.testing.assert_allclose(tr.stat("hidden", "J"), _reference_j(data_root, tmp_path, 4), rtol=1e-6)
    for name in ("epoch_000003.pt", "epoch_000002.pt"):
        (run_dir / "state" / name).write_bytes(b"junk")
    (run_dir / "state" / "epoch_000004.pt").write_bytes(b"junk")
    with pytest.raises(TraceError, match="none of the saved states"):
        Run(small_config(data_root, epochs=5), run_dir).execute(resume=True)


# ------------------------------------------------------------------------------------------ NaN weights


def test_nan_weights_are_recorded_as_nan_with_the_maps_stop_reason():
    """Before: LAPACK's eigvals crashed the whole process (segfault) on a NaN entry; run apart for that."""
    code = textwrap.dedent("""
        import json, math, torch
        import stabilityscope as ss
        from stabilityscope.config import AnalysisConfig, ModelConfig
        from stabilityscope.dynamics.lyapunov import ATTRACTORS, STOP_REASONS
        options = ModelConfig(width=49)
        model = ss.build_model(options, (1, 7, 7), 10)
        with torch.no_grad():
            model.hidden.weight[3, 5] = float("nan")
            model.head.weight[0, 0] = float("inf")
        analysis = AnalysisConfig(maps=True, n_inputs=4, steps=50, spectrum_k=3)
        records = ss.tracked_records(model, options, analysis, (1, 7, 7))
        out = ss.LayerTracker(model, records, analysis, probe_inputs=torch.rand(4, 1, 7, 7)).measure(model)
        h = out["hidden"]
        print(json.dumps({"J": h["J"], "radius": h["spectral_radius"], "s": h["s_mean"], "lam": h["lambda_max"],
                          "attractor": ATTRACTORS[h["attractor"]], "stop": STOP_REASONS[h["map_stop"]],
                          "head_J": out["head"]["J"]}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(v is None or (isinstance(v, float) and np.isnan(v)) for k, v in got.items()
               if k in ("J", "radius", "s", "lam", "head_J")), got
    assert got["attractor"] == "divergent" and got["stop"] == "diverged"


# ------------------------------------------------------------------------------------------ float32 spectra


def test_a_float32_spectrum_has_no_nan_and_warns_where_precision_limits_it():
    torch.manual_seed(1)
    W = 3 * torch.randn(200, 200) / 200 ** 0.5
    x0 = torch.randn(1, 200)
    with pytest.warns(RuntimeWarning, match="reached the torch.float32 rounding floor"):
        f32 = ss.lyapunov_spectrum(ss.LayerMap(W, None, "tanh"), x0, k=None, steps=400, transient=100).exponents
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f64 = ss.lyapunov_spectrum(ss.LayerMap(W.double(), None, "tanh"), x0.double(), k=None, steps=400,
                                   transient=100).exponents
    assert not f32.isnan().any() and not f64.isnan().any()
    assert torch.all(f32[..., :-1] >= f32[..., 1:])  # sorted, largest first, −inf only at the end
    assert abs(float(f32[0, 0]) - float(f64[0, 0])) < 0.05  # the leading exponent is measured in float32 too


def test_an_exactly_singular_direction_gives_minus_infinity_not_nan():
    torch.manual_seed(0)
    W = 2 * torch.randn(6, 6, dtype=torch.float64) / 6 ** 0.5
    W[4:] = 0  # two dead units: the Jacobian diag(φ')W has rank 4 at every step
    spec = ss.lyapunov_spectrum(ss.LayerMap(W, None, "tanh"), torch.randn(2, 6, dtype=torch.float64), k=None,
                                steps=200, transient=20).exponents
    assert torch.isfinite(spec[..., :4]).all() and torch.isneginf(spec[..., 4:]).all()


def test_nan_sorts_last():
    from stabilityscope.dynamics.lyapunov import _sort_descending

    x = torch.tensor([[float("nan"), 0.3, -float("inf"), 1.0, -2.0]], dtype=torch.float64)
    out = _sort_descending(x)[0].tolist()
    assert out[:4] == [1.0, 0.3, -2.0, -float("inf")] and np.isnan(out[4])
