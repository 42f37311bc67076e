"""The SGD-complexity CNN ``sgd_cnn``: structure, an independent forward pass, init, dissection, config."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stabilityscope.config import ModelConfig
from stabilityscope.errors import ConfigError
from stabilityscope.models.dissect import dissect
from stabilityscope.models.registry import build_model
from stabilityscope.models.sgd_cnn import SgdCNN
from stabilityscope.training.data import load_dataset


def _model(input_shape=(3, 32, 32), classes=10, **kw) -> SgdCNN:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="sgd_cnn", **{"width": 512, "activation": "relu", **kw}), input_shape, classes)


@pytest.mark.parametrize("input_shape,flat", [((3, 32, 32), 128 * 4 * 4), ((1, 28, 28), 128 * 3 * 3)])
def test_structure_for_cifar_and_mnist_shapes(input_shape, flat):
    m = _model(input_shape, 2)
    assert [tuple(c.weight.shape) for c in (m.conv1, m.conv2, m.conv3)] == [
        (32, input_shape[0], 3, 3), (64, 32, 3, 3), (128, 64, 3, 3)]
    assert tuple(m.dense.weight.shape) == (512, flat) and tuple(m.head.weight.shape) == (2, 512)
    assert m(torch.rand(3, *input_shape)).shape == (3, 2)


def test_forward_equals_a_functional_recomputation():
    m = _model(activation="tanh").eval()
    x = torch.randn(4, 3, 32, 32)
    h = x
    for conv in (m.conv1, m.conv2, m.conv3):  # conv (padding 1) → φ → 2×2 max-pool
        h = F.max_pool2d(torch.tanh(F.conv2d(h, conv.weight, conv.bias, padding=1)), 2)
    assert h.shape == (4, 128, 4, 4)
    dense = torch.tanh(F.linear(h.reshape(4, -1), m.dense.weight, m.dense.bias))
    expected = F.linear(dense, m.head.weight, m.head.bias)
    torch.testing.assert_close(m(x), expected)


def test_pytorch_default_init():
    """Kaiming-uniform with a = √5: weights and biases uniform on ±1/√fan_in."""
    m = _model()
    for layer, fan_in in ((m.dense, 2048), (m.head, 512), (m.conv2, 32 * 9)):
        bound = 1 / math.sqrt(fan_in)
        w = layer.weight.detach()
        assert 0.95 * bound < float(w.abs().max()) <= bound
        assert float(w.var()) == pytest.approx(bound ** 2 / 3, rel=0.1)  # variance of U(−b, b)
        assert float(layer.bias.detach().abs().max()) <= bound


def test_dissection_finds_dense_and_head():
    recs = dissect(_model(classes=2), example_input=torch.zeros(1, 3, 32, 32))
    assert [(r.name, r.role, r.square, r.activation, r.fan_in, r.fan_out) for r in recs] == [
        ("dense", "hidden", False, "relu", 2048, 512), ("head", "head", False, None, 512, 2)]


def test_config_preset_and_bad_inputs(compose_cfg):
    cfg = compose_cfg("model=sgd_cnn", "dataset=cifar10", "dataset.binarize=vehicles_vs_animals")
    assert (cfg.model.name, cfg.model.width, cfg.model.activation.value) == ("sgd_cnn", 512, "relu")
    assert build_model(cfg.model, (3, 32, 32), 2).head.out_features == 2
    with pytest.raises(ConfigError, match=r"takes images \(C, H, W\).*\(2,\)"):
        build_model(cfg.model, (2,), 2)  # toy2d points
    with pytest.raises(ConfigError, match=r"at least 8×8.*\(1, 6, 6\)"):
        build_model(cfg.model, (1, 6, 6), 2)


def test_fits_a_small_binary_cifar_sample(data_root):
    """The SGD-complexity regime: the network reaches zero training error (here on 32 images)."""
    data = load_dataset("cifar10", data_root, train_subset=32, test_subset=1, normalize=True,
                        binarize="vehicles_vs_animals")
    torch.manual_seed(0)
    m = _model(classes=2, width=64)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    with torch.no_grad():
        assert float((m(data.x_train).argmax(1) == data.y_train).float().mean()) < 1.0  # not fitted at init
    for _ in range(30):  # full batch (seed 0: all 32 right from step 15 on)
        opt.zero_grad()
        loss = F.cross_entropy(m(data.x_train), data.y_train)
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float((m(data.x_train).argmax(1) == data.y_train).float().mean()) == 1.0
