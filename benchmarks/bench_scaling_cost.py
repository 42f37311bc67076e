"""Benchmark: tracking cost per checkpoint at ``analysis=standard`` against one training step, for large models.

For the canonical network (fmnist_fc on Fashion-MNIST) and timm's resnet50, vit_base_patch16_224 and
convnext_tiny (``pretrained=False``, built for CIFAR-10's 3×32×32 inputs as the ``model=timm``
preset does: img_size = the data's size, no resize), each in its own process:

- one SGD training step on a batch of 32 real training images (forward, cross-entropy, backward,
  update; median of ``--steps`` after a warm-up);
- one checkpoint's measurement, ``LayerTracker.measure`` with the ``standard`` preset (16 real test
  inputs as start states, T = 500) over the records a run tracks (``tracked_records``);
- peak resident memory of the process after the training steps and after the measurement.

Prints per model the number of FC maps (records; square ones are iterated), the seconds, the
ratio measurement / training step against the budget of one epoch per 10 checkpoints (epoch steps
at batch 32 / 10), and a least-squares fit of the measurement time against the number of FC maps
over all models (cost linear in the maps: the per-map time should not grow with the model).

    STABILITYSCOPE_DATA=<folder> python benchmarks/bench_scaling_cost.py [--models ...] [--threads 0]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # name → (model options, dataset, training-set size)
    "fmnist_fc": ({"name": "fmnist_fc", "family": "builtin"}, "fashion_mnist", 60000),
    "resnet50": ({"name": "resnet50", "family": "timm"}, "cifar10", 50000),
    "convnext_tiny": ({"name": "convnext_tiny", "family": "timm"}, "cifar10", 50000),
    "vit_base_patch16_224": ({"name": "vit_base_patch16_224", "family": "timm"}, "cifar10", 50000),
}
BATCH = 32


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(model: str, data_root: str, steps: int, threads: int) -> None:
    """Time one training step and one standard checkpoint of ``model``; print one JSON line."""
    import stabilityscope as ss  # first: the OpenMP wait policy is set before torch loads
    # isort: split

    import statistics

    import torch
    from hydra import compose, initialize_config_dir

    from stabilityscope.cli.app import conf_dir
    from stabilityscope.config import AnalysisConfig, as_options

    if threads:
        torch.set_num_threads(threads)
    options, dataset, _ = MODELS[model]
    data = ss.load_dataset(dataset, data_root)
    x, y = data.x_train[:BATCH].float(), data.y_train[:BATCH]
    torch.manual_seed(0)
    cfg = ss.ModelConfig(**options)
    net = ss.build_model(cfg, tuple(x.shape[1:]), data.num_classes)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    train_step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step()
        times.append(time.perf_counter() - t0)
    mem_train = peak_mib()

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        analysis = as_options(compose(config_name="config", overrides=["analysis=standard"]).analysis,
                              AnalysisConfig, "analysis")
    records = ss.tracked_records(net, cfg, analysis, tuple(x.shape[1:]))
    tracker = ss.LayerTracker(net, records, analysis, probe_inputs=data.x_test[: analysis.n_inputs].float())
    t0 = time.perf_counter()
    tracker.measure(net)
    track_s = time.perf_counter() - t0
    print(json.dumps({"model": model, "maps": len(records), "square": sum(r.square for r in records),
                      "params": sum(p.numel() for p in net.parameters()), "step_s": statistics.median(times),
                      "track_s": track_s, "mem_train_mib": mem_train, "mem_track_mib": peak_mib(),
                      "threads": torch.get_num_threads(), "loadavg": os.getloadavg()[0]}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    p.add_argument("--steps", type=int, default=3, help="timed training steps (median)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.steps, args.threads)
        return
    import numpy as np

    print(f"cpus={os.cpu_count()} loadavg={os.getloadavg()[0]:.1f}; analysis=standard; batch {BATCH}")
    rows = []
    for model in args.models:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.run([sys.executable, __file__, "--worker", model, "--data", args.data, "--steps",
                               str(args.steps), "--threads", str(args.threads)], env=env, cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode:
            print(f"  {model}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        budget = MODELS[model][2] / BATCH / 10  # training steps per checkpoint at 10 checkpoints per epoch
        r["ratio"], r["budget"] = r["track_s"] / r["step_s"], budget
        rows.append(r)
        print(f"  {model:22s} {r['params'] / 1e6:6.1f} M params  {r['maps']:4d} FC maps ({r['square']:3d} square)  "
              f"step {r['step_s']:7.3f} s  checkpoint {r['track_s']:8.2f} s = {r['ratio']:8.1f} steps "
              f"(budget {budget:.0f}: {'within' if r['ratio'] <= budget else 'OVER'})  "
              f"{r['track_s'] / r['maps']:6.3f} s/map  peak RSS {r['mem_train_mib']:.0f} MiB after training, "
              f"{r['mem_track_mib']:.0f} MiB after the checkpoint  (threads {r['threads']}, load {r['loadavg']:.1f})",
              flush=True)
    if len(rows) >= 2:
        n = np.array([r["maps"] for r in rows], dtype=float)
        t = np.array([r["track_s"] for r in rows])
        slope, icpt = np.polyfit(n, t, 1)
        pred = icpt + slope * n
        print(f"\nfit checkpoint seconds = {icpt:.2f} + {slope:.4f} × FC maps; "
              f"R² = {1 - ((t - pred) ** 2).sum() / ((t - t.mean()) ** 2).sum():.3f}; "
              "residuals " + ", ".join(f"{r['model']} {tt - pp:+.2f} s" for r, tt, pp in zip(rows, t, pred)))


if __name__ == "__main__":
    main()
