"""Per-checkpoint tracking cost against one training epoch of the canonical run, in the same process.

Times one epoch of full Fashion-MNIST (60,000 examples, batch 32), then the tracker's measurement
(`analysis=economy|standard|full`) of the network in two states: at initialisation (ordered, J = 0.5:
the iterated map collapses to 0 and stops early) and with the hidden layer rescaled to J = 1.5
(chaotic: every orbit runs all T steps) — the cost late in a run that crossed the edge.
Prints tracking seconds and the ratio to the epoch time (target for `standard`: ≤ 0.25).

    python benchmarks/bench_tracking.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from hydra import compose, initialize_config_dir

from stabilityscope.cli.app import conf_dir
from stabilityscope.models.dissect import dissect
from stabilityscope.models.registry import FashionFC
from stabilityscope.recording.tracking import LayerTracker
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import build_optimizer, train_epoch


def analysis_cfg(name: str):
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=[f"analysis={name}"])


def median_measure_seconds(tracker: LayerTracker, model: torch.nn.Module, repeats: int) -> float:
    """Median wall seconds of one checkpoint's measurement (``tracker.measure``) over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        tracker.measure(model)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    args = ap.parse_args()
    data = load_dataset("fashion_mnist", args.data)
    torch.manual_seed(0)
    model = FashionFC(784, 784, 10)
    cfg = analysis_cfg("standard")
    opt = build_optimizer(model, cfg.optim)
    t = time.perf_counter()
    train_epoch(model, opt, data.x_train, data.y_train, 32, torch.Generator().manual_seed(0))
    epoch_s = time.perf_counter() - t
    print(f"torch threads: {torch.get_num_threads()}; one epoch (60,000 examples, batch 32): {epoch_s:.2f} s")
    states = {"ordered (J=0.5)": 0.5, "chaotic (J=1.5)": 1.5}
    for state, target_j in states.items():
        with torch.no_grad():
            w = model.hidden.weight
            w.mul_(target_j / float(w.std() * 28.0))
        for preset in ("economy", "standard", "full"):
            a = analysis_cfg(preset).analysis
            tracker = LayerTracker(model, dissect(model), a, probe_inputs=data.x_test[: a.n_inputs])
            med = median_measure_seconds(tracker, model, args.repeats)
            print(f"{state:16s} analysis={preset:9s}: {med:6.2f} s per checkpoint = {med / epoch_s:5.2f} x epoch")


if __name__ == "__main__":
    main()
