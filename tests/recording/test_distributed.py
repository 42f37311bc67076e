"""Wrapped and distributed models: DDP and FSDP2 with two gloo CPU processes, torch.compile, DataParallel, FSDP1.

Two processes train the same small network on halves of each batch (DDP averages their gradients, FSDP2
reduce-scatters them); a single process trains it on the whole batches. All three record with the same
code, ``ss.Recorder(net, ...)`` on every rank. Only rank 0 may measure and write; no other rank may
run a collective or a forward pass inside the Recorder (so none waits on rank 0's measurement beyond
its own next training step); the layer names are the bare model's; and the traces agree with the
single-process one to float32 rounding (the ranks' gradients are summed in another order).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import stabilityscope as ss
from stabilityscope.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

WORKER = textwrap.dedent("""
    import json, os, sys
    import torch, torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    import stabilityscope as ss
    from stabilityscope.recording import tracking

    mode, rank, world, run_dir, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)

    inside = [False]  # True while this rank is inside the Recorder
    seen = {"measure": 0, "collectives_inside": 0, "wrapper_forwards_inside": 0, "bare_forwards_inside": 0}
    measure = tracking.LayerTracker.measure
    def counted_measure(self, model):
        seen["measure"] += inside[0]
        return measure(self, model)
    tracking.LayerTracker.measure = counted_measure
    for name in ("all_reduce", "broadcast", "barrier", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor",
                 "all_gather_object", "broadcast_object_list"):
        def counted(*args, _f=getattr(dist, name), **kwargs):
            seen["collectives_inside"] += inside[0]
            return _f(*args, **kwargs)
        setattr(dist, name, counted)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    x_test, y_test = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    if mode == "ddp":
        net = nn.parallel.DistributedDataParallel(model)
    elif mode == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for i in (0, 2, 4):
            fully_shard(model[i])
        net = fully_shard(model)
    else:
        net = model
    def counter(key):
        return lambda module, args: seen.__setitem__(key, seen[key] + inside[0])

    if net is not model:  # the wrapper's own forward (DDP's may broadcast buffers: a collective)
        net.register_forward_pre_hook(counter("wrapper_forwards_inside"))
    model[0].register_forward_pre_hook(counter("bare_forwards_inside"))
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    options = ss.AnalysisConfig(maps=True, n_inputs=4, steps=40, eigen=False, weight_structure=False)
    names = {}
    if rank == 0 and mode == "ddp":
        names["dissect"] = [r.name for r in ss.dissect(net)]
        names["inspect"] = ss.inspect(net)["name"].tolist()
    inside[0] = True
    rec = ss.Recorder(net, run_dir, probe_inputs=x_test[:4], options=options, config={"mode": mode})
    inside[0] = False
    with rec:
        step, half = 0, 16 // world
        for epoch in range(3):
            if epoch:
                for i in range(0, 64, 16):  # a global batch of 16: each rank takes its 16/world rows
                    lo = i + rank * half
                    loss = F.cross_entropy(net(x[lo:lo + half]), y[lo:lo + half])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
            with torch.no_grad():
                test_loss = float(F.cross_entropy(net(x_test), y_test))
            inside[0] = True
            stats = rec.checkpoint(epoch, step=step, metrics={"test_loss": test_loss})
            inside[0] = False
            seen.setdefault("returned", []).append(sorted(stats))
    json.dump({"rank": rank, **seen, **names}, open(out, "w"))
    if world > 1:
        dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp_path: Path, mode: str, world: int) -> tuple[Path, list[dict]]:
    script, run_dir = tmp_path / "worker.py", tmp_path / mode
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), mode, str(r), str(world), str(run_dir),
                               str(tmp_path / f"{mode}{r}.json")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(world)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    return run_dir, [json.loads((tmp_path / f"{mode}{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run_ranks(tmp_path_factory.mktemp("single"), "single", 1)[0]


def assert_same_trace(run_dir: Path, reference: Path) -> None:
    """Same layers, checkpoints and metrics; statistics equal to float32 rounding of the gradient sums.

    The ranks' gradients are averaged in another order than the single process's batch mean: a few ulp
    (float32: ~1e-7 relative) per step, 8 steps. The maps are contracting (J < 1: the default init,
    ordered), so the iterated statistics do not amplify that difference; 1e-5 relative bounds it with room.
    """
    with ss.open_trace(run_dir) as tr, ss.open_trace(reference) as ref:
        assert tr.layers == ref.layers and tr.checkpoints.tolist() == ref.checkpoints.tolist() == [0, 1, 2]
        assert tr.status == "finished" and tr.steps.tolist() == ref.steps.tolist() == [0, 4, 8]
        np.testing.assert_allclose(tr.metric("test_loss"), ref.metric("test_loss"), rtol=1e-5)
        for layer in tr.layers:
            for stat in ("J", "J0", "s_mean", "lambda_max"):
                if stat in ref.stats(layer):
                    np.testing.assert_allclose(tr.stat(layer, stat), ref.stat(layer, stat), rtol=1e-5, atol=1e-6,
                                               err_msg=f"{layer}/{stat}")


def test_ddp_records_on_rank_zero_only_with_the_bare_names_and_the_single_process_trace(tmp_path, single):
    run_dir, (rank0, rank1) = run_ranks(tmp_path, "ddp", 2)
    bare = ["0", "2", "4"]
    assert rank0["dissect"][:3] == bare and rank0["inspect"][:3] == bare  # not "module.0", ...
    assert rank0["measure"] == 3 and rank1["measure"] == 0
    assert rank0["returned"][0] and rank1["returned"] == [[], [], []]  # rank 1's checkpoints return at once
    for r in (rank0, rank1):  # measured on the bare model: no DDP forward, no collective inside the Recorder
        assert r["collectives_inside"] == 0 and r["wrapper_forwards_inside"] == 0
    assert rank0["bare_forwards_inside"] > 0 and rank1["bare_forwards_inside"] == 0
    assert_same_trace(run_dir, single)


def test_fsdp2_weights_are_gathered_for_rank_zeros_measurement(tmp_path, single):
    run_dir, (rank0, rank1) = run_ranks(tmp_path, "fsdp", 2)
    assert rank0["measure"] == 3 and rank1["measure"] == 0
    assert rank1["returned"] == [[], [], []] and rank1["bare_forwards_inside"] == 0
    assert rank0["bare_forwards_inside"] > 0  # rank 0's plain forwards (FSDP's hooks off, the user's kept)
    assert_same_trace(run_dir, single)


def test_compiled_and_data_parallel_models_are_dissected_as_the_bare_model(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    names = [r.name for r in ss.dissect(model)]
    for wrapped in (torch.compile(model), nn.DataParallel(model), torch.compile(nn.DataParallel(model))):
        assert [r.name for r in ss.dissect(wrapped)] == names == ["0", "2"]
        assert ss.unwrap_model(wrapped) is model
        assert ss.inspect(wrapped)["name"].tolist() == names
        record = ss.dissect(wrapped)[0]
        assert record.weight(wrapped) is model[0].weight
    with ss.Recorder(torch.compile(model), tmp_path / "run", options=ss.AnalysisConfig(maps=False)) as rec:
        assert rec.model is model  # the compiled forward is never called: no compilation
        rec.checkpoint(0, metrics={"test_loss": 1.0})
    with ss.open_trace(tmp_path / "run") as tr:
        assert tr.layers == names


def test_fsdp1_is_refused_with_what_to_do_instead(tmp_path):
    from torch.distributed.fsdp import FullyShardedDataParallel

    wrapper = FullyShardedDataParallel.__new__(FullyShardedDataParallel)  # FSDP1 needs an accelerator to build
    nn.Module.__init__(wrapper)
    wrapper._modules["_fsdp_wrapped_module"] = nn.Linear(4, 4)
    for call in (lambda: ss.Recorder(wrapper, tmp_path / "run"), lambda: ss.dissect(wrapper),
                 lambda: ss.inspect(wrapper)):
        with pytest.raises(ConfigError, match=r"FullyShardedDataParallel \(FSDP1\).*fully_shard.*FULL_STATE_DICT"):
            call()
    assert not (tmp_path / "run").exists()


LIGHTNING = textwrap.dedent("""
    import sys
    import torch
    import torch.nn.functional as F
    import lightning as L
    from torch import nn
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
    from stabilityscope.integrations.lightning import StabilityCallback

    run_dir, devices, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, b, i):
            return F.cross_entropy(self(b[0]), b[1])

        def validation_step(self, b, i):
            self.log("val_loss", F.cross_entropy(self(b[0]), b[1]), sync_dist=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.2)

        def train_dataloader(self):  # rank r takes rows r, r + world, ...: one device's batch split in two
            t = self.trainer
            return DataLoader(data, batch_size=batch, sampler=DistributedSampler(
                data, num_replicas=t.world_size, rank=t.global_rank, shuffle=False))

        def val_dataloader(self):
            return DataLoader(data, batch_size=batch)

    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g))
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        callbacks=[StabilityCallback(run_dir)], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        use_distributed_sampler=False)
    trainer.fit(Net())
""")


def test_lightning_ddp_on_cpu_records_like_one_device(tmp_path):
    pytest.importorskip("lightning")
    script = tmp_path / "fit.py"
    script.write_text(LIGHTNING)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for name, devices, batch in (("ddp", 2, 8), ("one", 1, 16)):  # two ranks of 8 = one device's 16 (no shuffle)
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / name), str(devices), str(batch)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    with ss.open_trace(tmp_path / "ddp") as tr, ss.open_trace(tmp_path / "one") as ref:
        assert tr.layers == ref.layers == ["net.0", "net.2"] and tr.checkpoints.tolist() == [0, 1, 2]
        assert tr.status == "finished"
        for layer in tr.layers:  # same weights to float32 rounding of the all-reduce (see assert_same_trace)
            np.testing.assert_allclose(tr.stat(layer, "J"), ref.stat(layer, "J"), rtol=1e-5)
            np.testing.assert_allclose(tr.stat(layer, "J0"), ref.stat(layer, "J0"), rtol=1e-5, atol=1e-6)
