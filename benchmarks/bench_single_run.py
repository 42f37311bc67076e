"""End-to-end wall time of a single canonical run: the hand-written SGD step against autograd, same process.

The canonical run (Fashion-MNIST 784-784(tanh)-10, SGD lr 0.02, momentum 0.5, batch 32) for 5 epochs at
``analysis=standard`` with a checkpoint every epoch, figures and report off, the data already in memory:
``Run.execute()`` from the initial checkpoint to the last, once with ``train.fast_step=true`` (the
default: :mod:`stabilityscope.training.stacked` at K = 1) and once with ``false`` (autograd +
``torch.optim.SGD``, the path every single run took before). Rounds alternate the two so that both see
the machine in the same state; the ratio is autograd time / fast time per round (target ≥ 1.5).

    python benchmarks/bench_single_run.py [--epochs 5] [--rounds 3] [--train-subset N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stabilityscope.config import Config, as_options
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import Run


def timed_run(data, epochs: int, fast: bool, root: Path) -> float:
    """Seconds of ``Run.execute()`` for one configuration (training and every checkpoint)."""
    cfg = as_options({"train": {"epochs": epochs, "fast_step": fast, "device": "cpu"}, "figures": False,
                      "report": False}, Config)
    run = Run(cfg, root / f"{'fast' if fast else 'autograd'}{time.time_ns()}", data=data)
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
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            slow = timed_run(data, args.epochs, False, Path(tmp))
            fast = timed_run(data, args.epochs, True, Path(tmp))
            ratios.append(slow / fast)
            print(f"round {r + 1}: autograd {slow:.1f} s, stacked step {fast:.1f} s, ratio {slow / fast:.2f}")
    print(f"speed-up (autograd / stacked step): median {statistics.median(ratios):.2f}, "
          f"min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} rounds")


if __name__ == "__main__":
    main()
