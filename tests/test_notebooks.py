"""The analysis notebooks run top to bottom (nbclient) on small real traces, through the public API.

The traces are made here (canonical network, tanh and ReLU, data subsets, 2 epochs); the notebooks
read them from STABILITYSCOPE_TRACE(S) and draw a tiny phase-diagram background (STABILITYSCOPE_QUICK)
cached under tmp_path. Committed notebooks carry no outputs.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import stabilityscope as ss
from tests.trace_factory import real_trace

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow
ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"
NOTEBOOKS = ("01_canonical_edge_of_chaos.ipynb", "02_architectures.ipynb")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("notebook_runs")
    return {"tanh": real_trace(root, data_root, "tanh"),
            "relu": real_trace(root, data_root, "relu", "model.activation=relu")}


def execute(name: str) -> "nbformat.NotebookNode":
    nb = nbformat.read(ANALYSIS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ANALYSIS)}})
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails
    return nb


def outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})]


def text_of(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_are_stripped_and_use_the_public_api(name):
    nb = nbformat.read(ANALYSIS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "strip the outputs"
    source = "\n".join(c.source for c in code)
    imports = re.findall(r"^\s*(?:from|import) (stabilityscope\S*)", source, flags=re.M)
    assert set(imports) <= {"stabilityscope"}, imports  # `import stabilityscope as ss`, `from stabilityscope import figures`
    assert not re.search(r"\b(?:ss|figures|tr)\._\w", source)  # no private names
    assert "h5py" not in source  # traces are read through open_trace / open_traces


def test_canonical_notebook_runs_on_a_real_trace(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("STABILITYSCOPE_TRACE", str(runs["tanh"]))
    monkeypatch.setenv("STABILITYSCOPE_QUICK", "1")
    monkeypatch.setenv("STABILITYSCOPE_CACHE", str(tmp_path / "cache"))
    nb = execute(NOTEBOOKS[0])
    # phase path, coupling, metrics, layer stability, Poincaré (no eigenvalues: the run skips them)
    assert len(outputs(nb, "image/png")) == 5
    text = text_of(nb)
    with ss.open_trace(runs["tanh"]) as tr:
        best = int(np.argmin(tr.metric("test_loss")))
        assert f"optimal epoch {tr.checkpoints[best]}: test loss {tr.metric('test_loss')[best]:.4f}" in text
        assert f"J = {tr.stat('hidden', 'J')[best]:.3f}" in text
    assert "rerun with analysis.eigen=true" in text
    assert list((tmp_path / "cache" / "phase_diagrams").glob("tanh_N48_T30_*.h5"))


def test_architectures_notebook_compares_every_layer_of_every_run(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("STABILITYSCOPE_TRACES", str(Path(runs["tanh"]).parents[1] / "*" / "trace.h5"))
    monkeypatch.setenv("STABILITYSCOPE_QUICK", "1")
    monkeypatch.setenv("STABILITYSCOPE_CACHE", str(tmp_path / "cache"))
    nb = execute(NOTEBOOKS[1])
    # edge distances (1), a phase path per run (2), layer stability per run (2), the comparison (1)
    assert len(outputs(nb, "image/png")) == 6
    tables = "\n".join(o["data"]["text/plain"] for o in outputs(nb, "text/html"))
    assert "activation=relu" in tables and "activation=tanh" in tables
    for layer in ("hidden", "head"):
        assert layer in tables
    cached = sorted(p.name.split("_")[0] for p in (tmp_path / "cache" / "phase_diagrams").glob("*.h5"))
    assert cached == ["relu", "tanh"]  # each run on its own activation's diagram
