"""CPU-hours of EOC-training's sweep presets on this machine, from timed samples of their real work.

A full preset takes hours to days of CPU; this script times what a preset is made of and multiplies:
for a single run (a preset without a sweep, e.g. eoc_reference) it times the ordinary trainer's steps
(`training.train_epoch` on 200 batches); for every batched group the launcher would form
(`stabilityscope.cli.sweep.batch_groups`: one group per batch size, at most ``batching.max_group`` runs),
it times optimiser steps of a stacked network of that size
(`StackedCanonical.step`, the batched trainer's step, on real Fashion-MNIST batches), and it times one
checkpoint of a run (full train + test evaluation, `analysis=economy` tracking, state and trace
writing). A group's time is Σ over its epochs of steps_per_epoch × t_step(runs still training) plus
its runs' checkpoints × t_checkpoint. CPU-hours = wall hours × the torch threads used.

    python benchmarks/estimate_presets.py [--steps 30] [--presets eoc_scaling_lr eoc_weight_decay ...]
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from stabilityscope.cli.app import conf_dir
from stabilityscope.cli.sweep import batch_groups
from stabilityscope.models.registry import FashionFC
from stabilityscope.training.batched import StackedCanonical
from stabilityscope.training.data import load_dataset
from stabilityscope.training.schedule import checkpoint_epochs
from stabilityscope.training.trainer import Run, RunState, train_epoch

PRESETS = ("eoc_reference", "eoc_scaling_lr", "eoc_scaling_momentum", "eoc_scaling_batch", "eoc_same_ratio",
           "eoc_rescaled_time", "eoc_weight_decay")


def _expand(value: str) -> list[str]:
    """The values of one sweeper parameter: a,b,c or range(n) or glob(pattern) over conf/eoc_case."""
    value = str(value)
    if value.startswith("range("):
        return [str(v) for v in range(*map(int, value[6:-1].split(",")))]
    if value.startswith("glob("):
        names = sorted(p.stem for p in (Path(conf_dir()) / "eoc_case").glob("*.yaml"))
        import fnmatch

        return [n for n in names if fnmatch.fnmatch(n, value[5:-1])]
    return value.split(",")


def preset_jobs(name: str) -> list:
    """The composed config of every job of the preset's sweep (as `-m experiment=<name>` launches them)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        base = compose(config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True)
        params = OmegaConf.select(base, "hydra.sweeper.params") or {}
        keys = list(params)
        combos = itertools.product(*(_expand(params[k]) for k in keys)) if keys else [()]
        jobs = [compose(config_name="config", overrides=[f"experiment={name}", *(f"{k}={v}" for k, v in zip(keys, c))])
                for c in combos]
    GlobalHydra.instance().clear()
    return jobs


class StepClock:
    """Seconds per stacked step for (runs K, batch B), measured once per pair on real data."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        self.x, self.y, self.steps, self.cache = x.reshape(len(x), -1), y, steps, {}

    def __call__(self, k: int, batch: int) -> float:
        if (k, batch) not in self.cache:
            torch.manual_seed(0)
            stack = StackedCanonical([FashionFC(784, 784, 10) for _ in range(k)], [0.01] * k, [0.5] * k,
                                     [1e-4] * k, torch.device("cpu"))
            idx = torch.randint(0, len(self.x), (self.steps + 2, k, batch))
            for i in range(2):  # warm-up
                stack.step(self.x[idx[i]], self.y[idx[i]])
            start = time.perf_counter()
            for i in range(2, self.steps + 2):
                stack.step(self.x[idx[i]], self.y[idx[i]])
            self.cache[(k, batch)] = (time.perf_counter() - start) / self.steps
        return self.cache[(k, batch)]


def run_step_seconds(cfg, data, steps: int = 200) -> float:
    """Seconds per step of an ordinary single run (autograd + torch.optim.SGD), as `python -m stabilityscope` trains."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(cfg, Path(tmp), data=data)
        B = int(cfg.train.batch_size)
        x, y = data.x_train[: steps * B], data.y_train[: steps * B]
        train_epoch(run.model, run.opt, x[: 10 * B], y[: 10 * B], B, run.generator)  # warm-up
        start = time.perf_counter()
        float(train_epoch(run.model, run.opt, x, y, B, run.generator))
        return (time.perf_counter() - start) / steps


def checkpoint_seconds(cfg, data, repeats: int = 3) -> float:
    """One checkpoint of one run on the full data (evaluation, economy tracking, state, trace row)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(cfg, Path(tmp), data=data)
        writer = run.new_writer()
        times = []
        for e in range(repeats):
            t = time.perf_counter()
            run.checkpoint(RunState(e, 0, 0.0))
            times.append(time.perf_counter() - t)
        writer.close("finished")
    return sorted(times)[len(times) // 2]


def group_seconds(cfgs: list, n_train: int, clock: StepClock, t_ckpt: float) -> float:
    batch = int(cfgs[0].train.batch_size)
    steps_per_epoch = math.ceil(n_train / batch)
    ends = Counter(int(c.train.epochs) for c in cfgs)
    seconds, active, done = 0.0, len(cfgs), 0
    for end in sorted(ends):  # runs leave the stack when their epochs are done
        seconds += (end - done) * steps_per_epoch * clock(active, batch)
        active -= ends[end]
        done = end
    sched = [checkpoint_epochs(int(c.train.epochs), c.train.checkpoints.kind, c.train.checkpoints.every,
                               c.train.checkpoints.num, list(c.train.checkpoints.epochs)) for c in cfgs]
    return seconds + sum(len(s) for s in sched) * t_ckpt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--steps", type=int, default=30, help="timed steps per (runs, batch size)")
    ap.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    args = ap.parse_args()
    data = load_dataset("fashion_mnist", args.data)
    threads = torch.get_num_threads()
    clock = StepClock(data.x_train, data.y_train, args.steps)
    t_ckpt = checkpoint_seconds(preset_jobs("eoc_scaling_lr")[0], data)
    print(f"torch threads {threads}; one checkpoint (economy, 60,000 + 10,000 evaluated): {t_ckpt:.2f} s")
    for name in args.presets:
        jobs = preset_jobs(name)
        if len(jobs) == 1:  # a single run, the ordinary trainer, with the preset's own tracking
            cfg = jobs[0]
            steps = math.ceil(len(data.x_train) / cfg.train.batch_size) * cfg.train.epochs
            sched = cfg.train.checkpoints
            n_ckpt = len(checkpoint_epochs(int(cfg.train.epochs), sched.kind, sched.every, sched.num,
                                           list(sched.epochs)))
            wall = steps * run_step_seconds(cfg, data) + n_ckpt * checkpoint_seconds(cfg, data)
            sizes = "single run"
        else:
            gs = [[cfg for cfg, _ in g] for g in batch_groups([(cfg, None) for cfg in jobs])]
            wall = sum(group_seconds(g, len(data.x_train), clock, t_ckpt) for g in gs)
            sizes = "+".join(str(len(g)) for g in gs)
        print(f"{name:22s} {len(jobs):3d} runs in groups {sizes:20s} {wall / 3600:8.1f} h wall = "
              f"{wall * threads / 3600:8.1f} CPU-hours")
    steps = ", ".join(f"K={k} B={b}: {1e3 * s:.1f} ms" for (k, b), s in sorted(clock.cache.items()))
    print(f"stacked step times: {steps}")


if __name__ == "__main__":
    main()
