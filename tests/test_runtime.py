"""The OpenMP wait policy set at import: what torch's bundled libgomp actually reads, in fresh processes.

libgomp prints the settings it initialised with when OMP_DISPLAY_ENV=VERBOSE; GOMP_SPINCOUNT tells the
policies apart (0 for PASSIVE, 300000 for libgomp's default, 3e10 for ACTIVE). No timing here: the
effect on shared cores is measured in benchmarks/bench_shared_cores.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REPORT = ("import json, os, sys; from stabilityscope import runtime; "
          "print(json.dumps([runtime.WAIT_POLICY, os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules]))")


def _run(code: str, **env: str) -> tuple[list, str]:
    """Run code in a fresh interpreter without any wait-policy variable (plus ``env``): (JSON it printed, stderr)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    clean.update(OMP_DISPLAY_ENV="VERBOSE", PYTHONPATH=str(REPO), **env)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_import_sets_passive_before_torch_loads_libgomp():
    (state, policy, torch_loaded), display = _run(REPORT)
    assert (state, policy, torch_loaded) == ("set", "PASSIVE", True)
    assert "GOMP_SPINCOUNT = '0'" in display  # libgomp initialised with the passive policy


@pytest.mark.parametrize("variable, value, spin", [("OMP_WAIT_POLICY", "ACTIVE", "30000000000"),
                                                   ("GOMP_SPINCOUNT", "10000", "10000")])
def test_a_policy_the_user_set_is_kept(variable, value, spin):
    (state, policy, _), display = _run(REPORT, **{variable: value})
    assert state == "user" and policy == (value if variable == "OMP_WAIT_POLICY" else None)
    assert f"GOMP_SPINCOUNT = '{spin}'" in display


def test_torch_imported_first_keeps_its_policy_and_says_so():
    """libgomp read the environment at `import torch`; setting the variable afterwards would change
    nothing in this process, so the package leaves it unset (children keep the user's environment)."""
    (state, policy, _), display = _run("import torch; " + REPORT)
    assert (state, policy) == ("torch_first", None)
    assert "GOMP_SPINCOUNT = '300000'" in display  # libgomp's default spin
