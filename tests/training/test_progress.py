"""Progress that talks: lines at least every interval, the rate, the remaining and total times (fake clock)."""
from __future__ import annotations

import re

from stabilityscope.config import Config, DatasetConfig, TrainConfig
from stabilityscope.training import progress as progress_module
from stabilityscope.training.progress import Progress, duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _progress(clock: FakeClock, lines: list[str], overlap: bool = False, **kw) -> Progress:
    # 2 epochs of 1000 steps, a checkpoint at 0, 1000 and 2000
    return Progress("run", 2000, 1000, [0, 1000, 2000], overlap=overlap, clock=clock, emit=lines.append,
                    interval=30.0, **kw)


def _train(p: Progress, clock: FakeClock, start: int, steps: int, seconds: float, tick_every: float = 1.0) -> None:
    """One chunk of ``steps`` taking ``seconds``, with the heartbeat's ticks in between."""
    p.chunk_start_at(start)
    waited = 0.0
    while waited + tick_every < seconds:
        clock.advance(tick_every)
        waited += tick_every
        p.tick()
    clock.advance(seconds - waited)
    p.chunk_end(start + steps)


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0.4, 42, 185, 3600 * 2 + 41 * 60 + 10)] == ["0 s", "42 s", "3 min 05 s", "2 h 41 min"]
    assert duration(float("nan")) == "?"


def test_in_line_checkpoints_rate_etas_and_the_total_estimate():
    clock, lines = FakeClock(), []
    p = _progress(clock, lines)
    p.checkpoint_started(0)  # checkpoint 0 takes 100 s; the heartbeat ticks every second
    for _ in range(100):
        clock.advance(1.0)
        p.tick()
    p.checkpoint_finished()
    silent = [line for line in lines if "measuring checkpoint 0" in line]
    assert len(silent) == 3 and "(30 s so far)" in silent[0] and "(1 min 30 s so far)" in silent[2]
    assert "steps/s not measured yet" in silent[0] and "run ETA ?" in silent[0]
    _train(p, clock, 0, 8, 4.0)  # warm-up: slow, and kept out of the rate
    assert not any("estimated total" in line for line in lines)
    _train(p, clock, 8, 92, 4.6)  # 20 steps/s from here on
    estimate = [line for line in lines if "estimated total time" in line]
    assert len(estimate) == 1  # 2000 steps at 20 steps/s + 3 checkpoints of 100 s = 400 s
    assert "estimated total time on this machine 6 min 40 s" in estimate[0] and "20 steps/s" in estimate[0]
    assert "3 checkpoints of 1 min 40 s each, measured in line" in estimate[0]
    assert "remaining 4 min 55 s" in estimate[0]  # 1900 / 20 + 2 × 100
    assert "prediction" in estimate[0]
    _train(p, clock, 100, 400, 20.0)
    status = p.status_line()  # at step 500: epoch ETA 500 / 20, run ETA 1500 / 20 + 2 × 100
    assert "training epoch 1/2: step 500/2,000 (25%" in status and "20 steps/s" in status
    assert "epoch ETA 25 s" in status and "run ETA 4 min 35 s" in status
    _train(p, clock, 500, 500, 25.0)
    p.checkpoint_started(1000)
    assert p.phase().startswith("measuring checkpoint 1 (")
    p.checkpoint_finished()
    assert p.phase() == "training epoch 2/2"
    assert len([line for line in lines if "estimated total" in line]) == 1  # said once


def test_beside_training_a_checkpoint_costs_what_training_does_not_hide():
    clock, lines = FakeClock(), []
    p = _progress(clock, lines, overlap=True)
    p.checkpoint_started(0)
    _train(p, clock, 0, 8, 4.0)
    _train(p, clock, 8, 92, 4.6)  # 20 steps/s; checkpoint 0 still in flight: no estimate yet
    assert "measuring checkpoint 0 beside it" in p.phase() and p.phase().startswith("training epoch 1/2")
    assert not any("estimated" in line for line in lines)
    clock.advance(91.4)
    p.checkpoint_finished()  # it took 100 s; each 1000-step interval trains 50 s, so a checkpoint sets the pace
    estimate = next(line for line in lines if "estimated total time" in line)
    assert "5 min 00 s" in estimate and "measured beside training" in estimate  # 100 + 100 + the last, 100


