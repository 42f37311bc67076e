"""The OpenMP wait policy, chosen when stabilityscope is imported and before it imports torch.

torch runs its CPU kernels (and MKL's, through GNU OpenMP) on a pool of OpenMP threads. Between
parallel regions libgomp lets an idle worker spin: by default up to 300,000 iterations (a few ms)
before it sleeps. On cores shared with another process (a second run by the same user, a notebook
beside a sweep, a laptop) the spinning workers hold the cores the others need, and every parallel
region can lose whole scheduler time slices. ``OMP_WAIT_POLICY=PASSIVE`` puts idle workers to sleep
at once (GOMP_SPINCOUNT 0). Measured on 2 cores already loaded by other jobs (load average 4–12),
medians of 3 interleaved runs in each of two sessions (benchmarks/bench_shared_cores.py): the phase
diagram (N = 1000, 48 cells, T = 200, 2 threads) took 9.5–9.8 s with the default spin against
1.0–1.2 s with PASSIVE, and beside one more torch job 15–18 s against 1.3–4.4 s. LAPACK-heavy work
gains little: a step of a 784-exponent float64 spectrum took 0.45–0.9 s with 2 threads under either
policy, and 78–85 ms with one thread, the setting for an overloaded machine (``OMP_NUM_THREADS=1``
or ``torch.set_num_threads(1)``).

libgomp reads its environment once, when the library is loaded, which ``import torch`` does. So the
package sets ``OMP_WAIT_POLICY=PASSIVE`` in ``os.environ`` at import, before any of its modules imports
torch, and only where the choice is still open:

- the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``: theirs applies, untouched (libgomp's own
  default is ``GOMP_SPINCOUNT=300000``);
- torch was imported before stabilityscope: libgomp has already read the environment, so nothing is
  set (setting it would only mislead); import stabilityscope first, or export the variable.

Child processes (subprocesses, DataLoader workers) inherit the variable. ``WAIT_POLICY`` says
which case applied.
"""
from __future__ import annotations

import os
import sys

DEFAULT_WAIT_POLICY = "PASSIVE"
USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # either one is the user's choice of policy


def apply_wait_policy() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` if neither variable is set and torch is not loaded yet.

    Returns:
        "set" (the package set it), "user" (the user's variables apply) or "torch_first" (torch was
        imported earlier: libgomp keeps whatever the environment held then).
    """
    if any(name in os.environ for name in USER_VARIABLES):
        return "user"
    if "torch" in sys.modules:
        return "torch_first"
    os.environ["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
    return "set"


WAIT_POLICY = apply_wait_policy()  # at the package's first import, before torch
