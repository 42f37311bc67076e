"""Spline-FC's initialisation (model.init=mars), the tabular MLP, regression training and the init comparison."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import stabilityscope as ss
from stabilityscope.analysis.collection import run_summary
from stabilityscope.analysis.init_comparison import InitCurve, compare_inits, comparison_groups, time_to_target
from stabilityscope.config import (
    AnalysisConfig,
    Config,
    DatasetConfig,
    MarsConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from stabilityscope.errors import ConfigError, FitError
from stabilityscope.models.registry import TabularMLP, build_model
from stabilityscope.models.spline import fit_mars
from stabilityscope.models.spline_init import check_spline_init, spline_initialise
from stabilityscope.recording.trace import METRICS, REGRESSION_METRICS
from stabilityscope.training.stacked import stacked_step_obstacle
from stabilityscope.training.trainer import Run, evaluate_regression, load_state, saved_state_keys
from tests.conftest import compose_with_hydra

ECONOMY = AnalysisConfig(name="economy", maps=False, eigen=False, weight_structure=False)


def _spline_data(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """y = 2·relu(x0 − 0.3) − relu(0.1 − x1) + 0.5·x2 + noise on x ~ U(−1, 1)³: a MARS-shaped target."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1
    y = 2 * torch.relu(x[:, 0] - 0.3) - torch.relu(0.1 - x[:, 1]) + 0.5 * x[:, 2]
    return x, y + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)


def _mlp(width: int, depth: int = 1, outputs: int = 1, d: int = 3) -> TabularMLP:
    torch.manual_seed(0)
    cfg = ModelConfig(name="tabular_mlp", width=width, depth=depth, activation="relu", init="mars")
    return build_model(cfg, (d,), outputs).double()


# ------------------------------------------------------------------------------------------- the model


def test_tabular_mlp_layers_and_initial_phase_coordinates():
    torch.manual_seed(0)
    m = build_model(ModelConfig(name="tabular_mlp", width=500, depth=3, activation="relu", init_J=1.4142,
                                init_J0=0.5), (1, 10, 50), 2)
    assert [n for n, _ in m.named_children()] == ["flatten", "hidden", "hidden2", "hidden3", "act", "head"]
    assert m.hidden.weight.shape == (500, 500) and m.hidden3.weight.shape == (500, 500) and m.head.out_features == 2
    for layer in m.hidden_layers():
        j0, j = ss.phase_coordinates(layer.weight)
        assert abs(float(j) - 1.4142) < 0.02 and abs(float(j0) - 0.5) < 0.25  # Normal(J0/N, J²/N)
        assert float(layer.bias.detach().abs().max()) == 0.0
    x = torch.randn(4, 1, 10, 50)
    h = x.flatten(1)
    for layer in m.hidden_layers():
        h = torch.relu(layer(h))
    torch.testing.assert_close(m(x), m.head(h))


# --------------------------------------------------------------------------- the spline initialisation


@pytest.mark.parametrize("depth", [1, 3])
def test_spline_init_computes_the_mars_fit_exactly(depth):
    """Depth 1: the MARS units; deeper layers start as the identity (relu(I·h) = h for h ≥ 0)."""
    x, y = _spline_data()
    model = _mlp(width=40, depth=depth).requires_grad_(False)
    init = spline_initialise(model, ModelConfig(name="tabular_mlp", width=40, depth=depth, activation="relu",
                                                init="mars", mars=MarsConfig(knots=16)), x, y[:, None], "regression")
    fit = init.fit
    assert fit.n_units <= 40 and {t.feature for t in fit.terms} >= {0, 1, 2}
    x_new = torch.rand(300, 3, dtype=torch.float64) * 2.4 - 1.2  # beyond the training range too
    torch.testing.assert_close(model(x_new), fit.predict(x_new).reshape(-1, 1), rtol=0, atol=1e-10)
    assert init.attrs["mars_units"] == fit.n_units and init.attrs["mars_terms"] == len(fit.terms)
    assert init.attrs["mars_train_r2"] == pytest.approx(fit.r2) and init.attrs["mars_train_r2"] > 0.99
    # the padding units: outgoing 0, incoming small (std widen_scale/√d)
    pad = model.hidden.weight[fit.n_units:]
    assert float(model.head.weight[:, fit.n_units:].abs().max()) == 0.0
    assert 0.01 < float(pad.std()) * math.sqrt(3) < 0.2 and float(model.hidden.bias[fit.n_units:].abs().max()) == 0


