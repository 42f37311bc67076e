"""Reports: write_report / write_index on synthetic traces, and the app (a real run reports at its end;
``task=report trace=<glob>``) on real data."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import stabilityscope as ss
from stabilityscope.cli.tasks import run_report_task
from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.plots import FIGURES, BackgroundSpec
from stabilityscope.reports.run import write_index, write_report
from tests.conftest import run_cli
from tests.trace_factory import synthetic_trace

TINY = BackgroundSpec(n=48, steps=30, j0_over_j=(-2.0, 2.0, 9), inv_j=(0.1, 2.5, 7))
TINY_CLI = ("phase_background.n=48", "phase_background.steps=30", "phase_background.j0_over_j.num=9",
            "phase_background.inv_j.num=7")


def linked_files(report: Path) -> list[Path]:
    """Every file a Markdown report links to, resolved against its folder."""
    return [report.parent / m for m in re.findall(r"\]\(([^)]+)\)", report.read_text())]


def optimal_epoch_in(report: Path) -> int:
    match = re.search(r"optimal checkpoint \(minimum test loss\) \| \*\*epoch (\d+)\*\*", report.read_text())
    assert match, report.read_text()[:2000]
    return int(match.group(1))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STABILITYSCOPE_CACHE", str(tmp_path / "cache"))


def test_report_has_the_key_numbers_and_every_figure(tmp_path):
    trace = synthetic_trace(tmp_path / "run" / "trace.h5", best_epoch=12)
    report = write_report(trace, tmp_path / "out", background=TINY)
    text = report.read_text()
    assert optimal_epoch_in(report) == 12
    with ss.open_trace(trace) as tr:
        j = tr.stat("hidden", "J")[12]
        assert f"| `hidden` | 32 → 32 (square) | {j:.4g} |" in text  # J at the optimum
        assert f"test accuracy {100 * tr.metric('test_acc')[12]:.2f} %" in text
        assert f"{tr.stat('hidden', 'edge_distance')[12]:.3g}" in text
        final_phase = tr.stat("hidden", "phase")[-1]
    assert final_phase == "SG" and "SG (spin glass, chaotic)" in text  # the run ends chaotic
    assert "| `head` | 32 → 10 (surrogate) |" in text
    assert "A = 0.05 per epoch" in text  # J² growth
    links = linked_files(report)
    # geometry: analysis.geometry=true only; the SGD-complexity figures: analysis.explainability=true only
    assert {p.stem for p in links} == set(FIGURES) - {"geometry", "explainability", "complexity_matrix", "control"}
    assert "Decision-region geometry: " in text and "analysis.geometry=true" in text  # listed as not drawn
    assert all(p.exists() and p.stat().st_size > 5000 for p in links)
    assert {p.suffix for p in links} == {".png", ".pdf"}
    assert "### Loss and accuracy\n" in text and "regression" not in text.lower()  # a classification run's caption


def test_text_only_report(tmp_path):
    trace = synthetic_trace(tmp_path / "run" / "trace.h5", analysis="economy")
    report = write_report(trace, tmp_path / "text", figures=False)
    assert not (tmp_path / "text" / "figures").exists() and "## Figures" not in report.read_text()
    assert optimal_epoch_in(report) == 12


def test_empty_trace_has_nothing_to_report(tmp_path):
    trace = synthetic_trace(tmp_path / "run" / "trace.h5", n_checkpoints=0, status="running")
    with pytest.raises(TraceError, match="no checkpoint yet"):
        write_report(trace, tmp_path / "out")


def test_index_compares_runs_and_links_each_report(tmp_path):
    paths = [synthetic_trace(tmp_path / "sweep" / str(i) / "trace.h5", weight_decay=wd, best_epoch=b,
                             analysis="economy") for i, (wd, b) in enumerate([(0.0, 8), (5e-4, 14)])]
    index = write_index(paths, tmp_path / "index", background=False, formats=("png",))  # PDFs: test_figures
    text = index.read_text()
    assert "The runs differ in: `optim.weight_decay`." in text
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert len(rows) == 2 and "| 0.0005 |" in rows[1] and "| 14 |" in rows[1]
    links = linked_files(index)
    assert all(p.exists() for p in links)
    assert sorted(p.name for p in links) == ["comparison.png", "report.md", "report.md"]
    assert not list((tmp_path / "index").rglob("*.pdf"))
    for sub, best in zip(sorted((tmp_path / "index" / "runs").iterdir()), (8, 14)):
        assert optimal_epoch_in(sub / "report.md") == best
        text = (sub / "report.md").read_text()  # economy traces: the map figures are listed, not drawn
        assert "Not drawn:" in text and text.count("analysis=standard") == 3


def test_report_task_needs_a_trace(compose_cfg, tmp_path):
    cfg = compose_cfg("task=report")
    with pytest.raises(ConfigError, match=r"task=report needs .*trace="):
        run_report_task(cfg, tmp_path)
    cfg = compose_cfg("task=report", f"trace={tmp_path}/nothing/*")
    with pytest.raises(TraceError, match="No trace found"):
        run_report_task(cfg, tmp_path)


@pytest.mark.slow
def test_training_reports_at_its_end_and_task_report_reads_a_glob(tmp_path, data_root):
    env = {"STABILITYSCOPE_DATA": str(data_root)}
    train = run_cli("experiment=debug", "dataset.train_subset=300", "dataset.test_subset=100", "train.epochs=2",
                    "analysis.n_inputs=8", "analysis.steps=40", "analysis.eigen=false", *TINY_CLI,
                    f"checkpoint_root={tmp_path}", cwd=tmp_path, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    (run_dir,) = [p.parent for p in tmp_path.glob("fmnist_fc-fashion_mnist/*/trace.h5")]
    report = run_dir / "report.md"
    with ss.open_trace(run_dir) as tr:
        best = int(tr.checkpoints[np.argmin(tr.metric("test_loss"))])
    assert optimal_epoch_in(report) == best
    drawn = {p.stem for p in linked_files(report) if p.suffix == ".png"}
    assert drawn == {"phase_path", "coupling", "metrics", "layer_stability", "poincare"}  # eigen=false
    assert all(p.exists() for p in linked_files(report))
    assert "Eigenvalues: The eigenvalue figure needs" in report.read_text()

    other = synthetic_trace(tmp_path / "synthetic" / "7" / "trace.h5", best_epoch=5)
    glob = f"{tmp_path}/*/*/trace.h5"  # the real run and the synthetic one
    proc = run_cli("task=report", f"trace={glob}", "figures=false", f"checkpoint_root={tmp_path}", cwd=tmp_path,
                   env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (index,) = list(tmp_path.glob("report/*/report.md"))
    assert "# Report on 2 runs" in index.read_text()
    subs = sorted(index.parent.glob("runs/*/report.md"))
    assert [optimal_epoch_in(p) for p in subs] == [best, 5]
    assert other.exists()


def test_bad_background_grid_is_refused_before_anything_runs(compose_cfg, tmp_path):
    from stabilityscope.config import validate

    with pytest.raises(ConfigError, match=r"phase_background.inv_j.start=0.0.*1/J must be > 0"):
        validate(compose_cfg("phase_background.inv_j.start=0"))
    with pytest.raises(ConfigError, match="phase_background.n=1"):
        run_report_task(compose_cfg("task=report", f"trace={tmp_path}", "phase_background.n=1"), tmp_path)
    validate(compose_cfg("phase_background.enabled=false", "phase_background.n=1"))  # not drawn: not checked
