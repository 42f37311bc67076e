"""End-to-end wall time of a single canonical run: the hand-written SGD step against autograd, same process.

The canonical run (Fashion-MNIST 784-784(tanh)-10, SGD lr 0.02, momentum 0.5, batch 32) for 5 epochs at
``analysis=standard`` with a checkpoint every epoch, figures and report off, the data already in memory:
``Run.execute()`` from the initial checkpoint to the last, three ways: ``train.fast_step=false`` (autograd +
``torch.optim.SGD``, checkpoints in line: the path every single run took before, the baseline); the
hand-written step (:mod:`stabilityscope.training.stacked` at K = 1) with checkpoints in line
(``train.overlap_checkpoints=false``); and the default, the hand-written step with each checkpoint measured
in a worker thread while training goes on. Rounds run the three back to back so that they see the machine
in the same state; the ratios are baseline time / each one's time per round (target ≥ 1.5 for the default).

    python benchmarks/bench_single_run.py [--epochs 5] [--rounds 3] [--train-subset N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import stabilityscope  # noqa: F401  first: its OpenMP wait policy (PASSIVE unless set) applies before torch loads

# isort: split
import torch

from stabilityscope.config import Config, as_options
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import Run

VARIANTS = {  # name → (train.fast_step, train.overlap_checkpoints)
    "autograd": (False, False),
    "stacked step": (True, False),
    "stacked step + overlapped checkpoints": (True, True),
}


def timed_run(data, epochs: int, fast: bool, overlap: bool, root: Path) -> float:
    """Seconds of ``Run.execute()`` for one configuration (training and every checkpoint)."""
    cfg = as_options({"train": {"epochs": epochs, "fast_step": fast, "overlap_checkpoints": overlap, "device": "cpu"},
                      "figures": False, "report": False}, Config)
    run = Run(cfg, root / f"run{time.time_ns()}", data=data)
    start = time.perf_counter()
    assert run.execute() == "finished"
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=None)
    args = parser.parse_args()
    root = os.environ.get("STABILITYSCOPE_DATA", "data")
    data = load_dataset("fashion_mnist", root, train_subset=args.train_subset)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; {len(data.x_train)} training examples, {args.epochs} epochs, "
          f"analysis=standard")
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS if name != "autograd"}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            seconds = {name: timed_run(data, args.epochs, *flags, Path(tmp)) for name, flags in VARIANTS.items()}
            for name in ratios:
                ratios[name].append(seconds["autograd"] / seconds[name])
            print(f"round {r + 1}, load {os.getloadavg()[0]:.1f}: "
                  + ", ".join(f"{name} {sec:.1f} s" for name, sec in seconds.items()))
    for name, values in ratios.items():
        print(f"speed-up, autograd / {name}: median {statistics.median(values):.2f}, "
              f"min {min(values):.2f}, max {max(values):.2f} over {len(values)} rounds")


if __name__ == "__main__":
    main()