def test_spline_init_of_a_classifier_uses_one_hot_targets_and_scores_its_test_accuracy():
    x, y = _spline_data(600)
    labels = (y > 0.3).long() + (y > 1.0).long()  # 3 classes
    model = _mlp(width=60, outputs=3)
    init = spline_initialise(model, ModelConfig(name="tabular_mlp", width=60, activation="relu", init="mars"),
                             x[:400], labels[:400], "classification", x_test=x[400:], y_test=labels[400:])
    onehot = torch.nn.functional.one_hot(labels[:400], 3).double()
    assert init.fit.n_outputs == 3
    torch.testing.assert_close(init.fit.predict(x[:400]), fit_mars(x[:400], onehot).predict(x[:400]))
    out = model(x[400:])
    torch.testing.assert_close(out, init.fit.predict(x[400:]), rtol=0, atol=1e-10)
    assert init.attrs["mars_test_acc"] == pytest.approx(float((out.argmax(1) == labels[400:]).double().mean()))


def test_spline_init_refuses_models_it_cannot_build():
    with pytest.raises(ConfigError, match=r"no bias.*model=tabular_mlp model.width=784") as e:
        check_spline_init(ModelConfig(name="fmnist_fc", activation="relu", init="mars"))
    assert "supported: tabular_mlp" in str(e.value) and "toy_mlp" in str(e.value)
    with pytest.raises(ConfigError, match=r"needs model.activation=relu, got 'tanh'"):
        check_spline_init(ModelConfig(name="tabular_mlp", activation="tanh", init="mars"))
    with pytest.raises(ConfigError, match=r"toy_mlp has one hidden layer, model.depth=2"):
        check_spline_init(ModelConfig(name="toy_mlp", activation="relu", depth=2, init="mars"))
    with pytest.raises(ConfigError, match=r"timm model 'resnet18'"):
        check_spline_init(ModelConfig(name="resnet18", family="timm", activation="relu", init="mars"))
    check_spline_init(ModelConfig(name="fmnist_fc", init="random"))  # a random init needs nothing


def test_spline_init_refuses_a_too_narrow_model_and_a_fit_without_terms():
    x, y = _spline_data()
    narrow = ModelConfig(name="tabular_mlp", width=3, activation="relu", init="mars")
    with pytest.raises(ConfigError, match=r"units .* but model.width=3; set model.width >= \d+"):
        spline_initialise(_mlp(3), narrow, x, y[:, None], "regression")
    wide = ModelConfig(name="tabular_mlp", width=40, activation="relu", init="mars")
    model = _mlp(40)
    before = model.hidden.weight.clone()
    with pytest.raises(FitError, match="MARS selected no term"):  # constant targets: nothing to fit
        spline_initialise(model, wide, x, torch.full((len(x), 1), 3.0, dtype=torch.float64), "regression")
    assert torch.equal(model.hidden.weight, before)  # no silent half-initialised model


# ---------------------------------------------------------------------------- regression in the trainer


def _abalone_cfg(init: str = "random", **train) -> Config:
    return Config(model=ModelConfig(name="tabular_mlp", width=32, activation="relu", init=init),
                  dataset=DatasetConfig(name="abalone", train_subset=600, test_subset=300),
                  optim=OptimConfig(name="adam", lr=1e-3),
                  train=TrainConfig(epochs=2, batch_size=64, device="cpu", **train), analysis=ECONOMY)


