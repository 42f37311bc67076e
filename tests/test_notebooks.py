"""The analysis notebooks run top to bottom (nbclient) on small real traces, through the public API.

The traces are made here (canonical network, tanh and ReLU, data subsets, 2 epochs); the notebooks
read them from STABILITYSCOPE_TRACE(S) and draw a tiny phase-diagram background (STABILITYSCOPE_QUICK)
cached under tmp_path. The scaling notebook reads two sweeps from STABILITYSCOPE_SCALING_SWEEP and
STABILITYSCOPE_DECAY_SWEEP: the reduced lr and weight-decay presets run through the launcher
(conftest ``reduced_sweeps``), and synthetic sweeps whose plateaus bracket the edge (the λ* path, which
a few epochs cannot reach). Committed notebooks carry no outputs.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import stabilityscope as ss
from tests.trace_factory import real_trace, relaxing_j2, synthetic_trace

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow
ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"
NOTEBOOKS = ("01_canonical_edge_of_chaos.ipynb", "02_architectures.ipynb", "03_scaling_laws.ipynb",
             "04_own_training_loop.ipynb", "05_linear_explainability.ipynb", "06_decision_geometry.ipynb",
             "07_spline_init.ipynb")


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
    # `import stabilityscope as ss`, `from stabilityscope import figures`
    assert set(imports) <= {"stabilityscope"}, imports
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


@pytest.fixture(scope="module")
def scaling_sweeps(tmp_path_factory):
    """Two small sweeps for the scaling notebook: lr × batch (the scaling law) and weight decay × seed
    (the plateau), synthetic traces whose J² follows the model dJ²/d(epoch) = ρ(c − 2·wd·J²), with
    plateaus that bracket the edge."""
    root = tmp_path_factory.mktemp("scaling_sweeps")
    n, c = 1000, 0.02
    job = 0
    for lr in (0.01, 0.02, 0.04):
        for batch in (16, 32):
            rho = lr * n / (0.5 * batch)
            synthetic_trace(root / "scaling" / str(job) / "trace.h5", epochs=20, analysis="economy", lr=lr,
                            batch_size=batch, train_subset=n, j2=relaxing_j2(rho, c, 0.0))
            job += 1
    lr = 0.32  # the same c; a large ρ = 20 per epoch, so 30 epochs reach every plateau c/(2·wd)
    job = 0
    for wd in (0.0, 0.005, 0.0075, 0.015):  # the model's λ* = c/2 = 0.01
        for seed, f in enumerate((0.97, 1.03)):
            synthetic_trace(root / "decay" / str(job) / "trace.h5", epochs=30, analysis="economy", lr=lr,
                            train_subset=n, weight_decay=wd, seed=seed,
                            j2=relaxing_j2(lr * n / (0.5 * 32), c * f, wd))
            job += 1
    return {"scaling": root / "scaling", "decay": root / "decay"}


def test_scaling_notebook_measures_the_laws_and_recommends(scaling_sweeps, monkeypatch):
    monkeypatch.setenv("STABILITYSCOPE_SCALING_SWEEP", str(scaling_sweeps["scaling"]))
    monkeypatch.setenv("STABILITYSCOPE_DECAY_SWEEP", str(scaling_sweeps["decay"]))
    nb = execute(NOTEBOOKS[2])
    # scaling fits, collapse, J² curves; the plateau and the test metrics against decay
    assert len(outputs(nb, "image/png")) == 5
    assert "not drawn" not in text_of(nb)
    text = text_of(nb)
    scaling = ss.analyze_sweep(scaling_sweeps["scaling"])
    decay = ss.analyze_sweep(scaling_sweeps["decay"], c=scaling.combined.c)
    assert f"C = {scaling.combined.C:.4g} per epoch" in text
    assert f"λ*: weight_decay = {decay.decay.weight_decay_star:.4g}" in text
    rec = ss.Recommendation.from_analysis(100, scaling, decay, n_train=60000)
    assert rec.weight_decay_source == "measured"
    assert "python -m stabilityscope " + " ".join(rec.overrides()) in text
    tables = "\n".join(o["data"]["text/plain"] for o in outputs(nb, "text/html"))
    assert "used_in_fits" in tables and "j2_plateau_mean" in tables


def test_scaling_notebook_on_reduced_sweeps_run_by_the_launcher(reduced_sweeps, monkeypatch):
    monkeypatch.setenv("STABILITYSCOPE_SCALING_SWEEP", str(reduced_sweeps["lr"]))
    monkeypatch.setenv("STABILITYSCOPE_DECAY_SWEEP", str(reduced_sweeps["decay"]))
    nb = execute(NOTEBOOKS[2])
    text = text_of(nb)
    scaling = ss.analyze_sweep(reduced_sweeps["lr"])
    assert "10 runs from" in text and f"C = {scaling.combined.C:.4g} per epoch" in text
    # 4 epochs cannot reach a plateau: λ* is not claimed, and the guideline falls back to the model's c/2
    decay = ss.analyze_sweep(reduced_sweeps["decay"], c=scaling.combined.c)
    assert not np.isfinite(decay.decay.weight_decay_star) and "λ*: weight_decay = nan" in text
    rec = ss.Recommendation.from_analysis(100, scaling, decay, n_train=60000)
    assert rec.weight_decay_source == "model" and rec.weight_decay == pytest.approx(scaling.combined.c / 2)
    assert "python -m stabilityscope " + " ".join(rec.overrides()) in text
    assert len(outputs(nb, "image/png")) >= 4  # fits, collapse, J² curves, plateau/metrics against decay


def test_own_training_loop_notebook_records_a_timm_model(data_root, tmp_path, monkeypatch):
    run_dir = tmp_path / "own_loop"
    monkeypatch.setenv("STABILITYSCOPE_DATA", str(data_root))
    monkeypatch.setenv("STABILITYSCOPE_RUN_DIR", str(run_dir))
    monkeypatch.setenv("STABILITYSCOPE_QUICK", "1")
    monkeypatch.setenv("STABILITYSCOPE_CACHE", str(tmp_path / "cache"))
    nb = execute("04_own_training_loop.ipynb")
    assert len(outputs(nb, "image/png")) == 2  # the phase path and the metrics
    with ss.open_trace(run_dir) as tr:
        assert tr.status == "finished" and tr.checkpoints.tolist() == [0, 1, 2]
        assert {"blocks.0.attn.qkv.q", "blocks.1.mlp", "head"} <= set(tr.layers)
        text = text_of(nb)
        assert f"J {tr.stat('blocks.0.attn.qkv.q', 'J')[-1]:6.3f}" in text
        assert f"epoch 2: test loss {tr.metric('test_loss')[-1]:.4f}" in text


def test_decision_geometry_notebook_on_real_runs(tmp_path_factory, data_root, monkeypatch):
    root = tmp_path_factory.mktemp("geometry_runs")
    canonical = real_trace(root, data_root, "geometry", "analysis.geometry=true", "analysis.geometry_samples=200",
                           "analysis.maps=false")
    toy = real_trace(root, data_root, "toy", "dataset=toy2d", "model=toy_mlp", "train.epochs=3",
                     "analysis.geometry=true", "analysis.maps=false")
    monkeypatch.setenv("STABILITYSCOPE_GEOMETRY_TRACE", str(canonical))
    monkeypatch.setenv("STABILITYSCOPE_TOY_RUN", str(toy))
    nb = execute("06_decision_geometry.ipynb")
    assert len(outputs(nb, "image/png")) == 2  # plot_geometry, plot_decision_regions
    text = text_of(nb)
    assert "occupied regions: 7; arrangement bound: 7" in text and "sigmoid c(0.1) = 2.197" in text
    with ss.open_trace(canonical) as tr:
        j2 = tr.stat("hidden", "J") ** 2
        assert f"hidden: J² {j2[0]:.3f} → {j2[-1]:.3f}" in text
    assert "toy run: test accuracy" in text


def test_linear_explainability_notebook_on_the_quick_preset(tmp_path, data_root, monkeypatch):
    from tests.conftest import run_cli

    done = run_cli("experiment=sgd_complexity_fmnist_quick", f"dataset.root={data_root}",
                   f"checkpoint_root={tmp_path / 'ck'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (trace,) = (tmp_path / "ck").glob("*/*/trace.h5")
    monkeypatch.setenv("STABILITYSCOPE_EXPLAIN_TRACE", str(trace))
    nb = execute("05_linear_explainability.ipynb")
    assert len(outputs(nb, "image/png")) == 3  # plot_explainability, plot_complexity_matrix, plot_metrics
    text = text_of(nb)
    assert "XOR                  I(F;Y) =" in text and "μ = -1.0000" in text  # XOR: μ = −1 bit
    assert "independent errors   I(F;Y) =  0.53" in text
    summary = ss.explainability.explainability_summary(trace)
    assert f"I(L;Y) = {summary['info_L_Y']:.4f} bits" in text
    assert f"linear phase (μ/I(F;Y) >= 0.9) up to step {summary['linear_phase_end_step']}" in text
    with ss.open_trace(trace) as tr:
        assert tr.step_schedule and tr.steps[-1] == 2 * 63  # 2,000 examples / 32 = 63 steps per epoch


def test_spline_init_notebook_on_the_quick_presets(tmp_path, data_root, monkeypatch):
    """Both quick Spline-FC sweeps through the launcher (Abalone: 4 runs; Fashion-MNIST subsets: 2), then
    notebook 07."""
    from tests.conftest import run_cli

    sweeps = {}
    for name in ("abalone", "fmnist"):
        done = run_cli("-m", f"experiment=spline_{name}_quick", f"dataset.root={data_root}",
                       f"checkpoint_root={tmp_path / name}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        (sweeps[name],) = (tmp_path / name).glob("multirun/*")
    monkeypatch.setenv("STABILITYSCOPE_SPLINE_ABALONE", str(sweeps["abalone"]))
    monkeypatch.setenv("STABILITYSCOPE_SPLINE_FMNIST", str(sweeps["fmnist"]))
    nb = execute("07_spline_init.ipynb")
    assert len(outputs(nb, "image/png")) == 3  # Abalone and Fashion-MNIST comparisons, the two hidden-layer paths
    text = text_of(nb)
    exact = re.search(r"max \|network − MARS\| = (\S+); widened to 256: (\S+)", text)
    assert exact and float(exact.group(1)) < 1e-10 and float(exact.group(2)) < 1e-10
    table = ss.init_comparison.compare_inits(sweeps["abalone"], targets=("mars", 4.7))
    mars = table[(table.init == "mars") & (table.target == "mars")].iloc[0]
    assert mars.reached == mars.runs == 2 and mars.epochs_mean == 0  # the spline start is the MARS model
    assert ss.init_comparison.markdown_table(table).splitlines()[2] in text
    curves = ss.init_comparison.init_curves(sweeps["fmnist"])
    assert sorted(c.init for c in curves) == ["mars", "random"] and not curves[0].regression
    spline = next(c for c in curves if c.init == "mars")
    with ss.open_trace(spline.path) as tr:
        j = tr.stat("hidden", "J")
        assert f"mars   hidden: J {j[0]:.3f} → {j[-1]:.3f}" in text
        assert tr.attrs["mars_units"] <= 784 and 0 < tr.attrs["mars_test_acc"] <= 1
