"""A trace from saved checkpoints: train with any code that saves state_dicts, record them afterwards.

Here a plain PyTorch loop trains the canonical network and saves ``epoch_<e>.pt`` after every epoch; then
``python -m stabilityscope task=analyze checkpoints='<folder>/*.pt' evaluate=true`` records every file into one
trace (with the test metrics recomputed) and writes the report. Files are loaded with ``weights_only=True``:
nothing in them is executed.

    python examples/trace_from_checkpoints.py            # 4 epochs on 6,000 images
    python examples/trace_from_checkpoints.py --smoke    # what CI runs
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import stabilityscope as ss

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
parser.add_argument("--out", default="runs/saved_weights")
args = parser.parse_args()
n_train, n_test, epochs = (512, 128, 2) if args.smoke else (6000, 2000, 4)

root = os.environ.get("STABILITYSCOPE_DATA", "data")
torch.manual_seed(0)
data = ss.load_dataset("fashion_mnist", root, train_subset=n_train, test_subset=n_test)
model = ss.build_model(ss.ModelConfig(), data.input_shape, data.num_classes)
opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.5)
ckpts = Path(args.out) / "ckpts"
ckpts.mkdir(parents=True, exist_ok=True)
torch.save(model.state_dict(), ckpts / "epoch_0.pt")
for epoch in range(1, epochs + 1):
    for i in range(0, n_train, 32):
        loss = F.cross_entropy(model(data.x_train[i:i + 32]), data.y_train[i:i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), ckpts / f"epoch_{epoch}.pt")

# the same as typing the command in a shell; the dataset gives the model's shape and the probe inputs
command = [sys.executable, "-m", "stabilityscope", "task=analyze", f"checkpoints={ckpts}/*.pt", "evaluate=true",
           f"dataset.train_subset={n_train}", f"dataset.test_subset={n_test}", f"checkpoint_root={args.out}",
           "phase_background.enabled=false", "analysis.n_inputs=4"]
subprocess.run(command, check=True)

(trace,) = Path(args.out).glob("analyze/*/trace.h5")
tr = ss.open_trace(trace)
print(f"{trace}: epochs {tr.checkpoints.tolist()}")
print("hidden J:", [round(float(j), 4) for j in tr.stat("hidden", "J")])
print("test loss:", [round(float(v), 4) for v in tr.metric("test_loss")])
