"""A ViT-B/16 ``analysis=standard`` checkpoint with and without holding settled orbits (``analysis.hold_tol``).

The setting of ``bench_scaling_cost.py``: timm's ``vit_base_patch16_224`` built for CIFAR-10's 3×32×32 inputs
(``pretrained=False``), four SGD steps on 32 real training images, then ``LayerTracker.measure`` with the
``standard`` preset (16 real test inputs as start states, T = 500). The checkpoint is measured with
``hold_tol=null`` (every orbit iterated all T steps) and with the default ``hold_tol`` (a map whose orbits have
settled at a fixed point is held there and only its tangent vectors are iterated), interleaved ``--repeat``
times in one process. Printed: CPU seconds of each (min, median), their ratio, and per map statistic the largest
difference between the two over all maps (absolute, and relative to the statistic's value).

    STABILITYSCOPE_DATA=<folder> OMP_NUM_THREADS=1 python benchmarks/bench_held_orbits.py --repeat 2
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # run from a checkout
import torch  # noqa: E402

import stabilityscope as ss  # noqa: E402  (first: the OpenMP wait policy is set before torch loads)
from stabilityscope.config import AnalysisConfig  # noqa: E402

STANDARD = AnalysisConfig(name="standard", maps=True, n_inputs=16, steps=500, weight_structure=True, eigen=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("STABILITYSCOPE_DATA", "data"))
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = ss.load_dataset("cifar10", a.data)
    torch.manual_seed(0)
    cfg = ss.ModelConfig(name="vit_base_patch16_224", family="timm")
    net = ss.build_model(cfg, (3, 32, 32), data.num_classes)
    x, y = data.x_train[:32].float(), data.y_train[:32]
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for _ in range(4):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    records = ss.tracked_records(net, cfg, STANDARD, (3, 32, 32))
    probes = data.x_test[: STANDARD.n_inputs].float()
    options = {"held": STANDARD, "all T steps": dataclasses.replace(STANDARD, hold_tol=None)}
    cpu: dict[str, list[float]] = {k: [] for k in options}
    stats: dict[str, dict] = {}
    for _ in range(a.repeat):
        for name, opts in options.items():
            tracker = ss.LayerTracker(net, records, opts, probe_inputs=probes)
            c = time.process_time()
            stats[name] = tracker.measure(net)
            cpu[name].append(time.process_time() - c)
    print(f"vit_base_patch16_224, {len(records)} records, analysis=standard, {a.threads} thread(s), "
          f"load {os.getloadavg()[0]:.1f}")
    for name, ts in cpu.items():
        print(f"  {name:12s} cpu min {min(ts):7.1f} s  median {statistics.median(ts):7.1f} s")
    print(f"  ratio (all T steps / held): min {min(cpu['all T steps']) / min(cpu['held']):.2f}x, "
          f"median {statistics.median(cpu['all T steps']) / statistics.median(cpu['held']):.2f}x")
    worst: dict[str, tuple[float, float]] = {}
    for layer, full in stats["all T steps"].items():
        for key, v in full.items():
            w = stats["held"][layer].get(key)
            if not isinstance(v, float) or not isinstance(w, float) or not (math.isfinite(v) and math.isfinite(w)):
                continue
            d = abs(v - w)
            old = worst.get(key, (0.0, 0.0))
            worst[key] = (max(old[0], d), max(old[1], d / abs(v) if v else (0.0 if d == 0 else math.inf)))
    changed = {k: v for k, v in worst.items() if v[0] > 0}
    same = sorted(k for k in worst if k not in changed)
    print(f"  identical in every map: {', '.join(same)}")
    for key, (d, r) in sorted(changed.items()):
        print(f"  {key:28s} largest difference {d:.2e} (relative {r:.1e})")
    codes = sum(int(full.get("attractor", -1) != stats["held"][layer].get("attractor", -1))
                for layer, full in stats["all T steps"].items())
    print(f"  maps whose attractor class differs: {codes}")


if __name__ == "__main__":
    main()