def _root(cfg: Config, data_root) -> Config:
    cfg.dataset.root = str(data_root)
    return cfg


def test_regression_run_records_mse_and_r2_and_no_accuracy(tmp_path, data_root):
    cfg = _root(_abalone_cfg(), data_root)
    run = Run(cfg, tmp_path / "run")
    assert run.execute() == "finished"
    with ss.open_trace(tmp_path / "run") as tr:
        assert tr.loss == "mse" and tr.is_regression and tr.attrs["init"] == "random"
        assert set(tr.metrics) == set(REGRESSION_METRICS) and not {"train_acc", "test_acc"} & set(tr.metrics)
        np.testing.assert_array_equal(tr.metric("test_mse"), tr.metric("test_loss"))
        with pytest.raises(ss.TraceError, match="regression run.*no accuracy"):
            tr.metric("test_acc")
        test_mse, test_r2 = tr.metric("test_loss")[-1], tr.metric("test_r2")[-1]
        summary = run_summary(tr)
    # an independent evaluation of the last saved state (numpy, float64)
    state = load_state(tmp_path / "run", saved_state_keys(tmp_path / "run")[-1], torch.device("cpu"))
    w = {k: v.double().numpy() for k, v in state["model"].items()}
    x, y = run.data.x_test.double().numpy(), run.data.y_test.double().numpy()
    pred = np.maximum(x @ w["hidden.weight"].T + w["hidden.bias"], 0) @ w["head.weight"].T + w["head.bias"]
    sse = float(((pred - y) ** 2).sum())
    assert test_mse == pytest.approx(sse / len(y), rel=1e-6)
    assert test_r2 == pytest.approx(1 - sse / float(((y - y.mean()) ** 2).sum()), rel=1e-6)
    assert summary["final_test_r2"] == pytest.approx(test_r2) and "final_test_acc" not in summary


def test_mars_init_run_starts_at_the_fit_and_records_it(tmp_path, data_root):
    cfg = _root(_abalone_cfg("mars"), data_root)
    Run(cfg, tmp_path / "mars").execute()
    with ss.open_trace(tmp_path / "mars") as tr:
        a = tr.attrs
        assert a["init"] == "mars" and a["mars_terms"] >= 1 and a["mars_units"] <= 32
        # checkpoint 0 is the MARS model itself (float32 weights) and starts the clock at the fit's seconds
        assert tr.metric("test_mse")[0] == pytest.approx(a["mars_test_mse"], rel=1e-5)
        assert tr.metric("test_r2")[0] == pytest.approx(a["mars_test_r2"], rel=1e-4)
        assert tr.wall_time[0] == pytest.approx(a["mars_fit_seconds"]) and a["mars_fit_seconds"] > 0
        assert tr.metric("train_r2")[0] == pytest.approx(a["mars_train_r2"], abs=1e-5)


def test_a_resumed_mars_run_does_not_fit_again(tmp_path, data_root, monkeypatch):
    cfg = _root(_abalone_cfg("mars"), data_root)
    Run(cfg, tmp_path / "r").execute()
    cfg.train.epochs = 3
    import stabilityscope.training.trainer as trainer

    monkeypatch.setattr(trainer, "spline_initialise", lambda *a, **k: pytest.fail("refitted on resume"))
    assert Run(cfg, tmp_path / "r").execute(resume=True) == "finished"
    with ss.open_trace(tmp_path / "r") as tr:
        assert tr.checkpoints.tolist() == [0, 1, 2, 3] and "mars_fit_seconds" in tr.attrs


def test_mars_init_bad_input_fails_before_training(tmp_path, data_root):
    cfg = _root(_abalone_cfg("mars"), data_root)
    cfg.model.name = "fmnist_fc"
    with pytest.raises(ConfigError, match="model.init=mars cannot initialise"):
        Run(cfg, tmp_path / "a")
    cfg = _root(_abalone_cfg("mars"), data_root)
    cfg.model.width = 2
    with pytest.raises(ConfigError, match="model.width=2"):
        Run(cfg, tmp_path / "b")
    assert not (tmp_path / "b" / "trace.h5").exists()


