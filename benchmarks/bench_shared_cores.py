"""Benchmark: the phase diagram and a Lyapunov spectrum on cores shared with another torch job, per OpenMP wait policy.

libgomp reads its wait policy once, when ``import torch`` loads it, so every measurement runs in a
fresh worker process with its own environment (stabilityscope.runtime explains the policy):

- policies: "spin" = libgomp's default (GOMP_SPINCOUNT=300000), what every run got before the
  package chose; "passive" = no variable set, so importing stabilityscope sets OMP_WAIT_POLICY=PASSIVE
  (the default now); optionally "short" = GOMP_SPINCOUNT=10000, a brief spin before sleeping, and
  "1 thread" = OMP_NUM_THREADS=1 (no parallel regions to wait in at all);
- conditions: "alone", and beside a competing torch job that this script starts on the same cores
  (default threads, a training-like loop of 512×512 matmuls and elementwise ops) with libgomp's
  default policy ("beside spin", a plain PyTorch job) or PASSIVE ("beside passive", e.g. a second
  stabilityscope run);
- workloads, torch's default threads (all cores): ``phase_diagram`` at N = 1000, 8 × 6 = 48 cells
  (J0/J in [−2, 3], 1/J in [0.3, 1.2]), T = 200 (seconds per diagram), and ``lyapunov_spectrum`` of
  all 784 exponents of a J = 1.5 tanh layer in float64 (ms per step; 8 steps, QR every step so that
  every step does the same work).

Each worker times each workload once after a warm-up; workers run ``--repeats`` rounds, the policies
interleaved within a round, so that changes of the background load hit every policy alike. The table
gives min and median wall time per policy and condition, then "spin / passive" under each condition
(> 1: PASSIVE is faster; alone, < 1 is the cost of PASSIVE) and the slowdown beside the job. A shared
development machine is never quiet: the load average, printed per round, says how busy it already was.

    python benchmarks/bench_shared_cores.py [--repeats 3] [--policies spin passive short "1 thread"]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = {"spin": {"GOMP_SPINCOUNT": "300000"}, "passive": {}, "short": {"GOMP_SPINCOUNT": "10000"},
            "1 thread": {"GOMP_SPINCOUNT": "300000", "OMP_NUM_THREADS": "1"}}
COMPETITORS = {"beside spin": {}, "beside passive": {"OMP_WAIT_POLICY": "PASSIVE"}}
# a training-like torch job: medium matmuls and elementwise ops, many parallel regions per second
COMPETITOR = ("import torch\na = torch.randn(512, 512); w = torch.randn(512, 512) / 23\nwhile True:\n    a = "
              "torch.tanh(a @ w) + 0.01 * torch.randn(512, 512)\n")


def worker(repeats: int) -> None:
    """Time the two workloads in this process and print one JSON line."""
    import stabilityscope as ss  # first: it sets the wait policy before torch loads (unless one is set)
    # isort: split

    import math

    import numpy as np
    import torch

    def times(fn, n: int) -> list[float]:
        fn()  # warm-up
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    # 1/J ≤ 1.2: ordered cells decay no faster than 0.83^t, so no float32 state turns denormal by T = 200
    # (deeper cells, 1/J = 2.5, reach denormals near t = 100, and denormal arithmetic, not the cores,
    # then dominates: 17.6 s against 0.55 s with flush-to-zero, 1 thread)
    x_grid, y_grid = np.linspace(-2.0, 3.0, 8), np.linspace(0.3, 1.2, 6)
    phase = times(lambda: ss.phase_diagram(x_grid, y_grid, n=1000, steps=200, device="cpu"), repeats)
    gen = torch.Generator().manual_seed(0)
    f = ss.LayerMap(torch.randn(784, 784, generator=gen, dtype=torch.float64) * 1.5 / math.sqrt(784))
    x0 = torch.randn(1, 784, generator=gen, dtype=torch.float64)
    steps = 8
    spec = times(lambda: ss.lyapunov_spectrum(f, x0, steps=steps, transient=4, reorthonormalize_every=1), repeats)
    print(json.dumps({"phase_s": phase, "spectrum_ms_per_step": [1e3 * t / steps for t in spec],
                      "policy_state": ss.runtime.WAIT_POLICY, "threads": torch.get_num_threads(),
                      "loadavg": os.getloadavg()[0]}))


def run_worker(policy: dict[str, str], repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(policy, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, __file__, "--worker", "--repeats", str(repeats)], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_competitor(policy: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(policy)
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env, stdout=subprocess.DEVNULL)
    time.sleep(3.0)  # torch imported and the loop running
    return proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="rounds; every policy runs once per round")
    p.add_argument("--policies", nargs="+", default=["spin", "passive"], choices=list(POLICIES))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(1)
        return
    keys = (("phase_s", "phase diagram", "s"), ("spectrum_ms_per_step", "spectrum step", "ms"))
    print(f"cpus={os.cpu_count()} loadavg at start={os.getloadavg()[0]:.1f}; policies {args.policies}; "
          f"{args.repeats} interleaved rounds")
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    for condition in ("alone", *COMPETITORS):
        competitor = start_competitor(COMPETITORS[condition]) if condition != "alone" else None
        try:
            for rnd in range(args.repeats):
                loads = []
                for policy in args.policies:
                    r = run_worker(POLICIES[policy], 1)
                    cell = results.setdefault((condition, policy), {k: [] for k, _, _ in keys})
                    for k, _, _ in keys:
                        cell[k] += r[k]
                    loads.append(f"{policy}: {r['threads']} threads, {r['policy_state']}, load {r['loadavg']:.1f}")
                print(f"  {condition} round {rnd + 1}: " + "; ".join(loads), flush=True)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()

    def med(v: list[float]) -> float:
        return float(sorted(v)[len(v) // 2])

    print("\nwall time per policy and condition: min / median")
    for (condition, policy), cell in results.items():
        print(f"  {condition:15s} {policy:9s} " + "   ".join(
            f"{name} {min(cell[k]):7.2f} / {med(cell[k]):7.2f} {unit}" for k, name, unit in keys))
    if "spin" in args.policies and "passive" in args.policies:
        print("\nspin / passive (> 1: PASSIVE faster), medians [mins]")
        for condition in ("alone", *COMPETITORS):
            s_, q_ = results[condition, "spin"], results[condition, "passive"]
            print(f"  {condition:15s} " + "   ".join(
                f"{name} {med(s_[k]) / med(q_[k]):5.2f}x [{min(s_[k]) / min(q_[k]):5.2f}x]" for k, name, _ in keys))
        print("\nslowdown beside the job, medians (each policy against itself alone)")
        for condition in COMPETITORS:
            for k, name, _ in keys:
                print(f"  {name:14s} {condition:15s} " + ", ".join(
                    f"{pol} {med(results[condition, pol][k]) / med(results['alone', pol][k]):5.2f}x"
                    for pol in args.policies))


if __name__ == "__main__":
    main()
