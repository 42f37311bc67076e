"""Figures: every plot is written (PNG and PDF) and has content; missing statistics fail clearly.

Synthetic traces (tests/trace_factory.py) carry known values, so the checks are exact and fast; the
phase-diagram background is a tiny grid cached under tmp_path.
"""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

import stabilityscope as ss
from stabilityscope import open_trace
from stabilityscope import plots as figures
from stabilityscope.errors import TraceError
from stabilityscope.plots import BackgroundSpec
from stabilityscope.theory import numerical_phase_diagram
from tests.trace_factory import synthetic_trace

TINY = BackgroundSpec(n=48, steps=30, j0_over_j=(-2.0, 2.0, 9), inv_j=(0.1, 2.5, 7))
MIN_PNG_BYTES = 15_000
MIN_PIXEL_STD = 0.04  # grey-level std of a drawn figure; a blank canvas has 0
MIN_INK = 0.01  # fraction of pixels that are not white


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    return synthetic_trace(tmp_path_factory.mktemp("std") / "run" / "trace.h5")


@pytest.fixture(scope="module")
def economy(tmp_path_factory):
    return synthetic_trace(tmp_path_factory.mktemp("eco") / "run" / "trace.h5", analysis="economy")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Never touch the user's cache: backgrounds go to this test's tmp_path."""
    monkeypatch.setenv("STABILITYSCOPE_CACHE", str(tmp_path / "cache"))


def assert_drawn(png) -> None:
    assert png.suffix == ".png" and png.stat().st_size > MIN_PNG_BYTES, png
    assert png.with_suffix(".pdf").stat().st_size > 5_000
    img = mpimg.imread(png)[..., :3].mean(-1)  # grey levels in [0, 1]
    assert img.std() > MIN_PIXEL_STD, f"{png} looks blank (std {img.std():.3f})"
    assert (img < 0.95).mean() > MIN_INK, f"{png} has almost no ink"


def test_phase_path_background_is_computed_once_and_cached(standard, tmp_path, monkeypatch):
    cache = tmp_path / "bg"
    png = figures.save_figure(figures.plot_phase_path(standard, background=TINY, cache=cache), tmp_path, "p1")[0]
    assert_drawn(png)
    files = list(cache.glob("*.h5"))
    assert [f.name for f in files] == [TINY.key("tanh")]
    assert "N48" in files[0].name and "T30" in files[0].name and "seed0" in files[0].name

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cached background was recomputed")

    monkeypatch.setattr(numerical_phase_diagram, "phase_diagram", no_recompute)
    fig = figures.plot_phase_path(standard, background=TINY, cache=cache)
    assert_drawn(figures.save_figure(fig, tmp_path, "p2")[0])
    # a different N is a different diagram
    with pytest.raises(AssertionError, match="recomputed"):
        figures.plot_phase_path(standard, background=BackgroundSpec(n=40, steps=30, j0_over_j=(-2, 2, 9),
                                                                    inv_j=(0.1, 2.5, 7)), cache=cache)


def test_background_cache_defaults_to_the_environment_folder(standard, tmp_path):
    figures.plot_phase_path(standard, background=TINY)
    assert (tmp_path / "cache" / "phase_diagrams" / TINY.key("tanh")).exists()
    assert figures.cache_dir() == tmp_path / "cache" / "phase_diagrams"


def test_phase_path_marks_start_end_and_the_optimal_checkpoint(standard):
    fig = figures.plot_phase_path(standard, background=False)
    ax = fig.axes[0]
    with open_trace(standard) as tr:
        j, j0 = tr.stat("hidden", "J"), tr.stat("hidden", "J0")
        best = int(np.argmin(tr.metric("test_loss")))
    points = {(round(float(x), 6), round(float(y), 6)) for line in ax.lines if len(line.get_xdata()) == 1
              for x, y in zip(line.get_xdata(), line.get_ydata())}
    for i in (0, best, len(j) - 1):
        assert (round(j0[i] / j[i], 6), round(1 / j[i], 6)) in points
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert f"epoch {best}" in legend and "start" in legend and "end" in legend
    assert "hidden" in legend and "head (mean-field surrogate)" in legend
    assert len([c for c in ax.get_children() if type(c).__name__ == "Annotation"]) >= 1  # direction arrows
    assert ax.get_ylim()[1] >= 2.0  # the start at 1/J = 2 is inside


def test_relu_run_draws_only_layers_on_the_relu_diagram(tmp_path):
    path = synthetic_trace(tmp_path / "relu" / "trace.h5", activation="relu")
    fig = figures.plot_phase_path(path, background=False)
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "hidden" in legend and "head" not in legend  # the head's surrogate is tanh
    assert "relu" in fig.axes[0].get_title()


@pytest.mark.parametrize("plot, missing", [("plot_layer_stability", "s_mean"), ("plot_poincare", "poincare"),
                                           ("plot_eigenvalues", "eigenvalues")])
def test_economy_trace_is_refused_with_what_is_missing_and_how_to_get_it(plot, missing, economy):
    with pytest.raises(TraceError) as err:
        getattr(figures, plot)(economy)
    msg = str(err.value)
    assert missing in msg and "analysis=economy" in msg and "analysis=standard" in msg and "hidden" in msg


@pytest.mark.parametrize("plot", ["plot_poincare", "plot_eigenvalues"])
def test_non_square_layer_is_refused(plot, standard):
    with pytest.raises(TraceError, match=r"'head'.*10.*square.*hidden"):
        getattr(figures, plot)(standard, layer="head")


def test_unknown_checkpoint_and_layer_are_refused(standard):
    with pytest.raises(TraceError, match=r"no checkpoint at epoch 99.*0, 1, 2"):
        figures.plot_poincare(standard, epochs=[0, 99])
    with pytest.raises(TraceError, match="Unknown layer 'nope'"):
        figures.plot_phase_path(standard, layers=["nope"], background=False)


def test_empty_trace_is_refused(tmp_path):
    path = synthetic_trace(tmp_path / "empty" / "trace.h5", n_checkpoints=0, status="running")
    for plot in (figures.plot_metrics, figures.plot_coupling):
        with pytest.raises(TraceError, match="0 checkpoint"):
            plot(path)


def test_chosen_checkpoints_get_one_panel_each(standard):
    fig = figures.plot_poincare(standard, epochs=[0, 15, 20])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 3
    assert titles[0].startswith("epoch 0\nfixed point") and "periodic, period 2" in titles[1]
    assert titles[2].startswith("epoch 20\nchaotic")
    eig = figures.plot_eigenvalues(standard, epochs=[5, 12])
    assert [ax.get_title().split("\n")[0] for ax in eig.axes] == ["epoch 5", "epoch 12 (optimal)"]
    for ax in eig.axes:  # the complex plane is drawn to scale
        assert ax.get_aspect() == 1.0


def test_coupling_fit_recovers_the_linear_growth(standard):
    with open_trace(standard) as tr:
        slope, icpt = figures.linear_growth_fit(tr.checkpoints, tr.stat("hidden", "J") ** 2)
    assert slope == pytest.approx(0.05, rel=1e-6) and icpt == pytest.approx(0.25, rel=1e-6)
    fig = figures.plot_coupling(standard)
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "A = 0.05 per epoch" in legend and "edge of chaos" in legend
    assert "head" not in legend  # square layers by default


def test_comparison_labels_runs_by_what_differs(tmp_path):
    paths = [synthetic_trace(tmp_path / str(i) / "trace.h5", weight_decay=wd, best_epoch=b, j2_slope=s)
             for i, (wd, b, s) in enumerate([(0.0, 8, 0.08), (3e-4, 12, 0.05), (1e-3, 16, 0.03)])]
    fig = figures.plot_comparison(paths)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["weight_decay = 0.0", "weight_decay = 0.0003", "weight_decay = 0.001"]
    png = figures.save_figure(fig, tmp_path, "comparison")[0]
    assert_drawn(png)
    with pytest.raises(TraceError, match="needs at least one"):
        figures.plot_comparison([])


def test_every_figure_is_drawn_in_png_and_pdf_with_content(standard, economy, tmp_path):
    written, skipped = figures.draw_figures(standard, tmp_path / "std", background=TINY, cache=tmp_path / "bg")
    # geometry, the SGD-complexity figures and the controller's are drawn for runs that recorded them
    # (test_explainability, tests/control)
    optional = {"geometry", "explainability", "complexity_matrix", "control"}
    assert set(written) == set(figures.FIGURES) - optional and set(skipped) == optional
    assert "train.control=edge" in skipped["control"]
    assert "analysis.geometry=true" in skipped["geometry"]
    assert all("analysis.explainability=true" in skipped[n] for n in ("explainability", "complexity_matrix"))
    for png in written.values():
        assert_drawn(png)  # names the figure that came out blank
    written, skipped = figures.draw_figures(economy, tmp_path / "eco", background=False)
    assert set(written) == {"phase_path", "coupling", "metrics"}
    assert set(skipped) == {"layer_stability", "poincare", "eigenvalues", "geometry", "explainability",
                            "complexity_matrix", "control"}
    assert all("analysis=standard" in why for name, why in skipped.items() if name not in optional)


def test_plots_leave_pyplot_and_rc_alone(standard):
    import matplotlib
    import matplotlib.pyplot as plt

    before, open_figures = dict(matplotlib.rcParams), plt.get_fignums()
    fig = figures.plot_metrics(standard)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert dict(matplotlib.rcParams) == before  # the style is applied locally
    assert plt.get_fignums() == open_figures  # no pyplot figure left open (no leak across a long sweep)


def test_chain_records_have_maps_but_no_coordinates(tmp_path):
    """An MLP block iterated as one module (kind chain) has map statistics, no weight matrix."""
    path = synthetic_trace(tmp_path / "chain" / "trace.h5", chain=True)
    legend = " ".join(t.get_text() for t in figures.plot_phase_path(path, background=False).legends[0].get_texts())
    assert "hidden" in legend and "block" not in legend
    with pytest.raises(TraceError, match="'block'.*chain.*no single weight matrix"):
        figures.plot_phase_path(path, layers=["block"], background=False)
    with pytest.raises(TraceError, match="'block'.*chain.*no single weight matrix"):
        figures.plot_eigenvalues(path, layer="block")
    fig = figures.plot_layer_stability(path)
    assert sum(ax.get_title().startswith("block:") for ax in fig.axes) == 3  # one row per iterated record
    assert "block" in figures.plot_poincare(path, layer="block").get_suptitle()
    table = ss.open_traces(path)
    assert "block/s_at_optimal" in table.columns and "block/J_at_optimal" not in table.columns
