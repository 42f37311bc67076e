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
number the 2% budget applies to. The steps and the readings are timed in turn, round after round, and each
ratio is the median over rounds of the ratio within a round: a machine whose load changes during the run
moves both sides of a ratio alike. Ratios only mean something within one run.

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


def paired(step: Callable[[], object], per: int, readings: dict[str, Callable[[], object]],
           repeats: int) -> tuple[float, dict[str, tuple[float, float]]]:
    """Round-robin timing: each round times ``step`` (``per`` training steps) and then every reading once.

    Returns the median seconds of one step, and per reading (median seconds, median over rounds of
    reading seconds / step seconds in the same round).
    """
    step()
    for fn in readings.values():
        fn()
    steps, times = [], {k: [] for k in readings}
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        steps.append((time.perf_counter() - t) / per)
        for k, fn in readings.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    ratios = {k: (statistics.median(v), statistics.median(r / s for r, s in zip(v, steps))) for k, v in times.items()}
    return statistics.median(steps), ratios


def report(name: str, step_s: float, readings: dict[str, tuple[float, float]], every: int) -> None:
    print(f"\n{name}: one training step {1e3 * step_s:.3f} ms (median); controller update every {every} steps")
    print(f"  {'statistic':<40} {'ms per reading':>15} {'reading / step':>15} {'overhead per step':>18}")
    for stat, (s, ratio) in readings.items():
        print(f"  {stat:<40} {1e3 * s:>15.3f} {ratio:>15.4f} {ratio / every:>17.4%}")


def canonical(root: str, repeats: int, every: int) -> None:
    cfg = composed()
    data = load_dataset("fashion_mnist", root, train_subset=3200)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    opt = build_optimizer(model, cfg.optim)
    x, y = data.x_train.reshape(len(data.x_train), -1), data.y_train
    stack = StackedCanonical([model], [cfg.optim.lr], [cfg.optim.momentum], [1e-4], torch.device("cpu"))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n = 50  # steps per round
    weights = stack.matrices(0)
    readers = {stat: edge_statistic(model, stat, "hidden", probe_inputs=data.x_test[:1]) for stat in ("J2", "chi")}
    readings = {f"{stat} of hidden (from the "
                "weights)": (lambda r=r: r.read(model, weights)) for stat, r in readers.items()}

    def hand() -> None:
        for b in range(n):
            idx = perm[32 * b:32 * (b + 1)]
            stack.step(x[idx].unsqueeze(0), y[idx].unsqueeze(0))

    report("canonical network, hand-written SGD step (the app's)", *paired(hand, n, readings, repeats), every)
    auto = lambda: train_steps(model, opt, data.x_train, y, 32, perm, 0, n)  # noqa: E731
    report("canonical network, autograd + torch.optim.SGD", *paired(auto, n, readings, repeats), every)


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
    n = 2  # steps per round
    c = cfg.control
    chi = edge_statistic(model, "chi", probe_inputs=data.x_test[:1], conv1x1=cfg.model.conv1x1)
    gain = edge_statistic(model, "gain", probe_inputs=data.x_test[: c.probe_inputs], probes=c.probes)
    readings = {f"chi of {len(chi.maps)} FC maps (from the weights)": lambda: chi.read(model),
                f"gain of {len(gain.maps)} blocks ({c.probe_inputs} inputs x {c.probes} "
                "dirs)": lambda: gain.read(model)}
    step = lambda: train_steps(model, opt, data.x_train, data.y_train, cfg.train.batch_size, perm, 0, n,  # noqa: E731
                               augment, loss_fn)
    report("ConvNeXt (experiment=atlas_convnext), AdamW, batch "
           f"{cfg.train.batch_size}", *paired(step, n, readings, repeats),
           every)


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
