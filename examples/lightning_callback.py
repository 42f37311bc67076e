"""PyTorch Lightning: ``StabilityCallback`` records a trace while ``Trainer.fit`` trains.

The canonical 784-784(tanh)-10 network as a LightningModule on a Fashion-MNIST subset. Checkpoint 0 is taken
when training starts and checkpoint e after the validation of epoch e; the metrics are the module's logged
scalars (``val_loss`` fills ``test_loss``). Needs ``pip install 'stabilityscope[lightning]'``.

    python examples/lightning_callback.py            # 5 epochs on 6,000 images
    python examples/lightning_callback.py --smoke    # what CI runs
"""
from __future__ import annotations

import argparse
import os

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import stabilityscope as ss
from stabilityscope.integrations.lightning import StabilityCallback

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
parser.add_argument("--run-dir", default="runs/lightning")
args = parser.parse_args()
n_train, n_test, epochs = (512, 128, 2) if args.smoke else (6000, 2000, 5)


class Canonical(L.LightningModule):
    def __init__(self, lr: float = 0.02, momentum: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()  # stored as the trace's config
        self.model = ss.build_model(ss.ModelConfig(), (1, 28, 28), 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)


torch.manual_seed(0)
data = ss.load_dataset("fashion_mnist", os.environ.get("STABILITYSCOPE_DATA", "data"), train_subset=n_train,
                       test_subset=n_test)
train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=32, shuffle=True)
val = DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=256)
trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False,
                    callbacks=[StabilityCallback(args.run_dir, every_n_epochs=1, probe_batches=1)])
trainer.fit(Canonical(), train, val)

tr = ss.open_trace(args.run_dir)
print(f"{tr.status}: epochs {tr.checkpoints.tolist()}")
print("hidden J:", [round(float(j), 4) for j in tr.stat("model.hidden", "J")])
print("test loss (from val_loss):", [round(float(v), 4) for v in tr.metric("test_loss")])