def test_without_a_terminal_a_line_comes_at_least_every_interval():
    clock, lines = FakeClock(), []
    stamps: list[float] = []
    p = _progress(clock, lines)
    p.emit = lambda line: (lines.append(line), stamps.append(clock.now))
    p.checkpoint_started(0)
    clock.advance(70)  # a long checkpoint in line: the heartbeat's ticks (every 5 s) keep talking
    for _ in range(14):
        clock.advance(5)
        p.tick()
    p.checkpoint_finished()
    step = 0
    while step < 1000:
        stop = p.chunk_stop(step, 1000)
        _train(p, clock, step, stop - step, (stop - step) / 20.0, tick_every=5.0)
        step = stop
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert gaps and max(gaps) <= 30 + 5  # at most the interval plus one heartbeat period
    assert all(re.search(r"steps/s|estimated|measuring", line) for line in lines)


def test_chunks_start_small_and_grow_to_a_few_seconds_of_steps():
    clock, lines = FakeClock(), []
    p = _progress(clock, lines)
    assert p.chunk_stop(0, 1000) == 8
    _train(p, clock, 0, 8, 1.0)
    assert p.chunk_stop(8, 1000) == 24
    _train(p, clock, 8, 16, 0.8)  # 20 steps/s
    assert p.chunk_stop(24, 1000) == 24 + int(20 * progress_module.CHUNK_SECONDS)
    assert p.chunk_stop(990, 1000) == 1000  # never past a checkpoint or the epoch's end


def test_a_run_without_a_terminal_logs_its_phase_speed_and_estimate(tmp_path, data_root, one_thread, monkeypatch,
                                                                    caplog):
    """A real run with the interval at 0: every chunk's line has the phase, steps/s and both ETAs, and the
    estimate line comes once; the checkpoint lines keep their format."""
    from stabilityscope.training.trainer import Run

    monkeypatch.setattr(progress_module, "INTERVAL", 0.0)
    monkeypatch.setattr(progress_module, "ESTIMATE_AFTER", 0.0)
    cfg = Config(dataset=DatasetConfig(root=str(data_root), train_subset=1000, test_subset=200),
                 train=TrainConfig(epochs=2, batch_size=32))
    caplog.set_level("INFO", logger="stabilityscope")
    assert Run(cfg, tmp_path / "run").execute() == "finished"
    text = caplog.text
    # a checkpoint measured beside training adds its phase to the line (on a busy machine, to every line)
    assert re.search(r"run training epoch [12]/2(, measuring checkpoint \d+ beside it \([^)]*\))?: step [\d,]+/64 "
                     r"\(\d+%, [\d,]+ this session\), [\d.e+]+ steps/s; epoch ETA [\d.]+ s, run ETA [\d.]+ s", text), \
        text[-3000:]
    assert text.count("estimated total time on this machine") == 1
    assert re.search(r"run epoch 2/2: [\d.e+-]+ s/epoch, test_loss [\d.]+", text)


def test_a_batched_sweep_without_a_terminal_talks_between_its_checkpoints(tmp_path, data_root):
    """A batched group logs its phase, speed and remaining time between the checkpoint lines, and its estimate."""
    from tests.conftest import run_cli

    proc = run_cli("-m", "train.seed=0,1", "train.epochs=2", "dataset.train_subset=2000", "dataset.test_subset=200",
                   "analysis=economy", "figures=false", "report=false", "train.threads=1",
                   f"checkpoint_root={tmp_path}", cwd=tmp_path,
                   env={"STABILITYSCOPE_DATA": str(data_root), "STABILITYSCOPE_PROGRESS_INTERVAL": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert re.search(r"batched group of 2 runs training epoch [12]/2: step [\d,]+/126 \(\d+%, [\d,]+ this session\), "
                     r"[\d.e+]+ steps/s; epoch ETA [\d.]+ s, run ETA", out), out[-3000:]
    assert out.count("batched group of 2 runs: estimated total time on this machine") == 1
    assert re.search(r"batched group of 2 runs, epoch 2/2: [\d.]+ s/epoch, 2 checkpointed", out)
