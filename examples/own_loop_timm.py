"""Your own training loop on a timm model, recorded by ``ss.Recorder`` into the same trace the app writes.

A small ViT (patch 4, width 96) on a CIFAR-10 subset, trained with AdamW for a few epochs; every checkpoint
records the phase coordinates and mean-field χ of every fully connected map (the q, k, v row blocks of the
fused qkv, the MLP layers, the head) and the iterated map of each MLP block. Then one table: where each map
ended.

    python examples/own_loop_timm.py            # 3 epochs on 2,000 images, a few minutes on 2 CPU cores
    python examples/own_loop_timm.py --smoke    # a tiny version, seconds (what CI runs)
"""
from __future__ import annotations

import argparse
import os

import timm
import torch
import torch.nn.functional as F

import stabilityscope as ss

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
parser.add_argument("--run-dir", default="runs/own_loop_timm")
args = parser.parse_args()
n_train, n_test, epochs, depth = (256, 64, 1, 1) if args.smoke else (2000, 500, 3, 4)

torch.manual_seed(0)
data = ss.load_dataset("cifar10", os.environ.get("STABILITYSCOPE_DATA", "data"), train_subset=n_train,
                       test_subset=n_test, normalize=True)
model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, embed_dim=96,
                          depth=depth, num_heads=3, num_classes=10)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
options = ss.AnalysisConfig(maps=True, n_inputs=4, steps=50 if args.smoke else 200)


@torch.no_grad()
def evaluate() -> dict[str, float]:
    model.eval()
    logits = model(data.x_test)
    model.train()
    return {"test_loss": F.cross_entropy(logits, data.y_test).item(),
            "test_acc": (logits.argmax(1) == data.y_test).float().mean().item()}


with ss.Recorder(model, args.run_dir, probe_inputs=data.x_test[:4], options=options,
                 config={"model": "vit (patch 4, width 96)", "lr": 1e-3}) as rec:
    rec.checkpoint(0, step=0, metrics=evaluate())
    step = 0
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n_train)
        for i in range(0, n_train, 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        rec.checkpoint(epoch, step=step, metrics=evaluate())

tr = ss.open_trace(args.run_dir)
print(f"{tr.status}: {len(tr)} checkpoints, {len(tr.layers)} recorded maps")
for name in [n for n in tr.layers if "J" in tr.stats(n)][:6]:
    print(f"  {name:28s} J {tr.stat(name, 'J')[0]:.3f} -> {tr.stat(name, 'J')[-1]:.3f}, "
          f"phase {tr.stat(name, 'phase')[-1]}")
