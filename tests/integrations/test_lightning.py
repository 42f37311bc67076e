"""StabilityCallback with a real lightning.Trainer: a small model, 2 epochs on Fashion-MNIST, on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, ModelConfig
from stabilityscope.training.data import load_dataset

L = pytest.importorskip("lightning")
from stabilityscope.integrations.lightning import StabilityCallback  # noqa: E402

pytestmark = pytest.mark.slow


class Classifier(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.model = ss.build_model(ModelConfig(width=784), (1, 28, 28), 10)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.5)


def test_the_callback_records_a_lightning_fit(tmp_path, data_root):
    data = load_dataset("fashion_mnist", str(data_root), train_subset=640, test_subset=256)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train), batch_size=32,
                                        shuffle=True, generator=torch.Generator().manual_seed(0))
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_test, data.y_test), batch_size=64)
    module = Classifier()
    j_start = float(ss.phase_coordinates(module.model.hidden.weight.detach())[1])
    callback = StabilityCallback(tmp_path / "run", probe_batches=1, options=AnalysisConfig(n_inputs=16, steps=40,
                                                                                           eigen=False))
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, callbacks=[callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train, val)
    with ss.open_trace(tmp_path / "run") as tr:
        assert tr.status == "finished" and tr.checkpoints.tolist() == [0, 1, 2]
        assert tr.steps.tolist() == [0, 20, 40]  # 640 / 32 steps per epoch
        assert set(tr.layers) == {"model.hidden", "model.head"}
        J = tr.stat("model.hidden", "J")
        assert J[0] == pytest.approx(j_start) and J[2] > J[0]
        assert float(J[2]) == pytest.approx(float(ss.phase_coordinates(module.model.hidden.weight.detach())[1]))
        val_loss = tr.metric("val_loss")
        assert np.isnan(val_loss[0]) and val_loss[2] == pytest.approx(float(trainer.callback_metrics["val_loss"]))
        np.testing.assert_array_equal(tr.metric("test_loss")[1:], val_loss[1:])  # the figures' name for it
        assert np.isfinite(tr.metric("train_loss")[1:]).all() and np.isfinite(tr.metric("test_acc")[1:]).all()
        assert tr.config == {"lr": 0.05}
        assert tr.stat("model.hidden", "attractor")[1] in ss.ATTRACTORS


def _fit(run_dir, data, max_epochs, ckpt_dir=None, ckpt_path=None, control=None):
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train), batch_size=32)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_test, data.y_test), batch_size=64)
    module = Classifier(lr=0.3)
    callback = StabilityCallback(run_dir, options=AnalysisConfig(maps=False, eigen=False, n_inputs=8), control=control)
    callbacks = [callback]
    if ckpt_dir is not None:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, every_n_epochs=1))
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
                        enable_checkpointing=ckpt_dir is not None, enable_progress_bar=False,
                        enable_model_summary=False, deterministic=True)
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return module, callback


def test_the_callback_holds_the_edge_and_a_fit_resumed_from_its_checkpoint_continues_it(tmp_path, data_root):
    data = load_dataset("fashion_mnist", str(data_root), train_subset=640, test_subset=128)
    control = ss.ControlConfig(statistic="J2", every=5, target=0.26)
    whole, cb = _fit(tmp_path / "whole", data, 3, control=control)
    assert cb.controller.maps == ["model.hidden"] and cb.controller.steps_per_epoch == 20
    _fit(tmp_path / "cut", data, 1, ckpt_dir=tmp_path / "ckpt", control=control)
    (ckpt,) = (tmp_path / "ckpt").glob("*.ckpt")
    resumed, cb2 = _fit(tmp_path / "cut", data, 3, ckpt_path=str(ckpt), control=control)
    for p, q in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with ss.open_trace(tmp_path / "whole") as a, ss.open_trace(tmp_path / "cut") as b:
        assert a.control.step.tolist() == b.control.step.tolist() == list(range(5, 61, 5))
        np.testing.assert_array_equal(a.control.weight_decay, b.control.weight_decay)
        np.testing.assert_array_equal(a.control.statistic, b.control.statistic)
        assert np.ptp(a.control.weight_decay) > 0  # the decay moved
        # at the end of each epoch the update read the weights the checkpoint recorded
        j2 = a.stat("model.hidden", "J") ** 2
        np.testing.assert_allclose(a.control.statistic[[3, 7, 11], 0], j2[1:], rtol=1e-12)