def test_the_fast_step_and_batching_refuse_regression_and_spline_inits():
    cfg = Config(model=ModelConfig(name="fmnist_fc"), dataset=DatasetConfig(name="abalone"))
    assert "regression table" in stacked_step_obstacle(cfg)
    cfg = Config(model=ModelConfig(name="fmnist_fc", init="mars"))
    assert stacked_step_obstacle(cfg) == "model.init=mars"
    assert stacked_step_obstacle(Config()) is None


def test_evaluate_regression_pools_outputs():
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    y = torch.tensor([[1.0, 1.0], [3.0, 7.0]])
    mse, r2 = evaluate_regression(model, x, y)
    assert mse == pytest.approx((0 + 1 + 0 + 4) / 4)
    assert r2 == pytest.approx(1 - 5 / (1 + 1 + 9 + 9))  # SST about each output's mean, pooled


def test_regression_figures_and_report_show_mse_and_r2_never_accuracy(tmp_path, data_root):
    from stabilityscope import figures
    from stabilityscope.reports.run import write_report

    cfg = _root(_abalone_cfg("mars"), data_root)
    Run(cfg, tmp_path / "run").execute()
    fig = figures.plot_metrics(tmp_path / "run")
    texts = [ax.get_ylabel() + " " + ax.get_title() for ax in fig.axes]
    assert "MSE" in texts[0] and "R^2" in texts[1] and not any("ccuracy" in t for t in texts)
    with ss.open_trace(tmp_path / "run") as tr:
        text = write_report(tr, tmp_path / "report", figures=False).read_text()
    assert "test MSE" in text and "test R²" in text and "accuracy" not in text.lower()
    assert "initialisation (Spline-FC, model.init=mars) | MARS fit of" in text


# ------------------------------------------------------------------------------------ the comparison


def _curve(init: str, loss: list[float], seed: int = 0, width: int = 64, wall0: float = 0.0) -> InitCurve:
    n = len(loss)
    return InitCurve(f"run_{init}_{seed}_{width}", init, seed, {"model.init": init, "train.seed": seed,
                                                               "model.width": width},
                     np.arange(n, dtype=float), wall0 + 2.0 * np.arange(n), np.asarray(loss, float),
                     1 - np.asarray(loss, float) / 10, True,
                     {"mars_test_mse": 5.0, "mars_fit_seconds": wall0} if init == "mars" else {})


def test_time_to_target_is_the_first_checkpoint_reaching_it():
    c = _curve("random", [9.0, 6.0, 4.9, 5.2, 4.5])
    assert time_to_target(c, 5.0) == (2.0, 4.0)
    assert time_to_target(c, 4.5) == (4.0, 8.0)
    assert all(math.isnan(v) for v in time_to_target(c, 4.0))


def test_compare_inits_groups_targets_and_spreads():
    curves = [_curve("random", [9, 6, 4.9], 0), _curve("random", [9, 4.95, 5.0], 1),
              _curve("mars", [5.0, 4.8, 4.7], 0, wall0=1.5), _curve("mars", [5.0, 4.9, 4.6], 1, wall0=1.5),
              _curve("random", [9, 9, 9], 0, width=256), _curve("mars", [5.0, 5.0, 5.0], 0, width=256, wall0=1.5)]
    assert [dict(k)["model.width"] for k in comparison_groups(curves)] == [256, 64]
    t = compare_inits(curves, targets=("mars", 4.8)).set_index(["model.width", "init", "target"])
    r = t.loc[(64, "random", "mars")]
    assert r.target_value == 5.0 and r.reached == 2 and r.epochs_mean == 1.5 and r.seconds_mean == 3.0
    assert r.epochs_std == pytest.approx(np.std([2, 1], ddof=1))
    m = t.loc[(64, "mars", "mars")]
    assert m.epochs_mean == 0 and m.seconds_mean == 1.5 and m.mars_fit_seconds == 1.5  # the fit counts
    assert t.loc[(64, "mars", "4.8")].reached == 2 and t.loc[(64, "mars", "4.8")].epochs_mean == 1.5
    assert t.loc[(64, "random", "4.8")].reached == 0 and math.isnan(t.loc[(64, "random", "4.8")].epochs_mean)
    assert t.loc[(256, "random", "mars")].reached == 0
    assert t.loc[(64, "mars", "mars")].final_test_loss_mean == pytest.approx(4.65)
    assert t.loc[(64, "random", "mars")].final_test_loss_std == pytest.approx(np.std([4.9, 5.0], ddof=1))


