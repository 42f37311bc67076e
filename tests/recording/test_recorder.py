"""ss.Recorder in a plain PyTorch loop on real data, its continuation, its bad input, and the dashboard mirrors."""
from __future__ import annotations

import inspect
import math
import re

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, ModelConfig
from stabilityscope.errors import ConfigError, RunLockedError
from stabilityscope.recording.recorder import MOVED_KEYWORDS
from stabilityscope.reports.run import write_report
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import Run

OPTIONS = AnalysisConfig(maps=True, n_inputs=8, steps=40, eigen=False)


@pytest.fixture(scope="module")
def data(data_root):
    return load_dataset("fashion_mnist", str(data_root), train_subset=600, test_subset=200)


def canonical(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ss.build_model(ModelConfig(), (1, 28, 28), 10)


def train_one_epoch(model, opt, data, gen) -> int:
    perm = torch.randperm(len(data.x_train), generator=gen)
    steps = 0
    for i in range(0, len(perm), 32):
        idx = perm[i:i + 32]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return steps


def test_a_plain_loop_records_the_same_trace_the_app_writes(tmp_path, data):
    model = canonical()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    gen = torch.Generator().manual_seed(0)
    step = 0
    with ss.Recorder(model, tmp_path / "run", probe_inputs=data.x_test[:16], options=OPTIONS,
                     config={"lr": 0.05, "note": "plain loop"}) as rec:
        expected_j = [float(ss.phase_coordinates(model.hidden.weight.detach())[1])]
        rec.checkpoint(0)  # before training: no metrics yet
        for epoch in (1, 2, 3):
            step += train_one_epoch(model, opt, data, gen)
            with torch.no_grad():
                logits = model(data.x_test)
            rec.checkpoint(epoch, step=step, metrics={"test_loss": F.cross_entropy(logits, data.y_test),
                                                      "test_acc": (logits.argmax(1) == data.y_test).float().mean(),
                                                      "lr": 0.05})
            expected_j.append(float(ss.phase_coordinates(model.hidden.weight.detach())[1]))
    with ss.open_trace(tmp_path / "run") as tr:
        assert tr.status == "finished" and tr.checkpoints.tolist() == [0, 1, 2, 3]
        assert tr.steps.tolist() == [-1, 19, 38, 57]  # ceil(600/32) = 19 steps per epoch; −1: not given
        np.testing.assert_allclose(tr.stat("hidden", "J"), expected_j, rtol=1e-6)
        assert set(tr.metrics) == {"train_loss", "train_acc", "test_loss", "test_acc", "lr"}
        assert np.isnan(tr.metric("test_loss")[0]) and np.isfinite(tr.metric("test_loss")[1:]).all()
        assert np.isnan(tr.metric("train_loss")).all()  # a standard name never given
        assert tr.config == {"lr": 0.05, "note": "plain loop"} and tr.attrs["model"] == "FashionFC"
        assert "s_mean" in tr.stats("hidden") and tr.stat("hidden", "attractor").shape == (4,)
    report = write_report(tmp_path / "run", tmp_path / "report", figures=True, background=False)
    assert "## " in report.read_text() and (tmp_path / "report" / "figures" / "phase_path.png").exists()


def test_reopening_a_run_directory_continues_the_trace(tmp_path, data):
    model = canonical()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    with ss.Recorder(model, tmp_path / "run", probe_inputs=data.x_test, options=OPTIONS) as rec:
        rec.checkpoint(0, metrics={"test_loss": 2.3})
        train_one_epoch(model, opt, data, gen)
        rec.checkpoint(1, metrics={"test_loss": 1.0})
    train_one_epoch(model, opt, data, gen)
    with ss.Recorder(model, tmp_path / "run", probe_inputs=data.x_test, options=OPTIONS) as rec:
        with pytest.raises(ConfigError, match="epoch 1 is not after the last recorded epoch 1"):
            rec.checkpoint(1)
        rec.checkpoint(2, metrics={"test_loss": 0.8})
    with ss.open_trace(tmp_path / "run") as tr:
        assert tr.checkpoints.tolist() == [0, 1, 2] and tr.metric("test_loss").tolist() == [2.3, 1.0, 0.8]
        # W(0) came back from state/recorder.pt: the distance is from the initial weights, not the reopened ones
        assert tr.stat("hidden", "weight_distance")[2] > tr.stat("hidden", "weight_distance")[1] > 0


def test_an_exception_in_the_with_block_closes_the_trace_as_failed(tmp_path, data):
    model = canonical()
    with pytest.raises(RuntimeError, match="boom"):
        with ss.Recorder(model, tmp_path / "run", options=AnalysisConfig(maps=False)) as rec:
            rec.checkpoint(0, metrics={"test_loss": 2.3})
            raise RuntimeError("boom")
    with ss.open_trace(tmp_path / "run") as tr:
        assert tr.status == "failed" and "RuntimeError: boom" in tr.error and len(tr) == 1
    with pytest.raises(KeyboardInterrupt):
        with ss.Recorder(model, tmp_path / "run2", options=AnalysisConfig(maps=False)) as rec:
            rec.checkpoint(0)  # held (no metrics yet), written when the block closes
            raise KeyboardInterrupt
    with ss.open_trace(tmp_path / "run2") as tr:
        assert tr.status == "interrupted" and tr.checkpoints.tolist() == [0]


def test_bad_input_is_refused_and_leaves_no_broken_trace(tmp_path, data):
    with pytest.raises(ConfigError, match="no fully connected map to record. Searched: nn.Linear"):
        ss.Recorder(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU()), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"probe_inputs of shape \(4, 3, 32, 32\) do not fit the model FashionFC "
                                          r"\(its first Linear layer takes 784 features\)"):
        ss.Recorder(canonical(), tmp_path / "b", probe_inputs=torch.zeros(4, 3, 32, 32))
    rec = ss.Recorder(canonical(), tmp_path / "c", options=AnalysisConfig(maps=False))
    rec.checkpoint(3, metrics={"test_loss": 1.0})
    with pytest.raises(ConfigError, match="epoch 2 is not after the last recorded epoch 3"):
        rec.checkpoint(2, metrics={"test_loss": 1.0})
    with pytest.raises(ConfigError, match="metric\\(s\\) val_f1 were not in the trace's first checkpoint"):
        rec.checkpoint(4, metrics={"val_f1": 0.5})
    with pytest.raises(RunLockedError):  # one writer per run directory, the Recorder too
        ss.Recorder(canonical(), tmp_path / "c")
    rec.close()
    for name in ("a", "b"):
        assert not (tmp_path / name / "trace.h5").exists()
    with ss.open_trace(tmp_path / "c") as tr:
        assert tr.checkpoints.tolist() == [3] and tr.status == "finished"


