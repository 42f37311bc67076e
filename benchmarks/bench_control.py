"""The weight-decay controller's cost per update against a training step, measured in one run.

Two networks, each at the settings its controlled experiment trains with:

- the canonical network (784-784(tanh)-10, SGD, batch 32): one step of the app's hand-written SGD step
  and one of autograd + torch.optim.SGD, against reading J² and χ of the hidden layer;
- the ConvNeXt family of the atlas (``experiment=atlas_convnext``: convnext_atto, patch 2, 32×32 CIFAR-10,
  AdamW, batch 128, crop + flip, label smoothing): one training step against reading χ of every FC map
  below the head (the median the controller holds) and the RMS gain of every trunk block from
  ``control.probe_inputs`` inputs × ``control.probes`` directions.

Prints seconds (medians over repeats) and two ratios per statistic: one reading against one training step,
and the controller's overhead per training step at its update interval (reading / (every × step)), the
number the 2% budget applies to. Ratios only mean something within one run (the same machine and load).

    python benchmarks/bench_control.py [--repeats 5] [--every-canonical 100] [--every-convnext 79]
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from typing import Callable

import torch
from hydra import compose, initialize_config_dir

from stabilityscope.cli.app import conf_dir
from stabilityscope.config import Config, as_options
from stabilityscope.control.statistics import edge_statistic
from stabilityscope.models.registry import build_model
from stabilityscope.training.data import augment_batch, load_dataset
from stabilityscope.training.stacked import StackedCanonical
from stabilityscope.training.trainer import build_optimizer, loss_function, train_steps


def composed(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return as_options(compose(config_name="config", overrides=list(overrides)), Config)


def median_seconds(fn: Callable[[], object], repeats: int, per: int = 1) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` calls (after one warm-up), divided by ``per``."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / per


def report(name: str, step_s: float, readings: dict[str, float], every: int) -> None:
    print(f"\n{name}: one training step {1e3 * step_s:.3f} ms; controller update every {every} steps")
    print(f"  {'statistic':<34} {'ms per reading':>15} {'reading / step':>15} {'overhead per step':>18}")
    for stat, s in readings.items():
        print(f"  {stat:<34} {1e3 * s:>15.3f} {s / step_s:>15.4f} {s / (every * step_s):>17.4%}")


def canonical(root: str, repeats: int, every: int) -> None:
    cfg = composed()
    data = load_dataset("fashion_mnist", root, train_subset=3200)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    opt = build_optimizer(model, cfg.optim)
    x, y = data.x_train.reshape(len(data.x_train), -1), data.y_train
    stack = StackedCanonical([model], [cfg.optim.lr], [cfg.optim.momentum], [1e-4], torch.device("cpu"))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n = 100  # steps per timing
    hand = median_seconds(lambda: [stack.step(x[perm[32 * b:32 * (b + 1)]].unsqueeze(0), y[perm[32 * b:32 * (b + 1)]].unsqueeze(0))
                                   for b in range(n)], repeats, n)
    auto = median_seconds(lambda: train_steps(model, opt, data.x_train, y, 32, perm, 0, n), repeats, n)
    weights = stack.matrices(0)
    readings = {}
    for stat in ("J2", "chi"):
        reader = edge_statistic(model, stat, "hidden", probe_inputs=data.x_test[:1])
        readings[f"{stat} of hidden (from the weights)"] = median_seconds(lambda: reader.read(model, weights), repeats * 4)
    report("canonical network, hand-written SGD step (the app's)", hand, readings, every)
    report("canonical network, autograd + torch.optim.SGD", auto, readings, every)


def convnext(root: str, repeats: int, every: int) -> None:
    cfg = composed("experiment=atlas_convnext")
    d = cfg.dataset
    data = load_dataset(d.name, root, train_subset=1280, test_subset=64, normalize=d.normalize)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    opt = build_optimizer(model, cfg.optim)
    gen = torch.Generator().manual_seed(0)
    augment = functools.partial(augment_batch, generator=gen, pad_value=data.pad_value)
    loss_fn = loss_function(data, cfg.train.label_smoothing)
    perm = torch.randperm(len(data.x_train), generator=gen)
    n = 4
    step = median_seconds(lambda: train_steps(model, opt, data.x_train, data.y_train, cfg.train.batch_size, perm, 0, n,
                                              augment, loss_fn), repeats, n)
    c = cfg.control
    readings = {}
    chi = edge_statistic(model, "chi", probe_inputs=data.x_test[:1], conv1x1=cfg.model.conv1x1)
    readings[f"chi of {len(chi.maps)} FC maps (from the weights)"] = median_seconds(lambda: chi.read(model), repeats)
    gain = edge_statistic(model, "gain", probe_inputs=data.x_test[: c.probe_inputs], probes=c.probes)
    readings[f"gain of {len(gain.maps)} blocks ({c.probe_inputs} inputs x {c.probes} dirs)"] = \
        median_seconds(lambda: gain.read(model), repeats)
    report(f"ConvNeXt (experiment=atlas_convnext), AdamW, batch {cfg.train.batch_size}", step, readings, every)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--every-canonical", type=int, default=100)
    ap.add_argument("--every-convnext", type=int, default=79)
    ap.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s)")
    canonical(args.data, args.repeats, args.every_canonical)
    convnext(args.data, args.repeats, args.every_convnext)


if __name__ == "__main__":
    main()
