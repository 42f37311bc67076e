"""Decision-region geometry cost per checkpoint against one training epoch of the canonical run, in one process.

Times one epoch of full Fashion-MNIST (60,000 examples, batch 32) of the canonical 784-784(tanh)-10
network, then the geometry part alone of a checkpoint's measurement (``analysis.geometry=true`` minus
the same tracker without it; the default sample of ``geometry_samples`` = 1000 training inputs, and
2000 / 5000) in two states: at initialisation (J = 0.5) and with the hidden layer rescaled to J = 1.5.
Prints seconds and the ratio to the epoch time (target: ≤ 0.10).

    python benchmarks/bench_geometry.py [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from bench_tracking import median_measure_seconds  # benchmarks/ is the script's folder

from stabilityscope.config import AnalysisConfig, OptimConfig
from stabilityscope.models.dissect import dissect
from stabilityscope.models.registry import FashionFC
from stabilityscope.recording.tracking import LayerTracker
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import build_optimizer, train_epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("fashion_mnist", args.data)
    torch.manual_seed(0)
    model = FashionFC(784, 784, 10)
    opt = build_optimizer(model, OptimConfig())
    t = time.perf_counter()
    train_epoch(model, opt, data.x_train, data.y_train, 32, torch.Generator().manual_seed(0))
    epoch_s = time.perf_counter() - t
    print(f"torch threads: {torch.get_num_threads()}; one epoch (60,000 examples, batch 32): {epoch_s:.2f} s")
    base = dict(maps=False, eigen=False, weight_structure=False, meanfield=False)
    for state, target_j in {"ordered (J=0.5)": 0.5, "chaotic (J=1.5)": 1.5}.items():
        with torch.no_grad():
            w = model.hidden.weight
            w.mul_(target_j / float(w.std() * 28.0))
        plain = LayerTracker(model, dissect(model), AnalysisConfig(**base))
        t0 = median_measure_seconds(plain, model, args.repeats)
        for n in (1000, 2000, 5000):
            a = AnalysisConfig(**base, geometry=True, geometry_samples=n)
            tracker = LayerTracker(model, dissect(model), a, geometry_inputs=data.x_train[:n],
                                   geometry_labels=data.y_train[:n])
            med = median_measure_seconds(tracker, model, args.repeats) - t0
            print(f"{state:16s} geometry_samples={n:5d}: {med:6.3f} s per checkpoint = {med / epoch_s:6.3f} x epoch")


if __name__ == "__main__":
    main()