def test_the_app_trainer_records_through_the_recorder(tmp_path, data_root, monkeypatch):
    """One path: Run's checkpoints are Recorder.record calls (counted), and nothing else appends to a trace."""
    from stabilityscope.config import Config, DatasetConfig, TrainConfig
    from stabilityscope.recording.recorder import Recorder
    from stabilityscope.recording.trace import TraceWriter

    calls = {"record": 0, "append": 0}
    real_record, real_append = Recorder.record, TraceWriter.append

    def record(self, *a, **k):
        calls["record"] += 1
        return real_record(self, *a, **k)

    def append(self, **k):
        calls["append"] += 1
        return real_append(self, **k)

    monkeypatch.setattr(Recorder, "record", record)
    monkeypatch.setattr(TraceWriter, "append", append)
    cfg = Config(dataset=DatasetConfig(root=str(data_root), train_subset=300, test_subset=100),
                 train=TrainConfig(epochs=2), analysis=AnalysisConfig(maps=False, eigen=False))
    assert Run(cfg, tmp_path / "run").execute() == "finished"
    assert calls == {"record": 3, "append": 3}


# ------------------------------------------------------------------------------------------ mirrors


def test_tensorboard_and_mlflow_mirror_every_scalar(tmp_path, data):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = canonical()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    mirrors = ss.LoggingConfig(tensorboard=True, mlflow=True, mlflow_uri=uri)
    with ss.Recorder(model, tmp_path / "run", probe_inputs=data.x_test,
                     options=ss.RecordingConfig(analysis=OPTIONS, logging=mirrors), config={"lr": 0.05}) as rec:
        for epoch in range(3):
            if epoch:
                train_one_epoch(model, opt, data, gen)
            rec.checkpoint(epoch, metrics={"test_loss": 2.0 - epoch})
    with ss.open_trace(tmp_path / "run") as tr:
        j, s = tr.stat("hidden", "J"), tr.stat("hidden", "s_mean")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("hidden/J")] == [0, 1, 2]
    np.testing.assert_allclose([e.value for e in events.Scalars("hidden/J")], j, rtol=1e-6)
    np.testing.assert_allclose([e.value for e in events.Scalars("hidden/s_mean")], s, rtol=1e-6)
    assert [e.value for e in events.Scalars("metrics/test_loss")] == [2.0, 1.0, 0.0]
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("stabilityscope").experiment_id])[0]
    assert run.info.run_name == "run" and run.data.params["lr"] == "0.05" and run.info.status == "FINISHED"
    history = sorted(client.get_metric_history(run.info.run_id, "hidden.J"), key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1, 2]
    np.testing.assert_allclose([m.value for m in history], j, rtol=1e-6)
    assert not any(math.isnan(m.value) for m in client.get_metric_history(run.info.run_id, "metrics.test_loss"))