def test_plot_init_comparison_draws_each_group_and_both_inits():
    from stabilityscope import figures

    curves = [_curve("random", [9, 6, 4.9], 0), _curve("random", [9, 5.5, 5.0], 1),
              _curve("mars", [5.0, 4.8, 4.7], 0, wall0=1.5), _curve("random", [9, 9, 9], 0, width=256),
              _curve("mars", [5.0, 5.0, 5.0], 0, width=256, wall0=1.5)]
    fig = figures.plot_init_comparison(curves)
    assert len(fig.axes) == 4  # 2 groups × (epoch, wall time)
    wall = fig.axes[3]  # width 64 against wall time: the MARS median starts at its fit's 1.5 s
    starts = sorted(float(line.get_xdata()[0]) for line in wall.lines if len(line.get_xdata()) == 3)
    assert starts == [0.0, 1.5]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:2] == ["random init (1 seed)", "mars init (1 seed)"] and "MARS model's own test MSE 5" in labels[2]


def test_standard_metric_names_by_loss():
    assert METRICS == ("train_loss", "train_acc", "test_loss", "test_acc")
    assert REGRESSION_METRICS == ("train_loss", "test_loss", "train_r2", "test_r2")
    with pytest.raises(ConfigError, match="loss='hinge'"):
        ss.Recorder(torch.nn.Linear(2, 2), "/nonexistent/never", loss="hinge")


# ---------------------------------------------------------------------------------------- the presets




@pytest.mark.parametrize("quick", ["", "_quick"])
def test_spline_presets_compare_both_inits_with_init_varying_fastest(quick):
    from stabilityscope.config import as_options as options
    from stabilityscope.config import validate

    a = compose_with_hydra(f"experiment=spline_abalone{quick}")
    params = dict(a.hydra.sweeper.params)
    assert list(params)[-1] == "model.init" and params["model.init"] == "random,mars"
    assert (a.model.name, a.model.activation.value, a.dataset.name) == ("tabular_mlp", "relu", "abalone")
    assert params["+spline_optim"] == ("adam,sgd" if not quick else "adam")
    assert (params["train.seed"], params["model.width"], a.train.epochs) == (
        ("range(10)", "64,256", 100) if not quick else ("0,1", "64", 3))
    sgd = compose_with_hydra(f"experiment=spline_abalone{quick}", "+spline_optim=sgd", "model.init=mars")
    assert (sgd.optim.name.value, sgd.optim.lr, sgd.optim.momentum) == ("sgd", 0.005, 0.5)
    validate(OmegaConf.masked_copy(sgd, [k for k in sgd if k != "hydra"]))  # the app's config, without Hydra's own
    f = compose_with_hydra(f"experiment=spline_fmnist{quick}", "model.init=mars")
    check_spline_init(options(f.model, ModelConfig))  # the canonical shape with ReLU and a hidden bias
    assert (f.model.name, f.model.width, f.model.depth, f.dataset.name) == ("tabular_mlp", 784, 1, "fashion_mnist")
    assert list(f.hydra.sweeper.params)[-1] == "model.init"
    assert (f.dataset.train_subset, f.train.epochs) == ((None, 5) if not quick else (2000, 2))
