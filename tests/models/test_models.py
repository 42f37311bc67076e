"""The canonical network of EOC-training; docs/science/mean-field.md: structure and initial phase coordinates."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from stabilityscope.config import ModelConfig
from stabilityscope.models.dissect import dissect, select_layers
from stabilityscope.models.registry import MODELS, build_model
from stabilityscope.theory.meanfield import phase_coordinates


def _model(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    return build_model(OmegaConf.structured(ModelConfig(**kw)), (1, 28, 28), 10)


def test_canonical_structure():
    m = _model()
    assert m.hidden.weight.shape == (784, 784) and m.hidden.bias is None
    assert m.head.weight.shape == (10, 784) and m.head.bias is not None
    assert isinstance(m.act, torch.nn.Tanh)
    assert m(torch.rand(5, 1, 28, 28)).shape == (5, 10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_initial_phase_coordinates(seed):
    j0, j = phase_coordinates(_model(seed=seed).hidden.weight)
    assert abs(float(j) - 0.5) < 0.01  # std = 1/56 → J = 0.5
    assert abs(float(j0)) < 0.06  # J0 = N·mean(W) ~ Normal(0, J²/N): 3σ = 3·0.5/28


def test_head_is_glorot_uniform_with_zero_bias():
    m = _model()
    bound = math.sqrt(6.0 / (784 + 10))
    w = m.head.weight.detach()
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound
    assert abs(float(w.var()) - bound**2 / 3) < 0.1 * bound**2 / 3
    assert float(m.head.bias.abs().max()) == 0.0


def test_width_activation_and_init_are_configurable():
    m = _model(width=256, activation="relu", init_J=1.5, init_J0=-0.5)
    assert m.hidden.weight.shape == (256, 784) and isinstance(m.act, torch.nn.ReLU)
    j0, j = phase_coordinates(m.hidden.weight)
    assert abs(float(j) - 1.5) < 0.03 and abs(float(j0) + 0.5) < 0.1


def test_dissection_of_canonical_model():
    records = dissect(_model())
    assert [(r.name, r.role, r.square, r.activation) for r in records] == [
        ("hidden", "hidden", True, "tanh"), ("head", "head", False, None)]
    assert [r.name for r in select_layers(records, "head")] == ["head"]
    assert [r.name for r in select_layers(records, "hid+en")] == ["hidden"]


# The input each built-in model is made for (every registry entry must have one: the contract below).
BUILTIN_INPUTS = {"fmnist_fc": (1, 28, 28), "eoc_mlp": (1, 28, 28), "eoc_cnn": (3, 32, 32), "toy_mlp": (2,),
                  "sgd_cnn": (3, 32, 32), "tabular_mlp": (10,), "mixer_cifar": (3, 32, 32), "resmlp_cifar": (3, 32, 32)}


def test_every_builtin_model_has_a_contract_input():
    assert set(BUILTIN_INPUTS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("classes", [2, 10])
def test_builtin_model_contract(name, classes):
    """Each built-in model gives (B, classes) logits and its dissection ends with the classifier ``head``."""
    torch.manual_seed(0)
    shape = BUILTIN_INPUTS[name]
    model = build_model(ModelConfig(name=name, width=32), shape, classes)
    assert model(torch.rand(3, *shape)).shape == (3, classes)
    records = dissect(model, chains=False)
    heads = [r for r in records if r.role == "head"]
    assert [(r.name, r.fan_out) for r in heads] == [("head", classes)] and records[-1].name == "head"
    # the MLP blocks of the atlas's built-ins (mixer_cifar, resmlp_cifar) are named for their part of the block
    assert all(r.role in ("hidden", "mlp_in", "mlp_out") for r in records[:-1])
