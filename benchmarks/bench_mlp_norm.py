"""M1 of an MLP block in closed form against autograd's full Jacobians, same process.

A ViT-Base MLP block (timm ``Mlp``: Linear(768, 3072) → GELU → Linear(3072, 768)) read as a map of one
token, 16 start states (the ``standard`` preset's), float32: :meth:`ProbedModuleMap.jacobian_norm` (the
closed form φ'ᵀ((W1W1ᵀ)∘(W2ᵀW2))φ' of :func:`~stabilityscope.dynamics.module_maps.mlp_jacobian_norm`)
against :meth:`ModuleMap.jacobian_norm` (vmapped ``jacrev``, the path every chain took before). Prints
seconds per call (min over ``--repeats`` after a warm-up), the ratio and the largest relative difference.

    python benchmarks/bench_mlp_norm.py [--dim 768] [--hidden 3072] [--states 16] [--threads 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import stabilityscope  # noqa: F401  first: its OpenMP wait policy applies before torch loads

# isort: split
import torch
from timm.layers import Mlp

from stabilityscope.dynamics.maps import ModuleMap
from stabilityscope.dynamics.module_maps import ProbedModuleMap


def best_seconds(fn, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn(x)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(x)
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--hidden", type=int, default=3072)
    ap.add_argument("--states", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    block = Mlp(args.dim, args.hidden).eval().requires_grad_(False)
    x = torch.randn(args.states, args.dim)
    with torch.no_grad():
        closed_s, closed = best_seconds(ProbedModuleMap(block, (args.dim,)).jacobian_norm, x, args.repeats)
        auto_s, auto = best_seconds(ModuleMap(block, (args.dim,)).jacobian_norm, x, args.repeats)
    rel = float(((closed - auto) / auto).abs().max())
    print(f"MLP {args.dim}→{args.hidden}→{args.dim}, {args.states} states, {args.threads} thread(s): closed form "
          f"{closed_s:.3f} s, autograd {auto_s:.3f} s, ratio {auto_s / closed_s:.1f}, max relative difference "
          f"{rel:.1e}")


if __name__ == "__main__":
    main()
