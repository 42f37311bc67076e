"""One script for a GPU machine: do the CUDA paths agree with the CPU, and how fast are they?

(a) Agreement, CUDA against CPU on the same inputs, each within a stated tolerance:
    - the numerical phase diagram (common random numbers; the separation per cell);
    - the map measures of a 256×256 tanh layer (s, λ_max);
    - the Lyapunov spectrum (top 16 exponents) of the same layer;
    - one stacked SGD step of 4 canonical networks (weights after the step);
    - one tracked checkpoint of resnet18 on CIFAR-10-shaped inputs (J of every FC map, s of the square ones).
(b) Timings on the device:
    - the phase diagram at the original's scale (N = 10,000, 151 × 100 cells, T = 500), or the
      largest leading block of its rows that fits ``--budget-s``;
    - the batched trainer's stacked step at K = 32 and 128, in steps per second against K = 1
      (a single run on the same device);
    - ``lyapunov_spectrum`` (all N exponents, 50 steps) at N = 784 and 4096.
(c) With ``--atlas``: each ``experiment=atlas_<family>_gpu`` preset on the device (the family's usual
    size and recipe): seconds per training step and per checkpoint of its readings, on CIFAR-10-shaped
    random inputs, and the predicted hours of a whole run.
(d) One table, printed.

    python benchmarks/gpu_check.py                     # on the first CUDA device, about 5 minutes
    python benchmarks/gpu_check.py --atlas             # ... and the atlas presets, about 5 more
    python benchmarks/gpu_check.py --device cpu --quick   # the same code paths on the CPU, small sizes

A tolerance is float32 round-off grown through the computation: chaotic orbits separate
exponentially, so the map measures use short orbits; exponents and s agree to 1e-3 relative.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import numpy as np
import torch

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, ModelConfig
from stabilityscope.models.registry import FashionFC
from stabilityscope.training.batched import StackedCanonical


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    ok = torch.isfinite(a) & torch.isfinite(b)
    return float(((a - b).abs()[ok] / b.abs()[ok].clamp_min(1e-12)).max()) if ok.any() else math.nan


def agreement(device: torch.device, quick: bool) -> list[tuple[str, float, float]]:
    """(check, measured max relative difference, tolerance) rows."""
    rows = []
    cpu = torch.device("cpu")
    x, y = np.linspace(-1.5, 1.5, 7), np.linspace(0.4, 1.6, 5)
    n = 200 if quick else 1000
    pd_c = ss.phase_diagram(x, y, n=n, steps=100, seed=0, device=cpu)
    pd_d = ss.phase_diagram(x, y, n=n, steps=100, seed=0, device=device)
    ordered = torch.as_tensor(pd_c.separation) < 1e-3  # ordered cells decay to ~0: compare absolutely there
    diff = (torch.as_tensor(pd_d.separation) - torch.as_tensor(pd_c.separation)).abs()
    chaotic = ~ordered
    rel = float((diff[chaotic] / torch.as_tensor(pd_c.separation)[chaotic]).max()) if chaotic.any() else 0.0
    rows.append(("phase diagram: separation of chaotic cells (T = 100)", rel, 0.05))
    rows.append(("phase diagram: separation of ordered cells, absolute", float(diff[ordered].max()) if ordered.any()
                 else 0.0, 1e-3))

    g = torch.Generator().manual_seed(0)
    W = 1.5 * torch.randn(256, 256, generator=g) / 16
    x0 = torch.randn(8, 256, generator=g)
    mm_c = ss.map_measures(ss.LayerMap(W, None, "tanh"), x0, steps=60, seed=0)
    mm_d = ss.map_measures(ss.LayerMap(W.to(device), None, "tanh"), x0.to(device), steps=60, seed=0)
    rows.append(("map measures: s (M1), 256×256 tanh, T = 60", max_rel(mm_d.s_mean, mm_c.s_mean), 1e-3))
    rows.append(("map measures: Benettin λ_max", max_rel(mm_d.lyapunov_max, mm_c.lyapunov_max), 1e-3))
    sp_c = ss.lyapunov_spectrum(ss.LayerMap(W.double(), None, "tanh"), x0.double(), k=16, steps=60)
    sp_d = ss.lyapunov_spectrum(ss.LayerMap(W.double().to(device), None, "tanh"), x0.double().to(device), k=16,
                                steps=60)
    rows.append(("Lyapunov spectrum: top 16, float64", max_rel(sp_d.exponents, sp_c.exponents), 1e-8))

    torch.manual_seed(0)
    models = [FashionFC(784, 784, 10) for _ in range(4)]
    hyper = [(0.02, 0.5, 0.0), (0.05, 0.9, 1e-4), (0.01, 0.0, 0.0), (0.1, 0.5, 5e-4)]
    xb, yb = torch.rand(4, 32, 784, generator=g), torch.randint(0, 10, (4, 32), generator=g)
    stacks = {}
    for dev in (cpu, device):
        s = StackedCanonical(models, *zip(*hyper), device=dev)
        s.step(xb.to(dev), yb.to(dev))
        stacks[dev.type] = s
    rows.append(("stacked SGD step of 4 canonical nets: hidden weights",
                 max_rel(stacks[device.type].w1, stacks["cpu"].w1), 1e-4))

    import timm  # noqa: F401 - resnet18 comes from the registry's timm/torchvision builders

    opts = AnalysisConfig(n_inputs=4, steps=40, eigen=False)
    probes = torch.rand(4, 3, 32, 32, generator=g)
    stats = {}
    for dev in (cpu, device):
        torch.manual_seed(0)
        model = ss.build_model(ModelConfig(name="resnet18", family="torchvision"), (3, 32, 32), 10).to(dev)
        records = ss.tracked_records(model, ModelConfig(family="torchvision"), opts, (3, 32, 32))
        stats[dev.type] = ss.LayerTracker(model, records, opts, probe_inputs=probes.to(dev)).measure(model)
    j = [max_rel(torch.tensor(stats[device.type][n]["J"]), torch.tensor(stats["cpu"][n]["J"]))
         for n in stats["cpu"] if "J" in stats["cpu"][n]]
    rows.append(("resnet18 tracked checkpoint: J of every FC map", max(j), 1e-5))
    return rows


def timings(device: torch.device, quick: bool, budget_s: float) -> list[tuple[str, str]]:
    rows = []
    # (1) the phase diagram at the original's scale, row block by row block within the budget
    n, steps = (1000, 100) if quick else (10_000, 500)
    x, y = np.linspace(-2, 3, 151 if not quick else 21), np.linspace(0.1, 2.0, 100 if not quick else 10)
    done, spent = 0, 0.0
    block = max(1, len(y) // 20)
    while done < len(y) and spent < budget_s:
        _, dt = timed(lambda: ss.phase_diagram(x, y[done:done + block], n=n, steps=steps, seed=0, device=device), device)
        done, spent = done + block, spent + dt
    rows.append((f"phase diagram N = {n}, T = {steps}: {done} of {len(y)} rows × {len(x)} cells",
                 f"{spent:.1f} s ({spent / (done * len(x)) * 1e3:.2f} ms per cell)"))
    # (2) the batched trainer's stacked step
    xb = torch.rand(128, 32, 784, device=device)
    yb = torch.randint(0, 10, (128, 32), device=device)
    per_run = {}
    for k in (1, 32, 128):
        torch.manual_seed(0)
        stack = StackedCanonical([FashionFC(784, 784, 10) for _ in range(k)], [0.02] * k, [0.5] * k, [0.0] * k,
                                 device=device)
        stack.step(xb[:k], yb[:k])  # warm-up
        reps = 5 if quick else 50
        _, dt = timed(lambda: [stack.step(xb[:k], yb[:k]) for _ in range(reps)], device)
        per_run[k] = k * reps / dt
        rows.append((f"stacked step, K = {k}", f"{reps / dt:.1f} steps/s = {per_run[k]:.0f} run-steps/s "
                                               f"({per_run[k] / per_run[1]:.1f}× one run)"))
    # (3) full Lyapunov spectra
    for n_ in ((128, 256) if quick else (784, 4096)):
        W = 1.5 * torch.randn(n_, n_, device=device) / math.sqrt(n_)
        x0 = torch.randn(1, n_, device=device)
        _, dt = timed(lambda: ss.lyapunov_spectrum(ss.LayerMap(W, None, "tanh"), x0, k=None, steps=50, transient=10),
                      device)
        rows.append((f"lyapunov_spectrum N = k = {n_}, 50 steps, float32", f"{dt:.2f} s ({dt / 50 * 1e3:.1f} ms/step)"))
    return rows


ATLAS_FAMILIES = ("vit", "mixer", "resmlp", "convnext", "resnet")


def atlas_timings(device: torch.device, steps: int, quick: bool) -> list[tuple[str, str]]:
    """Each atlas ``_gpu`` preset (``_quick`` with ``quick``) on ``device``: seconds per training step (its
    model, optimiser, schedule-free, batch size) and per checkpoint (its ``analysis``), on CIFAR-10-shaped
    random inputs (the data sets do not travel to a lent machine), and the hours a whole run of the preset
    would take at that rate (a prediction, labelled so)."""
    from hydra import compose, initialize_config_dir

    from stabilityscope.cli.app import conf_dir, register_configs, register_resolvers
    from stabilityscope.config import Config, as_options
    from stabilityscope.training.trainer import build_optimizer

    register_configs()
    register_resolvers()
    rows = []
    for family in ATLAS_FAMILIES:
        preset = f"atlas_{family}_{'quick' if quick else 'gpu'}"
        with initialize_config_dir(config_dir=conf_dir(), version_base=None):
            cfg = as_options(compose("config", overrides=[f"experiment={preset}", f"train.device={device.type}"]),
                             Config)
        torch.manual_seed(0)
        model = ss.build_model(cfg.model, (3, 32, 32), 10).to(device)
        opt = build_optimizer(model, cfg.optim)
        b = cfg.train.batch_size
        x, y = torch.randn(b, 3, 32, 32, device=device), torch.randint(0, 10, (b,), device=device)

        def step() -> None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()  # warm-up (kernels, allocator)
        _, train_s = timed(lambda: [step() for _ in range(steps)], device)
        probes = torch.randn(max(cfg.analysis.n_inputs, cfg.analysis.depth_inputs), 3, 32, 32, device=device)
        records = ss.tracked_records(model, cfg.model, cfg.analysis, (3, 32, 32))
        tracker = ss.LayerTracker(model, records, cfg.analysis, probe_inputs=probes)
        tracker.measure(model)  # warm-up
        _, ckpt_s = timed(lambda: tracker.measure(model), device)
        per_step = train_s / steps
        n_train = cfg.dataset.train_subset or 50_000
        run_steps = cfg.train.epochs * math.ceil(n_train / b)
        hours = (run_steps * per_step + (cfg.train.epochs + 1) * ckpt_s) / 3600
        rows.append((preset, f"{per_step:.3g} s/step (batch {b}), {ckpt_s:.3g} s per checkpoint; predicted whole run "
                             f"({cfg.train.epochs} epochs, {run_steps} steps): {hours:.2g} h"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (a check of the script itself)")
    parser.add_argument("--budget-s", type=float, default=150.0, help="seconds for the large phase diagram")
    parser.add_argument("--atlas", action="store_true", help="also train each atlas _gpu preset briefly (c)")
    parser.add_argument("--atlas-steps", type=int, default=50, help="optimiser steps per atlas preset")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# stabilityscope GPU check on {name}, torch {torch.__version__}\n")
    print("| agreement with the CPU | max relative difference | tolerance | ok |\n|---|---|---|---|")
    for check, value, tol in agreement(device, args.quick):
        print(f"| {check} | {value:.3g} | {tol:g} | {'yes' if value <= tol else 'NO'} |")
    print("\n| timing | result |\n|---|---|")
    for what, result in timings(device, args.quick, args.budget_s):
        print(f"| {what} | {result} |")
    if args.atlas:
        print("\n| atlas preset | on the device |\n|---|---|")
        for what, result in atlas_timings(device, args.atlas_steps, args.quick):
            print(f"| {what} | {result} |")


if __name__ == "__main__":
    main()
