"""Training throughput of a tracked run against a bare PyTorch loop, in the same process.

Both train the canonical network (784-784(tanh)-10, SGD lr 0.02, momentum 0.5, batch 32) on the same
in-memory Fashion-MNIST tensors. The tracked side is stabilityscope's `Run` with `analysis=standard`,
a checkpoint after every epoch; time spent inside checkpoints is excluded (it is measured by
bench_tracking.py). Rounds alternate bare/tracked to share the machine's state; the ratio is
tracked throughput / bare throughput (target ≥ 0.9).

    python benchmarks/bench_training.py [--train-subset 16000] [--epochs 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from stabilityscope.cli.app import conf_dir
from stabilityscope.models.registry import FashionFC
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import Run


def bare_loop(x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, seed: int = 0) -> float:
    """Steps per second of a plain loop: permutation, slice, forward, backward, step."""
    torch.manual_seed(seed)
    model = FashionFC(784, 784, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.5)
    g = torch.Generator().manual_seed(seed)
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return steps / (time.perf_counter() - start)


def tracked_run(data, epochs: int, subset: int, tmp: Path) -> float:
    """Steps per second of stabilityscope's Run, checkpoint time excluded."""
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"train.epochs={epochs}", "figures=false",
                                                       f"dataset.train_subset={subset}", "train.device=cpu"])
    run = Run(cfg, tmp / f"run{time.time_ns()}", data=data)
    in_checkpoints = 0.0
    inner = run.checkpoint

    def timed(*a, **k):
        nonlocal in_checkpoints
        t = time.perf_counter()
        out = inner(*a, **k)
        in_checkpoints += time.perf_counter() - t
        return out

    run.checkpoint = timed
    start = time.perf_counter()
    run.execute()
    return epochs * run.steps_per_epoch / (time.perf_counter() - start - in_checkpoints)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-subset", type=int, default=16000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    args = ap.parse_args()
    data = load_dataset("fashion_mnist", args.data, train_subset=args.train_subset, test_subset=2000)
    x, y = data.x_train, data.y_train
    bare, tracked = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            bare.append(bare_loop(x, y, args.epochs, 32))
            tracked.append(tracked_run(data, args.epochs, args.train_subset, Path(tmp)))
    ratios = [t / b for t, b in zip(tracked, bare)]
    print(f"torch threads: {torch.get_num_threads()}, examples: {len(x)}, epochs per round: {args.epochs}")
    print(f"bare loop     : {statistics.median(bare):8.1f} steps/s (rounds: {', '.join(f'{v:.1f}' for v in bare)})")
    print(f"tracked run   : {statistics.median(tracked):8.1f} steps/s (rounds: "
          f"{', '.join(f'{v:.1f}' for v in tracked)})")
    print(f"throughput ratio tracked/bare: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target >= 0.9")


if __name__ == "__main__":
    main()