def test_the_apps_logging_options_mirror_a_training_run(tmp_path, data_root):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from stabilityscope.config import Config, DatasetConfig, LoggingConfig, TrainConfig

    cfg = Config(dataset=DatasetConfig(root=str(data_root), train_subset=300, test_subset=100),
                 train=TrainConfig(epochs=2), analysis=AnalysisConfig(maps=False, eigen=False),
                 logging=LoggingConfig(tensorboard=True))
    assert Run(cfg, tmp_path / "run").execute() == "finished"
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    with ss.open_trace(tmp_path / "run") as tr:
        np.testing.assert_allclose([e.value for e in events.Scalars("hidden/J")], tr.stat("hidden", "J"), rtol=1e-6)
        np.testing.assert_allclose([e.value for e in events.Scalars("metrics/test_acc")], tr.metric("test_acc"),
                                   rtol=1e-6)


# ------------------------------------------------------------------------------- the lean signature


def test_the_recorder_keeps_the_common_case_short_and_groups_the_rest():
    names = list(inspect.signature(ss.Recorder).parameters)
    assert names[:4] == ["model", "run_dir", "probe_inputs", "options"]
    assert len([n for n in names if n != "moved"]) <= 9, names


@pytest.mark.parametrize("old", sorted(MOVED_KEYWORDS))
def test_every_old_keyword_fails_naming_its_new_home(tmp_path, old):
    home = {"tensorboard": "ss.LoggingConfig", "mlflow": "ss.LoggingConfig", "storage": "ss.StorageConfig",
            "model_options": "ss.RecordingConfig", "records": "ss.AnalysisConfig(layers=", "test_labels":
            "ss.ExplainabilityInputs", "baseline_predictions": "ss.ExplainabilityInputs", "num_classes":
            "ss.ExplainabilityInputs", "baseline_attrs": "ss.ExplainabilityInputs", "geometry_inputs":
            "ss.GeometryInputs", "geometry_labels": "ss.GeometryInputs", "attrs": "Recorder.for_app",
            "lock": "Recorder.for_app", "save_tracker_state": "Recorder.for_app"}[old]
    with pytest.raises(TypeError, match=rf"Recorder\(\) no longer takes {old}=; pass .*{re.escape(home)}"):
        ss.Recorder(canonical(), tmp_path / "run", **{old: True})
    assert not (tmp_path / "run").exists()  # refused before anything is made
    with pytest.raises(TypeError, match="unexpected keyword argument 'probes'"):
        ss.Recorder(canonical(), tmp_path / "run", probes=None)


def test_the_grouped_options_reach_the_trace(tmp_path):
    """Stored weights (RecordingConfig.storage), the geometry sample and the test labels land in the trace."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    x, y = torch.randn(40, 2), torch.randint(0, 3, (40,))
    options = ss.RecordingConfig(analysis=AnalysisConfig(maps=False, eigen=False, geometry=True, geometry_samples=40),
                                 storage=ss.StorageConfig(weights=True))
    with ss.Recorder(model, tmp_path / "run", options=options, geometry=ss.GeometryInputs(x, y),
                     explainability=ss.ExplainabilityInputs(y[:10], num_classes=3)) as rec:
        rec.checkpoint(0, metrics={"test_loss": 1.0}, predictions=y[:10])
    with ss.open_trace(tmp_path / "run") as tr, h5py.File(tmp_path / "run" / "trace.h5", "r") as f:
        assert np.isfinite(tr.stat("0", "in_band_fraction")).all()
        np.testing.assert_array_equal(f["weights/0"][0], model[0].weight.detach().numpy())
        assert tr.predictions.tolist() == [y[:10].tolist()]


def test_the_lightning_callback_follows(tmp_path):
    lightning = pytest.importorskip("stabilityscope.integrations.lightning")
    named = [p for p in inspect.signature(lightning.StabilityCallback).parameters.values()
             if p.kind is not inspect.Parameter.VAR_KEYWORD]  # **moved only turns old keywords into an error
    assert len(named) <= 7
    with pytest.raises(TypeError, match=r"StabilityCallback\(\) no longer takes tensorboard=; pass .*ss.LoggingConfig"):
        lightning.StabilityCallback(tmp_path / "run", tensorboard=True)
    callback = lightning.StabilityCallback(tmp_path / "run", options=ss.RecordingConfig(
        logging=ss.LoggingConfig(tensorboard=True)))
    assert callback.options.logging.tensorboard and callback.options.analysis == AnalysisConfig()
