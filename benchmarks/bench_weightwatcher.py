"""stabilityscope against WeightWatcher on the same weights, in the same process.

For each model (random initialisation, ``pretrained=False``, 10 classes): ViT-B/16, ConvNeXt-T, ResNet-50
(timm) and the canonical network (Fashion-MNIST 784-784(tanh)-10), three things are timed, interleaved
``--repeat`` times so that load changes hit all alike:

- ``ss.inspect(model)`` without inputs: the one-shot table (J, J0, χ, edge distance, phase, spectral
  radius of square maps);
- one ``analysis=economy`` checkpoint: the tracker's measurement of every recorded map
  (``LayerTracker.measure``), as a training run takes it;
- ``weightwatcher.WeightWatcher(model=model).analyze()`` with its defaults (0.7.x: the empirical spectral
  density of every layer and its power-law fit).

Printed per model: min and median wall and CPU seconds, the ratios WeightWatcher / ours (min and median),
and the accuracy of the table's spectral radii against the full decomposition (float64 LAPACK geev) of
the same matrices: how many were filtered estimates, the largest relative deviation and the largest
accepted residual. CPU time counts this process alone; on one thread it is the stable figure on a
shared machine, wall time what a user waits.

Usage (WeightWatcher is the optional ``benchmarks`` extra: ``pip install -e .[benchmarks]``):
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/bench_weightwatcher.py --threads 1 --repeat 3
    python benchmarks/bench_weightwatcher.py --models vit_base_patch16_224 --threads 2
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings
from typing import Callable

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # run from a checkout
import stabilityscope as ss  # noqa: E402
from stabilityscope.config import AnalysisConfig, ModelConfig  # noqa: E402
from stabilityscope.models.dissect import tracked_records  # noqa: E402
from stabilityscope.recording.tracking import LayerTracker  # noqa: E402

MODELS = ("vit_base_patch16_224", "convnext_tiny", "resnet50", "canonical")
ECONOMY = AnalysisConfig(name="economy", layers="all", meanfield=True, maps=False, n_inputs=100, steps=500,
                         weight_structure=True, eigen=False)  # conf/analysis/economy.yaml


def build(name: str) -> torch.nn.Module:
    """The model with random weights (seed 0), 10 classes, in eval mode."""
    torch.manual_seed(0)
    if name == "canonical":
        from stabilityscope.models.registry import FashionFC
        return FashionFC(784, 784, 10).eval()
    import timm
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def radius_accuracy(model: torch.nn.Module, table) -> str:
    """The table's radii against float64 geev of the same matrices: count, methods, max relative error."""
    records = {r.name: r for r in tracked_records(model, ModelConfig(), AnalysisConfig(maps=False), None)}
    rows = table[table["radius_method"] != ""]
    if rows.empty:
        return "no square map: no spectral radius in the table"
    errs = []
    for _, row in rows.iterrows():
        w = records[row["name"]].weight(model).detach().double()
        exact = float(torch.linalg.eigvals(w).abs().max())
        errs.append(abs(row["spectral_radius"] - exact) / exact)
    methods = rows["radius_method"].value_counts().to_dict()
    return (f"{len(rows)} radii ({', '.join(f'{v} {k}' for k, v in methods.items())}); "
            f"max relative deviation from float64 geev {max(errs):.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), help=f"from {MODELS} (or any timm name)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each of the three, interleaved")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import weightwatcher as ww
    except ImportError:
        sys.exit("WeightWatcher is not installed: pip install weightwatcher (the `benchmarks` extra)")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")  # WeightWatcher and powerlaw warn per layer
    print(f"torch={torch.__version__} weightwatcher={getattr(ww, '__version__', '?')} "
          f"threads={torch.get_num_threads()} cpus={os.cpu_count()} loadavg={os.getloadavg()[0]:.1f} "
          f"date={time.strftime('%Y-%m-%d %H:%M')}")
    for name in args.models:
        model = build(name)
        records = tracked_records(model, ModelConfig(), ECONOMY, None)
        tracker = LayerTracker(model, records, ECONOMY)
        runs = {"inspect": lambda: ss.inspect(model),
                "economy checkpoint": lambda: tracker.measure(model),
                "weightwatcher analyze": lambda: ww.WeightWatcher(model=model).analyze()}
        wall = {k: [] for k in runs}
        cpu = {k: [] for k in runs}
        out = {}
        for _ in range(args.repeat):
            for label, fn in runs.items():
                out[label], w, c = timed(fn)
                wall[label].append(w)
                cpu[label].append(c)
        n_maps, n_ww = len(out["inspect"]), len(out["weightwatcher analyze"])
        print(f"\n{name}: {n_maps} maps in the table, {n_ww} layers in WeightWatcher's; load {os.getloadavg()[0]:.1f}")
        base_w, base_c = wall["weightwatcher analyze"], cpu["weightwatcher analyze"]
        for label in runs:
            line = (f"  {label:22s} wall {min(wall[label]):7.2f} min {statistics.median(wall[label]):7.2f} med  "
                    f"cpu {min(cpu[label]):7.2f} min {statistics.median(cpu[label]):7.2f} med s")
            if label != "weightwatcher analyze":
                line += (f"   WeightWatcher/ours: wall {min(base_w) / min(wall[label]):5.1f}x min "
                         f"{statistics.median(base_w) / statistics.median(wall[label]):5.1f}x med, "
                         f"cpu {min(base_c) / min(cpu[label]):5.1f}x min "
                         f"{statistics.median(base_c) / statistics.median(cpu[label]):5.1f}x med")
            print(line)
        print(f"  spectral radius: {radius_accuracy(model, out['inspect'])}")


if __name__ == "__main__":
    main()
