"""Batched trainer against sequential runs: K canonical-network configurations, same data, same process.

The K configurations differ in learning rate, momentum, weight decay and seed (one batch size, 32), as
in EOC-training's sweeps. Sequential: K ordinary `Run`s one after another. Batched: one `BatchedRuns`
group (stabilityscope.training.batched). Both write full traces with a checkpoint after every epoch
(`analysis=economy`, the sweep presets' tracking) and evaluate train and test loss at each.

Each side's time is split into setup (building the K models, trackers and traces), training (the
optimiser steps) and checkpoints (evaluation, tracking, state and trace writing). Two ratios per K
(sequential time / batched time for the same K runs):
- training: the optimiser steps only; target >= 3 at K = 32;
- end to end: setup, training and checkpoints. Setup and checkpoints cost the same per run on both
  sides (the full-train-set evaluation dominates a checkpoint), so this ratio is lower.

    python benchmarks/bench_batched.py [--k 8 32] [--train-subset 6000] [--epochs 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from stabilityscope.cli.app import conf_dir
from stabilityscope.training.batched import BatchedRuns
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import Run


def configs(k: int, epochs: int, subset: int, test_subset: int) -> list:
    GlobalHydra.instance().clear()
    lrs = (0.005, 0.01, 0.02, 0.05)
    out = []
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        for i in range(k):
            out.append(compose(config_name="config", overrides=[
                "analysis=economy", "figures=false", "report=false", "train.device=cpu", f"train.epochs={epochs}",
                f"dataset.train_subset={subset}", f"dataset.test_subset={test_subset}", f"optim.lr={lrs[i % 4]}",
                f"optim.momentum={(0.0, 0.5, 0.9)[i % 3]}", f"optim.weight_decay={(0.0, 1e-4)[i % 2]}",
                f"train.seed={i}"]))
    GlobalHydra.instance().clear()
    return out


class CheckpointClock:
    """Wraps each Run's checkpoint method to add up the seconds spent inside checkpoints."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def watch(self, run: Run) -> Run:
        inner = run.checkpoint

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t

        run.checkpoint = timed
        return run


def sequential(cfgs, data, root: Path) -> dict[str, float]:
    """K ordinary runs one after another: seconds of setup, training and checkpoints."""
    clock, setup, start = CheckpointClock(), 0.0, time.perf_counter()
    for i, cfg in enumerate(cfgs):
        t = time.perf_counter()
        run = clock.watch(Run(cfg, root / f"seq{i}", data=data))
        setup += time.perf_counter() - t
        run.execute()
    total = time.perf_counter() - start
    return {"total": total, "setup": setup, "checkpoints": clock.seconds,
            "training": total - setup - clock.seconds}


def batched(cfgs, data, root: Path) -> dict[str, float]:
    """The same K runs as one batched group."""
    clock, start = CheckpointClock(), time.perf_counter()
    group = BatchedRuns(cfgs, [root / f"bat{i}" for i in range(len(cfgs))], data=data)
    setup = time.perf_counter() - start
    for m in group.members:
        clock.watch(m.run)
    statuses = group.execute()
    assert set(statuses.values()) == {"finished"}, statuses
    total = time.perf_counter() - start
    return {"total": total, "setup": setup, "checkpoints": clock.seconds,
            "training": total - setup - clock.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--train-subset", type=int, default=6000)
    ap.add_argument("--test-subset", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    args = ap.parse_args()
    data = load_dataset("fashion_mnist", args.data, train_subset=args.train_subset, test_subset=args.test_subset)
    print(f"torch threads: {torch.get_num_threads()}, device: cpu, examples: {args.train_subset} train / "
          f"{args.test_subset} test, epochs: {args.epochs}, batch 32, checkpoint every epoch")
    for k in args.k:
        cfgs = configs(k, args.epochs, args.train_subset, args.test_subset)
        with tempfile.TemporaryDirectory() as tmp:
            seq = sequential(cfgs, data, Path(tmp))
            bat = batched(cfgs, data, Path(tmp))
        for name, t in (("sequential", seq), ("batched", bat)):
            print(f"K={k:3d} {name:10s} total {t['total']:7.1f} s = setup {t['setup']:5.1f} + training "
                  f"{t['training']:6.1f} + checkpoints {t['checkpoints']:6.1f}")
        print(f"K={k:3d} ratio sequential/batched: training {seq['training'] / bat['training']:5.2f}x, "
              f"end to end {seq['total'] / bat['total']:5.2f}x")


if __name__ == "__main__":
    main()
