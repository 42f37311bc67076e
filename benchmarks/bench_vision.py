"""Vision models: per-checkpoint tracking cost against epoch time, and dissection time over the model lists.

1. Tracking vs training, resnet18 (torchvision, CIFAR stem) on CIFAR-10 on the CPU: times training
   on ``--images`` training examples (batch 32, SGD) and extrapolates to the 50,000-example epoch,
   then times the tracker's measurement per checkpoint for ``analysis.layers`` = head (the default
   dissection: only ``fc``) and for all FC maps with ``model.conv1x1=true`` (``fc`` plus the 1×1
   downsampling convolutions), under ``analysis=standard`` (100 test inputs, T = 500). The
   checkpoint's evaluation passes (train and test loss) are timed separately. ``--model`` and
   ``--layers`` time other presets (e.g. ``vit_tiny_patch16_224``, whose square q/k/v/proj views
   and MLP chains are iterated maps).
2. Dissection time: every timm and torchvision model built on the meta device and dissected
   (:mod:`stabilityscope.models.coverage`), or the timings stored in a sweep's JSON (``--coverage-json``).

    python benchmarks/bench_vision.py [--images 1024] [--repeats 2]
    python benchmarks/bench_vision.py --skip-tracking --coverage-json coverage.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from bench_tracking import median_measure_seconds  # benchmarks/ is the script's folder
from hydra import compose, initialize_config_dir

from stabilityscope.cli.app import conf_dir
from stabilityscope.models.coverage import CoverageResult, all_names, sweep
from stabilityscope.models.dissect import tracked_records
from stabilityscope.models.registry import build_model
from stabilityscope.recording.tracking import LayerTracker
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import build_optimizer, evaluate, train_epoch

FULL_EPOCH = 50_000


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def bench_tracking(args: argparse.Namespace) -> None:
    data = load_dataset("cifar10", args.data, train_subset=args.images, test_subset=10_000, normalize=True)
    cfg = compose_cfg(f"model={args.model}", "dataset=cifar10", "analysis=standard")
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    opt = build_optimizer(model, cfg.optim)
    gen = torch.Generator().manual_seed(0)
    train_epoch(model, opt, data.x_train[:64], data.y_train[:64], 32, gen)  # warm-up
    t = time.perf_counter()
    train_epoch(model, opt, data.x_train, data.y_train, 32, gen)
    per_image = (time.perf_counter() - t) / len(data.x_train)
    epoch_s = per_image * FULL_EPOCH
    t = time.perf_counter()
    evaluate(model, data.x_test, data.y_test)
    test_eval = time.perf_counter() - t
    print(f"torch threads {torch.get_num_threads()}; {args.model} on CIFAR-10: training {per_image * 1e3:.1f} ms/image "
          f"→ epoch of {FULL_EPOCH} ≈ {epoch_s:.0f} s (timed on {len(data.x_train)} images); checkpoint evaluation "
          f"(train 50,000 + test 10,000 forward passes) ≈ {test_eval * 6:.0f} s")
    for layers, conv1x1 in args.layers:
        c = compose_cfg(f"model={args.model}", "dataset=cifar10", "analysis=standard", f"analysis.layers='{layers}'",
                        f"model.conv1x1={str(conv1x1).lower()}")
        records = tracked_records(model, c.model, c.analysis, data.input_shape)
        tracker = LayerTracker(model, records, c.analysis, probe_inputs=data.x_test[: c.analysis.n_inputs])
        med = median_measure_seconds(tracker, model, args.repeats)
        print(f"  analysis=standard layers={layers!r} conv1x1={conv1x1}: {len(records)} maps "
              f"({sum(r.square or r.is_map for r in records)} iterated), {med:.2f} s per checkpoint "
              f"= {med / epoch_s:.2e} x epoch")


def bench_dissection(args: argparse.Namespace) -> None:
    if args.coverage_json:
        with open(args.coverage_json) as f:
            results = [CoverageResult(**r) for r in json.load(f)]
        print(f"dissection timings from {args.coverage_json}:")
    else:
        names = all_names(sample=args.sample)
        print(f"building and dissecting {len(names)} models on the meta device ...")
        results = sweep(names)
    for lib in sorted({r.library for r in results}):
        rs = [r for r in results if r.library == lib and r.built]
        build = [r.build_seconds for r in rs]
        dis = [r.dissect_seconds for r in rs]
        print(f"  {lib:11s}: {len(rs)} models, build on meta {sum(build):.0f} s (median "
              f"{statistics.median(build) * 1e3:.0f} ms), "
              f"dissect {sum(dis):.0f} s (median {statistics.median(dis) * 1e3:.0f} ms, max {max(dis):.2f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--images", type=int, default=1024, help="training examples timed (extrapolated to 50,000)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--layers", type=lambda s: (s.split(":")[0], s.endswith(":1x1")), nargs="+",
                    default=[("head", False), ("all", True)], help="selectors to time, e.g. head all:1x1")
    ap.add_argument("--skip-tracking", action="store_true")
    ap.add_argument("--skip-dissection", action="store_true")
    ap.add_argument("--sample", action="store_true", help="dissect only the CI sample")
    ap.add_argument("--coverage-json", help="summarise the timings of a coverage sweep instead of running one")
    args = ap.parse_args()
    if not args.skip_tracking:
        bench_tracking(args)
    if not args.skip_dissection:
        bench_dissection(args)


if __name__ == "__main__":
    main()
