"""timm and torchvision models on real data: building, dataset adaptation, per-layer tracking, errors."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from stabilityscope import open_trace
from stabilityscope.errors import ConfigError
from stabilityscope.models.registry import build_model
from stabilityscope.training.data import CHANNEL_STATS, _CifarUnpickler, augment_batch, load_dataset
from stabilityscope.training.trainer import Run
from tests.conftest import run_cli

TINY = ("dataset.train_subset=64", "dataset.test_subset=16", "train.epochs=1", "analysis.n_inputs=8",
        "analysis.steps=20", "figures=false", "report=false")


def _cifar_root(data_root):
    if not (data_root / "cifar-10-batches-py").is_dir():
        pytest.skip("CIFAR-10 is not in the data folder")
    return data_root


def test_cifar10_loads_without_unpickling_objects(data_root):
    root = _cifar_root(data_root)
    raw = load_dataset("cifar10", root, train_subset=10_001, test_subset=20)
    assert raw.x_train.shape == (10_001, 3, 32, 32) and raw.x_test.shape == (20, 3, 32, 32)  # spans two batch files
    assert raw.y_test[:5].tolist() == [3, 8, 8, 0, 6]  # cat, ship, ship, airplane, frog
    assert 0.0 <= float(raw.x_train.min()) and float(raw.x_train.max()) <= 1.0 and raw.pad_value is None
    norm = load_dataset("cifar10", root, train_subset=2000, test_subset=20, normalize=True)
    mean, std = (torch.tensor(v) for v in CHANNEL_STATS["cifar10"])
    torch.testing.assert_close(norm.x_test, (raw.x_test - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    assert norm.x_train.mean((0, 2, 3)).abs().max() < 0.1
    assert norm.pad_value == pytest.approx(tuple((-mean / std).tolist()))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        _CifarUnpickler(io.BytesIO(pickle.dumps({b"data": Evil()}, protocol=2)), encoding="bytes").load()


def test_augmentation_is_a_crop_and_flip_drawn_from_the_generator():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(0), padding=2, pad_value=(-1.0, -2.0, -3.0))
    b = augment_batch(x, torch.Generator().manual_seed(0), padding=2, pad_value=(-1.0, -2.0, -3.0))
    assert torch.equal(a, b) and a.shape == x.shape
    for i in range(2):  # each output is a window of the padded (and possibly flipped) input
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        for c, v in enumerate((-1.0, -2.0, -3.0)):
            padded[c][padded[c] == 0] = v
        padded[0, 2, 2] = 0.0  # the one genuine zero pixel
        found = any(torch.equal(a[i], cand[:, r:r + 8, s:s + 8]) for cand in (padded, padded.flip(-1))
                    for r in range(5) for s in range(5))
        assert found
    flipped = augment_batch(x, torch.Generator().manual_seed(3), padding=0)  # no crop: identity or mirror
    assert all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1)) for i in range(2))


def test_resnet18_on_cifar10(tmp_path, compose_cfg, data_root):
    cfg = compose_cfg("model=resnet18", "dataset=cifar10", f"dataset.root={_cifar_root(data_root)}",
                      "dataset.augment=true", *TINY)
    run = Run(cfg, tmp_path)
    assert run.model.conv1.kernel_size == (3, 3) and isinstance(run.model.maxpool, torch.nn.Identity)  # CIFAR stem
    run.execute()
    with open_trace(tmp_path / "trace.h5") as tr:
        assert tr.status == "finished" and tr.layers == ["fc"] and tr.layer_info("fc")["role"] == "head"
        assert tr.layer_info("fc")["surrogate"] and np.isfinite(tr.stat("fc", "J")).all()
        assert np.isfinite(tr.metric("train_loss")).all() and tr.config["model"]["family"] == "torchvision"


def test_timm_vit_on_cifar10_tracks_selected_layers(tmp_path, compose_cfg, data_root):
    cfg = compose_cfg("model=vit_tiny_patch16_224", "dataset=cifar10", f"dataset.root={_cifar_root(data_root)}",
                      "optim=adam", "+model.kwargs.depth=2", r"analysis.layers='^blocks\.0\.|^head$'", *TINY)
    run = Run(cfg, tmp_path)
    assert run.model.patch_embed.img_size == (32, 32)  # timm's img_size: built for the data
    run.execute()
    with open_trace(tmp_path / "trace.h5") as tr:
        assert set(tr.layers) == {"blocks.0.attn.qkv.q", "blocks.0.attn.qkv.k", "blocks.0.attn.qkv.v",
                                  "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.0.mlp", "head"}
        assert tr.layer_info("blocks.0.attn.qkv.v")["kind"] == "qkv_view"
        for layer in ("blocks.0.attn.qkv.q", "blocks.0.mlp"):  # square view and chain: iterated maps
            assert np.isfinite(tr.stat(layer, "s_mean")).all() and tr.stat(layer, "attractor").shape == (2,)
        assert "J" in tr.stats("blocks.0.attn.qkv.q") and "J" not in tr.stats("blocks.0.mlp")
        assert "s_mean" not in tr.stats("blocks.0.mlp.fc1")  # non-square: surrogate coordinates only


def test_stacked_layers_measure_as_one_at_a_time(compose_cfg):
    """Per-layer statistics are computed batched (stacks by shape) and equal single-layer measurements."""
    import timm

    from stabilityscope.models.dissect import dissect
    from stabilityscope.recording.tracking import LayerTracker

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10, depth=2)
    analysis = compose_cfg("analysis.steps=15", "analysis.eigen=false").analysis
    x = torch.randn(4, 3, 32, 32)
    recs = [r for r in dissect(model) if r.kind != "chain"]
    together = LayerTracker(model, recs, analysis, probe_inputs=x).measure(model)
    alone = LayerTracker(model, [r for r in recs if r.name == "blocks.1.attn.qkv.k"], analysis,
                         probe_inputs=x).measure(model)["blocks.1.attn.qkv.k"]
    for key in ("J", "J0", "s_mean", "lambda_max", "asymptotic_distance"):
        assert together["blocks.1.attn.qkv.k"][key] == pytest.approx(alone[key], rel=1e-5, abs=1e-7), key


def test_torchvision_model_on_one_channel_fashion_mnist(tmp_path, compose_cfg, data_root):
    cfg = compose_cfg("model=mobilenet_v3_small", f"dataset.root={data_root}", *TINY)
    run = Run(cfg, tmp_path)
    assert run.model.features[0][0].in_channels == 1  # the stem rebuilt for one channel
    run.execute()
    with open_trace(tmp_path / "trace.h5") as tr:
        assert tr.layers == ["classifier.0", "classifier.3"] and tr.layer_info("classifier.3")["role"] == "head"
        assert tr.layer_info("classifier.0")["activation"] == "hardswish"
        assert np.isfinite(tr.metric("test_loss")).all()


def test_clear_errors_for_names_sizes_and_pretrained(compose_cfg, monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="vit_tiny_patch16_224"):  # difflib's close matches
        build_model(compose_cfg("model=timm", "model.name=vit_tiny_patch16").model, (3, 32, 32), 10, meta=True)
    with pytest.raises(ConfigError, match="resnet18"):
        build_model(compose_cfg("model=torchvision", "model.name=resnet81").model, (3, 32, 32), 10, meta=True)
    alexnet = compose_cfg("model=torchvision", "model.name=alexnet").model
    with pytest.raises(ConfigError, match="model.input_size"):  # the dry forward pass: 28×28 is too small
        build_model(alexnet, (1, 28, 28), 10, meta=True)
    alexnet.input_size = 64
    build_model(alexnet, (1, 28, 28), 10, meta=True)  # resized inputs fit
    with pytest.raises(ConfigError, match="ResNet-style stem"):
        build_model(compose_cfg("model=vgg11_bn", "model.small_input=true").model, (3, 32, 32), 10, meta=True)
    # no network: the library's own download fails, and the message says what to do
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"pretrained=true: could not get .* model.pretrained=false"):
        build_model(compose_cfg("model=resnet18", "model.pretrained=true").model, (3, 32, 32), 10)


def test_describe_prints_the_table_without_training(tmp_path):
    proc = run_cli("analysis=describe", "model=vit_tiny_patch16_224", "dataset=cifar10", f"checkpoint_root={tmp_path}",
                   cwd=tmp_path, env={"STABILITYSCOPE_DATA": str(tmp_path / "no-data-needed")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "blocks.0.attn.qkv.q" in out and "attn_q" in out and "mlp_block" in out and "cost/checkpoint" in out
    assert "no (surrogate)" in out and "FLOP per checkpoint" in out
    assert not list(tmp_path.rglob("trace.h5")) and len(list(tmp_path.rglob("describe.txt"))) == 1
