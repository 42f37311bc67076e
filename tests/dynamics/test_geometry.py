"""Decision-region geometry (FC-geometry, docs/science/secondary.md): analytic cases, invariants, the closed-form
gradient share against torch.func, tracking, the toy data set and subsampling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, Config, DatasetConfig, ModelConfig, validate
from stabilityscope.errors import ConfigError
from stabilityscope.models.dissect import dissect
from stabilityscope.models.registry import FashionFC, ToyMLP, build_model
from stabilityscope.recording.tracking import LayerTracker
from stabilityscope.training.data import load_dataset, two_spirals
from stabilityscope.training.subsample import apply_subsample, load_reference, logit_margins, subsample_indices

geo = ss.geometry
TOL = dict(rel=1e-5, abs=1e-6)  # float64 identities


def _lines() -> tuple[torch.Tensor, torch.Tensor]:
    """Three generic lines in R²: x = 0.1, y = −0.2, x + y = 0.5 (no two parallel, not concurrent)."""
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([-0.1, 0.2, -0.5], dtype=torch.float64)
    return W, b


def _grid(lo: float = -5, hi: float = 5, n: int = 201) -> torch.Tensor:
    g = torch.linspace(lo, hi, n, dtype=torch.float64)
    return torch.cartesian_prod(g, g)  # (n², 2)


def test_three_generic_lines_cut_the_plane_into_seven_regions():
    W, b = _lines()
    assert geo.count_patterns(geo.activation_patterns(W, b, _grid())) == 7
    assert geo.arrangement_bound(3, 2) == 7
    # two parallel lines and a third: only 6 regions, below the generic bound
    Wp = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert geo.count_patterns(geo.activation_patterns(Wp, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64),
                                                      _grid())) == 6


@pytest.mark.parametrize("H,d,expected", [(3, 2, 7), (4, 2, 11), (5, 3, 26), (10, 1, 11), (3, 5, 8),
                                          (784, 784, 2 ** 784)])
def test_arrangement_bound(H, d, expected):
    assert geo.arrangement_bound(H, d) == expected
    assert geo.log_arrangement_bound(H, d) == pytest.approx(math.log(expected), rel=1e-9)


def test_log_bound_of_a_huge_arrangement():
    # 784 hyperplanes in R^784 → 2^784 regions; in R^2 → 1 + 784 + C(784, 2)
    assert geo.log_arrangement_bound(784, 784) == pytest.approx(784 * math.log(2), rel=1e-9)
    assert geo.log_arrangement_bound(784, 2) == pytest.approx(math.log(1 + 784 + 784 * 783 / 2), rel=1e-9)


def test_signed_distance_is_euclidean():
    W = torch.tensor([[3.0, 4.0]], dtype=torch.float64)  # ‖w‖ = 5; line 3x + 4y − 5 = 0
    b = torch.tensor([-5.0], dtype=torch.float64)
    X = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.6, 0.8]], dtype=torch.float64)
    assert geo.signed_distances(W, b, X).flatten().tolist() == pytest.approx([-1.0, 4.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("alpha", [0.25, 3.0, 10.0])
def test_scaling_keeps_hyperplanes_and_shrinks_bands(alpha):
    torch.manual_seed(0)
    W, b = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    X = torch.randn(300, 5, dtype=torch.float64)
    assert torch.allclose(geo.signed_distances(alpha * W, alpha * b, X), geo.signed_distances(W, b, X))
    assert torch.equal(geo.activation_patterns(alpha * W, alpha * b, X), geo.activation_patterns(W, b, X))
    for act in ("tanh", "sigmoid"):
        h, h_a = geo.band_halfwidth(W, act, 0.1), geo.band_halfwidth(alpha * W, act, 0.1)
        assert torch.allclose(h_a, h / alpha)
    # larger weights → narrower bands → fewer samples in them
    n_small = geo.in_band(W, b, X, "tanh", 0.1).sum()
    n_big = geo.in_band(10 * W, 10 * b, X, "tanh", 0.1).sum()
    assert n_big < n_small


def test_band_constants():
    assert geo.band_constant("sigmoid", 0.1) == pytest.approx(2.197, abs=5e-4)  # ln 9
    assert geo.band_constant("sigmoid", 0.1) == pytest.approx(math.log(9), rel=1e-12)
    assert geo.band_constant("tanh", 0.1) == pytest.approx(0.5 * math.log(9), rel=1e-12)
    # the band is exactly where the output stays in the inner (1 − 2δ) of its range
    c = geo.band_constant("tanh", 0.1)
    assert math.tanh(c) == pytest.approx(1 - 2 * 0.1, rel=1e-12)
    assert 1 / (1 + math.exp(-geo.band_constant("sigmoid", 0.05))) == pytest.approx(0.95, rel=1e-12)
    assert math.isnan(geo.band_constant("relu", 0.1))


@pytest.mark.parametrize("delta", [0.0, 0.5, -0.1, 0.7, float("nan")])
def test_delta_outside_the_open_interval_is_refused(delta):
    with pytest.raises(ConfigError, match=r"delta=.*\(0, 0\.5\)"):
        geo.band_constant("tanh", delta)
    with pytest.raises(ConfigError):
        geo.layer_geometry(torch.eye(2), None, torch.zeros(3, 2), "tanh", delta)


def test_relu_units_report_the_active_fraction():
    W, b = _lines()
    X = _grid()
    g = geo.layer_geometry(W, b, X, "relu", 0.1)
    assert torch.isnan(g.halfwidth).all()
    assert torch.equal(g.in_band, geo.preactivations(W, b, X) > 0)
    assert g.summary()["in_band_fraction"] == pytest.approx(float((geo.preactivations(W, b, X) > 0).double().mean()))


def test_non_flat_input_is_refused_with_the_layer_name():
    with pytest.raises(ConfigError, match="conv1.*flat feature vector"):
        geo.layer_geometry(torch.randn(4, 3), None, torch.randn(5, 3, 8, 8), "tanh", 0.1, layer="conv1")


def _two_layer(seed: int = 0, act: str = "tanh", bias: bool = True) -> tuple:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(16, 6, generator=g, dtype=torch.float64) * 1.5
    b = torch.randn(16, generator=g, dtype=torch.float64) if bias else None
    V = torch.randn(4, 16, generator=g, dtype=torch.float64)
    c = torch.randn(4, generator=g, dtype=torch.float64)
    X = torch.randn(64, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (64,), generator=g)
    return W, b, V, c, X, y


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_closed_form_first_layer_share_equals_torch_func_per_sample_gradients(act, bias):
    W, b, V, c, X, y = _two_layer(act=act, bias=bias)
    phi = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[act]

    def loss(Wb: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w = Wb[:, :-1] if bias else Wb
        z = w @ x + (Wb[:, -1] if bias else 0)
        return torch.nn.functional.cross_entropy((V @ phi(z) + c)[None], t[None])

    Wb = torch.cat([W, b[:, None]], 1) if bias else W
    per_sample = geo.per_sample_weight_gradients(loss, Wb, X, y, chunk=20)  # (n, H, d[+1])
    rows_func = per_sample.square().sum(-1)  # (n, H)
    grad_z = geo.first_layer_output_gradients(W, b, act, V, c, X, y)
    rows_closed = geo.row_gradient_norms(X, grad_z, bias=bias)
    assert torch.allclose(rows_closed, rows_func, rtol=1e-10, atol=1e-14)
    mask = geo.in_band(W, b, X, act, 0.1)
    share_func = float((rows_func * mask).sum() / rows_func.sum())
    g = geo.layer_geometry(W, b, X, act, 0.1, grad_z=grad_z)
    assert g.gradient_share == pytest.approx(share_func, rel=1e-10)
    if act == "relu":  # inactive ReLU units pass no gradient: the active samples carry all of it
        assert g.gradient_share == pytest.approx(1.0, abs=1e-12)
    else:
        assert 0.0 < g.gradient_share < 1.0


def test_tracker_gradient_share_matches_the_closed_form(one_thread):
    torch.manual_seed(0)
    model = FashionFC(784, 64, 10, "tanh", init_J=2.0).double()
    X = torch.rand(200, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (200,))
    a = AnalysisConfig(maps=False, eigen=False, weight_structure=False, geometry=True, geometry_delta=0.1)
    tracker = LayerTracker(model, dissect(model), a, geometry_inputs=X, geometry_labels=y)
    stats = tracker.measure(model)["hidden"]
    W, V, c = model.hidden.weight.detach(), model.head.weight.detach(), model.head.bias.detach()
    g = geo.layer_geometry(W, None, X.flatten(1), "tanh", 0.1,
                           grad_z=geo.first_layer_output_gradients(W, None, "tanh", V, c, X.flatten(1), y))
    for k, v in g.summary().items():
        assert stats[k] == pytest.approx(v, rel=1e-9), k
    assert stats["band_halfwidth_mean"] == pytest.approx(float((0.5 * math.log(9) / W.norm(dim=1)).mean()), rel=1e-9)
    assert math.isnan(tracker.measure(model)["head"]["in_band_fraction"])  # no activation after the head: no band


def test_tracker_refuses_a_convolution_and_names_it():
    a = AnalysisConfig(maps=False, eigen=False, weight_structure=False, geometry=True)
    conv = nn.Sequential(nn.Conv2d(1, 8, 1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 28 * 28, 10))
    records = dissect(conv, conv1x1=True)  # the 1×1 convolution recorded as an FC map
    assert [r.kind for r in records] == ["conv1x1", "linear"]
    with pytest.raises(ConfigError, match=r"layer '0'.*not a fully connected layer on flat feature vectors"):
        LayerTracker(conv, records, a)
    LayerTracker(conv, records[1:], a)  # the flat Linear alone is fine


@pytest.mark.parametrize("build,key", [
    (lambda: Config(analysis=AnalysisConfig(geometry_delta=0.5)), "analysis.geometry_delta"),
    (lambda: Config(dataset=DatasetConfig(subsample="random", subsample_fraction=0.0)), "dataset.subsample_fraction"),
    (lambda: Config(dataset=DatasetConfig(subsample="random", subsample_fraction=1.5)), "dataset.subsample_fraction"),
    (lambda: Config(dataset=DatasetConfig(subsample="boundary", subsample_fraction=0.5)),
     "dataset.subsample_reference")])
def test_config_bad_values_are_refused(build, key):  # the options refuse them when built
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(build())


def test_two_spirals_and_toy_mlp():
    x, y = two_spirals(2000, seed=0)
    assert x.shape == (2000, 2) and set(np.unique(y)) == {0, 1}
    assert np.abs(x).max() < 1.3 and 0.4 < y.mean() < 0.6
    x2, y2 = two_spirals(2000, seed=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    clean = two_spirals(2000, seed=0, label_noise=0.0)[1]
    assert (clean != y).mean() == pytest.approx(0.05, abs=0.015)  # the flipped labels
    data = load_dataset("toy2d", "unused", train_subset=300, test_subset=100)
    assert data.x_train.shape == (300, 2) and data.x_test.shape == (100, 2) and data.input_shape == (2,)
    model = build_model(ModelConfig(name="toy_mlp", width=12), (2,), 2)
    assert isinstance(model, ToyMLP) and model(data.x_test).shape == (100, 2)
    assert [r.name for r in dissect(model)] == ["hidden", "head"]


def test_subsample_indices():
    m = torch.tensor([5.0, 0.1, 3.0, 0.2, 9.0, 0.05])
    assert subsample_indices("boundary", 0.5, 6, margins=m).tolist() == [1, 3, 5]
    r0, r1 = (subsample_indices("random", 0.5, 1000, seed=s) for s in (0, 1))
    assert len(r0) == 500 and len(torch.unique(r0)) == 500 and not torch.equal(r0, r1)
    assert torch.equal(subsample_indices("random", 0.5, 1000, seed=0), r0)
    assert len(subsample_indices("random", 1.0, 7)) == 7
    for bad in (0.0, 1.01, -0.5):
        with pytest.raises(ConfigError, match="subsample_fraction"):
            subsample_indices("random", bad, 10)


def test_boundary_subsample_keeps_the_smallest_margins_and_checks_the_reference(tmp_path):
    data = load_dataset("toy2d", "unused", train_subset=400, test_subset=50)
    torch.manual_seed(3)
    ref = build_model(ModelConfig(name="toy_mlp", width=12), (2,), 2)
    torch.save({"model": ref.state_dict()}, tmp_path / "ref.pt")
    cfg_m = ModelConfig(name="toy_mlp", width=12)
    kept = apply_subsample(data, DatasetConfig(name="toy2d", subsample="boundary", subsample_fraction=0.25,
                                               subsample_reference=str(tmp_path / "ref.pt")), cfg_m, seed=0)
    margins = logit_margins(load_reference(tmp_path / "ref.pt", cfg_m, (2,), 2), data.x_train)
    assert len(kept.x_train) == 100
    assert float(logit_margins(ref.eval(), kept.x_train).max()) <= float(margins.sort().values[99]) + 1e-6
    assert torch.equal(kept.x_test, data.x_test)
    with pytest.raises(ConfigError, match="does not match the model"):
        apply_subsample(data, DatasetConfig(name="toy2d", subsample="boundary", subsample_fraction=0.5,
                                            subsample_reference=str(tmp_path / "ref.pt")),
                        ModelConfig(name="toy_mlp", width=20), seed=0)
    with pytest.raises(ConfigError, match="does not exist"):
        apply_subsample(data, DatasetConfig(name="toy2d", subsample="boundary", subsample_fraction=0.5,
                                            subsample_reference=str(tmp_path / "nope")), cfg_m, seed=0)


@pytest.mark.parametrize("overrides,named", [
    (("dataset.subsample=boundary", "dataset.subsample_fraction=0.5"), "dataset.subsample_reference"),
    (("dataset.subsample=random", "dataset.subsample_fraction=0"), "dataset.subsample_fraction"),
    (("analysis.geometry=true", "analysis.geometry_delta=0.6"), "analysis.geometry_delta"),
])
def test_cli_refuses_bad_geometry_and_subsample_values_before_training(tmp_path, overrides, named):
    from tests.conftest import run_cli

    proc = run_cli(*overrides, f"checkpoint_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and named in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("**/trace.h5"))  # nothing trained


def test_subsampled_runs_train_alone_in_a_sweep():
    from stabilityscope.training.batched import batching_obstacle

    assert batching_obstacle(Config()) is None
    assert batching_obstacle(Config(dataset=DatasetConfig(subsample="random", subsample_fraction=0.5))) == \
        "dataset.subsample=random"


def test_toy_run_records_geometry_and_reports_it(tmp_path):
    from stabilityscope.analysis.saved_run import load_run_model
    from stabilityscope.plots.geometry import plot_decision_regions, plot_geometry
    from stabilityscope.reports.run import write_report
    from stabilityscope.training.trainer import Run

    cfg = Config(dataset=DatasetConfig(name="toy2d", train_subset=300, test_subset=100),
                 model=ModelConfig(name="toy_mlp", width=8),
                 analysis=AnalysisConfig(name="economy", maps=False, eigen=False, geometry=True, geometry_samples=200))
    cfg.train.epochs, cfg.train.device, cfg.optim.lr = 2, "cpu", 0.1
    Run(cfg, tmp_path / "run").execute()
    with ss.open_trace(tmp_path / "run") as tr:
        for s in geo.GEOMETRY_STATS:
            assert np.isfinite(tr.stat("hidden", s)).all(), s
        assert 1 <= tr.stat("hidden", "occupied_patterns").max() <= geo.arrangement_bound(8, 2)
        final = load_run_model(tmp_path / "run")[0].hidden.weight.detach()  # the state of the last checkpoint
        assert tr.stat("hidden", "band_halfwidth_mean")[-1] == pytest.approx(
            float((0.5 * math.log(9) / torch.linalg.vector_norm(final, dim=1)).mean()), rel=1e-5)
        plot_geometry(tr)
    report = write_report(tmp_path / "run", tmp_path / "out", background=False)
    text = report.read_text()
    assert "## Decision-region geometry (FC-geometry; our instantiation)" in text and "figures/geometry.png" in text
    model, _ = load_run_model(tmp_path / "run")
    data = load_dataset("toy2d", "unused", train_subset=300)
    fig = plot_decision_regions(model, data.x_train, data.y_train, resolution=60)
    assert len(fig.axes[0].collections) > 8  # regions, boundary, 8 hyperplanes and their bands, the points
    with pytest.raises(ConfigError, match="2-D input"):
        plot_decision_regions(model, torch.zeros(5, 3), torch.zeros(5, dtype=torch.long))
