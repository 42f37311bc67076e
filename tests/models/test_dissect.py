"""Dissection of library models: roles against known layer names, views, 1×1 convs, chains, heads."""
from __future__ import annotations

import timm
import torch
from torch import nn
from torchvision import models as tvm

from stabilityscope.dynamics.maps import ModuleMap
from stabilityscope.models.dissect import dissect, select_layers
from stabilityscope.models.vision import on_meta


def _by_name(records):
    return {r.name: r for r in records}


def test_timm_vit_roles_views_and_chains():
    model = on_meta(timm.create_model, "vit_tiny_patch16_224")
    recs = _by_name(dissect(model))
    expect = {
        "blocks.0.attn.qkv.q": ("attn_q", "qkv_view", (192, 192)),
        "blocks.0.attn.qkv.k": ("attn_k", "qkv_view", (192, 192)),
        "blocks.0.attn.qkv.v": ("attn_v", "qkv_view", (192, 192)),
        "blocks.0.attn.proj": ("attn_out", "linear", (192, 192)),
        "blocks.0.mlp.fc1": ("mlp_in", "linear", (768, 192)),
        "blocks.0.mlp.fc2": ("mlp_out", "linear", (192, 768)),
        "blocks.0.mlp": ("mlp_block", "chain", (192, 192)),
        "head": ("head", "linear", (1000, 192)),
    }
    for name, (role, kind, shape) in expect.items():
        assert (recs[name].role, recs[name].kind, recs[name].shape) == (role, kind, shape), name
    assert "blocks.0.attn.qkv" not in recs  # the fused matrix appears only as its three views
    assert recs["blocks.0.mlp.fc1"].activation == "gelu" and recs["blocks.0.mlp.fc2"].activation is None
    assert recs["blocks.0.mlp.fc1"].surrogate and not recs["blocks.0.attn.proj"].surrogate
    assert recs["blocks.0.mlp"].input_shape == (192,) and not recs["blocks.0.mlp"].surrogate
    assert len(recs) == 12 * 7 + 1


def test_view_and_conv_weights_are_slices_of_the_parameters():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10)
    recs = _by_name(dissect(vit))
    qkv = vit.blocks[0].attn.qkv
    assert torch.equal(recs["blocks.0.attn.qkv.k"].weight(vit), qkv.weight[192:384])
    assert torch.equal(recs["blocks.0.attn.qkv.v"].bias(vit), qkv.bias[384:])
    conv = timm.create_model("convnext_atto", num_classes=10)
    rec = _by_name(dissect(conv, conv1x1=True))["stages.0.blocks.0.mlp.fc1"]
    assert rec.kind == "conv1x1" and rec.weight(conv).shape == (160, 40)
    assert torch.equal(rec.weight(conv), conv.stages[0].blocks[0].mlp.fc1.weight[:, :, 0, 0])


def test_torchvision_vit_multihead_attention_and_head():
    recs = _by_name(dissect(on_meta(tvm.vit_b_16)))
    pre = "encoder.layers.encoder_layer_0"
    assert recs[f"{pre}.self_attention.in_proj.q"].param == f"{pre}.self_attention.in_proj_weight"
    assert recs[f"{pre}.self_attention.in_proj.v"].rows == (1536, 2304)
    assert recs[f"{pre}.self_attention.out_proj"].role == "attn_out"
    roles = (recs[f"{pre}.mlp.0"].role, recs[f"{pre}.mlp.3"].role, recs[f"{pre}.mlp"].kind)
    assert roles == ("mlp_in", "mlp_out", "chain")
    assert recs["heads.head"].role == "head"


def test_torchvision_cnn_heads_from_the_family_table():
    assert [(r.name, r.role) for r in dissect(on_meta(tvm.resnet18))] == [("fc", "head")]
    vgg = dissect(on_meta(tvm.vgg11_bn))
    assert [(r.name, r.role, r.activation, r.square) for r in vgg] == [
        ("classifier.0", "hidden", "relu", False), ("classifier.3", "hidden", "relu", True),
        ("classifier.6", "head", None, False)]
    squeeze = dissect(on_meta(tvm.squeezenet1_0))  # a 1×1-conv classifier counts without conv1x1=True
    assert [(r.name, r.role, r.kind) for r in squeeze] == [("classifier.1", "head", "conv1x1")]


def test_mixer_chains_timm_classifier_config_and_headless_models():
    mixer = _by_name(dissect(on_meta(timm.create_model, "mixer_s16_224")))
    assert mixer["blocks.0.mlp_tokens"].input_shape == (196,) and mixer["blocks.0.mlp_channels"].input_shape == (512,)
    levit = dissect(on_meta(timm.create_model, "levit_128s"))  # pretrained_cfg: ('head.linear', 'head_dist.linear')
    assert [r.name for r in levit if r.role == "head"] == ["head.linear", "head_dist.linear"]
    headless = dissect(on_meta(timm.create_model, "vit_tiny_patch16_224", num_classes=0))
    assert not [r for r in headless if r.role == "head"]  # an Identity classifier: no head, no false fallback


def test_conv1x1_flag_and_conv_chains():
    model = on_meta(timm.create_model, "convnext_atto")
    assert [r.name for r in dissect(model)] == ["head.fc"]
    recs = _by_name(dissect(model, conv1x1=True))
    assert recs["stages.0.blocks.0.mlp.fc1"].role == "mlp_in"
    assert recs["stages.0.blocks.0.mlp"].input_shape == (40, 1, 1)


def test_chain_is_an_iterated_map_of_its_block():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10).eval()
    chain = _by_name(dissect(vit))["blocks.3.mlp"]
    F = ModuleMap(vit.get_submodule(chain.module), chain.input_shape)
    x = torch.randn(4, 192)
    torch.testing.assert_close(F(x), vit.blocks[3].mlp(x))


def test_builtin_and_custom_models():
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))
            self.block = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 8))
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            return self.out(self.block(self.body(x)))

    recs = dissect(Tiny())
    assert [(r.name, r.role, r.activation) for r in recs] == [
        ("body.0", "hidden", "tanh"), ("body.2", "hidden", None), ("body", "mlp_block", None),
        ("block.0", "hidden", "relu"), ("block.3", "hidden", None), ("block", "mlp_block", None), ("out", "head", None)]
    assert [r.name for r in select_layers(recs, "head")] == ["out"]
    assert [r.name for r in select_layers(recs, r"^block")] == ["block.0", "block.3", "block"]
    assert [r.name for r in dissect(Tiny(), chains=False)] == ["body.0", "body.2", "block.0", "block.3", "out"]


def test_activation_from_the_forward_order():
    """Squeeze-excitation registers fc1, fc2, then its activations: only a forward pass tells which follows."""
    model = on_meta(tvm.mobilenet_v3_small)
    by_registration = _by_name(dissect(model, conv1x1=True))
    by_forward = _by_name(dissect(model, conv1x1=True, example_input=torch.zeros(1, 3, 32, 32, device="meta")))
    assert by_registration["features.1.block.1.fc2"].activation == "relu"  # the registration-order guess
    assert (by_forward["features.1.block.1.fc1"].activation, by_forward["features.1.block.1.fc2"].activation) == (
        "relu", "hardsigmoid")
