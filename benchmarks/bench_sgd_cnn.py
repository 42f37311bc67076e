"""Training and evaluation time of ``sgd_cnn`` on CIFAR-10 (SGD-complexity), for planning experiments.

Times ``--steps`` SGD steps of batch ``--batch`` (the trainer's own ``train_epoch``, after ``--warmup``
steps) on the binary task ``vehicles_vs_animals`` with normalised 32×32 inputs, and one forward-only
pass over the 10,000 test images (the trainer's ``evaluate``). It extrapolates to seconds per
50,000-example epoch. The baseline, measured in the same run on the same data, is ``eoc_cnn`` (the
other CIFAR CNN of the registry): the printed ratio is what carries over between machines.

    python benchmarks/bench_sgd_cnn.py [--steps 50] [--warmup 5] [--batch 64] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from stabilityscope.config import ModelConfig, OptimConfig
from stabilityscope.models.registry import build_model
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import build_optimizer, evaluate, resolve_device, train_epoch

FULL_EPOCH = 50_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(name: str, data, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(seconds per training step, seconds for the forward-only test pass) of model ``name``."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=512, activation="relu"), data.input_shape, data.num_classes)
    model = model.to(device)
    opt = build_optimizer(model, OptimConfig())  # SGD, lr 0.02, momentum 0.5
    gen = torch.Generator().manual_seed(0)
    n_warm, n_timed = args.warmup * args.batch, args.steps * args.batch
    train_epoch(model, opt, data.x_train[:n_warm], data.y_train[:n_warm], args.batch, gen)
    _sync(device)
    t = time.perf_counter()
    loss = train_epoch(model, opt, data.x_train[n_warm:n_warm + n_timed], data.y_train[n_warm:n_warm + n_timed],
                       args.batch, gen)
    float(loss)  # waits for the last step
    step_s = (time.perf_counter() - t) / args.steps
    evaluate(model, data.x_test[:args.batch], data.y_test[:args.batch])  # warm-up of the eval path
    _sync(device)
    t = time.perf_counter()
    evaluate(model, data.x_test, data.y_test)  # returns floats: synchronised
    return step_s, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    ap.add_argument("--steps", type=int, default=50, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed training steps first")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    ap.add_argument("--no-baseline", action="store_true", help="skip the eoc_cnn baseline")
    args = ap.parse_args()
    device = resolve_device(args.device)
    data = load_dataset("cifar10", args.data, train_subset=(args.warmup + args.steps) * args.batch,
                        test_subset=10_000, normalize=True, binarize="vehicles_vs_animals").to(device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} timed steps "
          f"after {args.warmup}; CIFAR-10 vehicles_vs_animals, {len(data.x_test)} test images")
    names = ["sgd_cnn"] + ([] if args.no_baseline else ["eoc_cnn"])
    results = {name: time_model(name, data, args, device) for name in names}
    for name, (step_s, test_s) in results.items():
        epoch_s = step_s * FULL_EPOCH / args.batch
        print(f"  {name}: {step_s * 1e3:.1f} ms/step → {epoch_s:.0f} s per {FULL_EPOCH}-example epoch; "
              f"forward-only test pass {test_s:.2f} s")
    if len(results) == 2:
        print(f"  sgd_cnn / eoc_cnn: training step {results['sgd_cnn'][0] / results['eoc_cnn'][0]:.2f}×, "
              f"test pass {results['sgd_cnn'][1] / results['eoc_cnn'][1]:.2f}×")


if __name__ == "__main__":
    main()
