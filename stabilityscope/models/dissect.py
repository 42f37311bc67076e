"""Find a model's fully connected maps ("dissection"), for any PyTorch, timm or torchvision model.

:func:`dissect` returns one :class:`LayerRecord` per fully connected map, in registration order:

- every ``nn.Linear`` (kind ``linear``);
- the q, k and v blocks of a fused projection (timm's ``qkv``, a fused ``kv``, and the
  ``in_proj_weight`` of ``nn.MultiheadAttention``) as separate views (kind ``qkv_view``);
- 1×1 convolutions (kind ``conv1x1``, a Linear applied at every pixel) when ``conv1x1=True``; a 1×1
  conv that *is* the classifier (SqueezeNet) is always included;
- chains of FC layers that return to their input width, d → h → d (transformer and mixer MLP
  blocks), as one record of kind ``chain`` whose iterated map is the block itself
  (:class:`~stabilityscope.dynamics.maps.ModuleMap`; EOC-optimality's rule for sub-networks).

Each record has a role: ``head`` (the classifier: timm's ``pretrained_cfg['classifier']``, a per-family
table for torchvision, else the last Linear), ``mlp_in`` / ``mlp_hidden`` / ``mlp_out`` (inside an MLP
block), ``attn_q`` / ``attn_k`` / ``attn_v`` / ``attn_out`` / ``attn`` (attention projections),
``mlp_block`` (a chain) or ``hidden`` (any other FC map). The activation that follows is recorded when
the next module in registration order is an activation (dropout and identities skipped).

A square layer (fan-in = fan-out) is an iterated map x → φ(Wx + b) (EOC-optimality); a single
non-square one has only mean-field *surrogate* coordinates: (J0, J) then describe a random square
N×N matrix with the same entry statistics (docs/science/mean-field.md). ``record.surrogate`` says which.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
from torch import nn

from stabilityscope.config import AnalysisConfig, ModelConfig, as_options
from stabilityscope.dynamics.submodel import prefix_map
from stabilityscope.errors import ConfigError
from stabilityscope.models.trunk import find_trunk, trunk_shapes
from stabilityscope.models.wrappers import refuse_fsdp1, unwrap_model

ROLES = ("head", "mlp_in", "mlp_hidden", "mlp_out", "attn_q", "attn_k", "attn_v", "attn_out", "attn",
         "mlp_block", "model_map", "hidden", "block", "depth")
KINDS = ("linear", "qkv_view", "conv1x1", "chain", "model_map", "block", "depth")
# Records measured as a module, not one weight matrix: chains and model maps (iterated), trunk blocks (the
# depth-wise readings, iterated too with analysis.block_maps) and the trunk as a whole (its depth exponents).
MAP_KINDS = ("chain", "model_map", "block", "depth")

# The classifier of each torchvision classification family (the last FC inside when a container).
TORCHVISION_HEADS = {
    "AlexNet": "classifier", "VGG": "classifier", "DenseNet": "classifier", "EfficientNet": "classifier",
    "MobileNetV2": "classifier", "MobileNetV3": "classifier", "MNASNet": "classifier", "ConvNeXt": "classifier",
    "SqueezeNet": "classifier", "MaxVit": "classifier", "ResNet": "fc", "GoogLeNet": "fc", "Inception3": "fc",
    "ShuffleNetV2": "fc", "RegNet": "fc", "VisionTransformer": "heads", "SwinTransformer": "head",
}

_ACT_NAMES = {
    "tanh": "tanh", "relu": "relu", "relu6": "relu6", "leakyrelu": "leaky_relu", "prelu": "prelu",
    "gelu": "gelu", "gelutanh": "gelu_tanh", "quickgelu": "quick_gelu", "silu": "silu", "swish": "silu",
    "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "sigmoid": "sigmoid", "mish": "mish",
    "elu": "elu", "selu": "selu", "celu": "celu", "softplus": "softplus", "starrelu": "star_relu",
}
_PASS_THROUGH = re.compile(r"dropout|droppath|identity|drop$", re.I)  # skipped when looking for φ
_ATTN = re.compile(r"attention|attn", re.I)
_MLP = re.compile(r"mlp|ffn|feedforward|feed_forward", re.I)
_NOT_MLP = re.compile(r"head|classifier", re.I)
_FUSED_QKV = re.compile(r"qkv|^in_proj$|^c_attn$", re.I)
_FUSED_KV = re.compile(r"(^|_)kv($|_)|^wkv$", re.I)
_Q, _K, _V = (re.compile(rf"^(to_)?{c}(_proj|_linear)?$|^w{c}$|^{full}$", re.I)
              for c, full in (("q", "query"), ("k", "key"), ("v", "value")))
_OUT = re.compile(r"^(proj|out_proj|o_proj|proj_out|out|to_out|wo|c_proj|dense|output)$", re.I)


@dataclass(frozen=True)
class LayerRecord:
    """One fully connected map of a model.

    ``weight(model)`` / ``bias(model)`` give its (fan_out, fan_in) matrix and bias, whatever stores
    them (a Linear, a block of rows of a fused qkv, a 1×1 conv). Chains and model maps have no single
    matrix; their map is the module ``module`` on states of ``input_shape``.
    """

    name: str  # qualified name, e.g. "blocks.0.mlp.fc1" or "blocks.0.attn.qkv.q" (a view)
    fan_out: int
    fan_in: int
    role: str  # one of ROLES
    activation: Optional[str]  # the nonlinearity that follows, when known
    has_bias: bool
    kind: str = "linear"  # one of KINDS
    module: str = ""  # the module that computes it (hooks, chains); "" means `name`
    param: str = ""  # qualified weight parameter; "" means f"{name}.weight"
    rows: Optional[tuple[int, int]] = None  # a view's rows of that parameter
    bias_param: str = ""  # qualified bias parameter ("" when there is none)
    input_shape: tuple[int, ...] = ()  # chains, model maps and trunk blocks: the shape of one state
    span: tuple[str, ...] = ()  # trunk blocks: the modules applied in turn (one, or a Linear and its activation)

    @property
    def square(self) -> bool:
        return self.fan_in == self.fan_out

    @property
    def shape(self) -> tuple[int, int]:
        return (self.fan_out, self.fan_in)

    @property
    def is_map(self) -> bool:
        """A chain, model map, trunk block or the trunk: measured as a module, it has no phase coordinates."""
        return self.kind in MAP_KINDS

    @property
    def surrogate(self) -> bool:
        """Non-square FC map: its coordinates describe the mean-field surrogate (docs/science/mean-field.md)."""
        return not self.is_map and not self.square

    @property
    def owner(self) -> str:
        """Name of the module that computes this map (hooks on it see the map's input)."""
        return self.module or self.name

    def weight(self, model: nn.Module) -> torch.Tensor:
        """The (fan_out, fan_in) weight matrix, a view of the model's parameter (not detached)."""
        if self.is_map:
            raise TypeError(f"{self.name} is a {self.kind}: it has no single weight matrix")
        w = unwrap_model(model).get_parameter(self.param or f"{self.name}.weight")
        if self.rows is not None:
            w = w[self.rows[0]:self.rows[1]]
        return w.reshape(w.shape[0], -1) if w.dim() != 2 else w  # 1×1 conv (M, N, 1, 1) → (M, N)

    def bias(self, model: nn.Module) -> Optional[torch.Tensor]:
        """The (fan_out,) bias, or None."""
        if not self.bias_param:
            return None
        b = unwrap_model(model).get_parameter(self.bias_param)
        return b[self.rows[0]:self.rows[1]] if self.rows is not None else b


def activation_name(module: nn.Module) -> Optional[str]:
    """Canonical name of an activation module (torch's or timm's), or None when it is not one."""
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    key = type(module).__name__.lower()
    return _ACT_NAMES.get(key) or _ACT_NAMES.get(key.removesuffix("me").removesuffix("jit"))


def _is_conv1x1(m: nn.Module) -> bool:
    return (isinstance(m, (nn.Conv1d, nn.Conv2d)) and all(k == 1 for k in m.kernel_size) and m.groups == 1
            and all(d == 1 for d in m.dilation))


def _is_norm(m: nn.Module) -> bool:
    return "norm" in type(m).__name__.lower() or isinstance(m, (nn.LayerNorm, nn.GroupNorm,
                                                                 nn.modules.batchnorm._NormBase))


def is_fc_module(m: nn.Module) -> bool:
    """A fully connected map: an ``nn.Linear`` or a 1×1 convolution."""
    return isinstance(m, nn.Linear) or _is_conv1x1(m)


def _fc_size(m: nn.Module) -> tuple[int, int]:
    """(fan_out, fan_in) of a Linear or 1×1 conv."""
    if isinstance(m, nn.Linear):
        return m.out_features, m.in_features
    return m.out_channels, m.in_channels


def _ancestors(name: str) -> list[str]:
    """Proper ancestors of a qualified module name, nearest first, the root ("") last."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)] + [""] if name else []


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def classifier_modules(model: nn.Module, fc_names: list[str]) -> list[str]:
    """Names of the classifier FC maps: timm's ``pretrained_cfg['classifier']``, torchvision's family
    table, else the last Linear (the last FC map when there is no Linear). A model with
    ``num_classes == 0``, or a declared classifier that holds no FC map (an ``nn.Identity``), has no head."""
    if getattr(model, "num_classes", None) == 0:  # built without a classifier (a feature encoder)
        return []
    modules = dict(model.named_modules())
    declared: Iterable[str] = ()
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        c = cfg["classifier"]
        declared = (c,) if isinstance(c, str) else tuple(c)
    elif type(model).__module__.startswith("torchvision.") and type(model).__name__ in TORCHVISION_HEADS:
        declared = (TORCHVISION_HEADS[type(model).__name__],)
    heads, present = [], False
    for d in declared:
        if d not in modules:
            continue
        present = True
        inside = [n for n in fc_names if n == d or n.startswith(d + ".")]
        if inside:
            heads.append(inside[-1])
    if heads or present:  # a declared classifier that is an Identity (num_classes=0): no head at all
        return heads
    linears = [n for n in fc_names if isinstance(modules[n], nn.Linear)]
    return [(linears or fc_names)[-1]] if (linears or fc_names) else []


def execution_order(model: nn.Module, example_input: torch.Tensor) -> Optional[list[str]]:
    """Names of the leaf modules in the order one forward pass (eval mode) calls them; None on failure."""
    order: list[str] = []
    leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: order.append(n)) for n, m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    except Exception:  # dissection does not need it: registration order is the fallback
        return None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order


def _following_activation(named: list[tuple[str, nn.Module]], i: int) -> Optional[str]:
    for _, m in named[i + 1:]:
        act = activation_name(m)
        if act is not None:
            return act
        if not _PASS_THROUGH.search(type(m).__name__):
            return None
    return None


def _tag(name: str, module: nn.Module, root: bool) -> Optional[str]:
    """'attn' or 'mlp' when a module is an attention or MLP block by its class or attribute name."""
    if root:
        return None
    cls, attr = type(module).__name__, _last(name)
    if isinstance(module, nn.MultiheadAttention) or _ATTN.search(cls) or _ATTN.search(attr):
        return "attn"
    if (_MLP.search(cls) or _MLP.search(attr)) and not (_NOT_MLP.search(cls) or _NOT_MLP.search(attr)):
        return "mlp"
    return None


def _find_chains(modules: dict[str, nn.Module], fc: list[str], attn_fc: set[str],
                 heads: set[str]) -> list[tuple[str, int, tuple[int, ...], str]]:
    """Innermost modules whose FC maps go d → ... → d with only norms besides.

    Returns (name, d, input_shape, last FC member) per chain.
    """
    fc_set = set(fc)
    below: dict[str, list[str]] = defaultdict(list)
    for n in fc:
        for a in _ancestors(n):
            below[a].append(n)
    other_params: set[str] = set()  # ancestors of a parametrised module that is neither FC nor a norm
    for n, m in modules.items():
        if n and n not in fc_set and not _is_norm(m) and any(True for _ in m.parameters(recurse=False)):
            other_params.update(_ancestors(n))
        if isinstance(m, nn.MultiheadAttention):
            other_params.update(_ancestors(n) + [n])
    candidates = []
    for name, members in below.items():
        if not name or len(members) < 2 or name in other_params:
            continue
        if any(m in attn_fc or m in heads for m in members) or _ATTN.search(type(modules[name]).__name__):
            continue
        d_in, d_out = _fc_size(modules[members[0]])[1], _fc_size(modules[members[-1]])[0]
        if d_in == d_out:
            candidates.append(name)
    chosen = [c for c in candidates if not any(o != c and o.startswith(c + ".") for o in candidates)]
    chains = []
    for name in chosen:
        first = modules[below[name][0]]
        d = _fc_size(first)[1]
        # one state: a feature vector, or one token (blocks that expect (B, tokens, d)), or one pixel
        shapes = [(d,), (1, d)] if isinstance(first, nn.Linear) else [(d,) + (1,) * (first.weight.dim() - 2)]
        shape = next((s for s in shapes if _shape_preserving(modules[name], s)), None)
        if shape is not None:
            chains.append((name, d, shape, below[name][-1]))
    return chains


def _shape_preserving(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """Does ``module`` map one state of ``shape`` to the same shape? (a probe forward, meta-safe)"""
    p = next(module.parameters(), None)
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros(1, *shape, device=p.device if p is not None else None,
                                     dtype=p.dtype if p is not None else None))
        return isinstance(out, torch.Tensor) and tuple(out.shape) == (1, *shape)
    except Exception:  # any failure means: not a map we can iterate
        return False
    finally:
        module.train(was_training)


def dissect(model: nn.Module, *, conv1x1: bool = False, chains: bool = True,
            example_input: Optional[torch.Tensor] = None) -> list[LayerRecord]:
    """Every fully connected map of ``model`` as a :class:`LayerRecord` (see the module docstring).

    Works on models on the meta device (no weights in memory); the chain check runs a forward pass
    of a single block on one zero state.

    Args:
        model: any ``nn.Module``.
        conv1x1: also record 1×1 convolutions (groups 1) as FC maps.
        chains: also record MLP blocks d → h → d as iterated maps (kind ``chain``).
        example_input: a batch the model accepts (e.g. one zero image, also on the meta device). When
            given, "the activation that follows" is read from the order of one forward pass rather
            than from registration order (which misplaces, e.g., squeeze-excitation activations).

    A wrapped model (DDP, DataParallel, ``torch.compile``) is dissected as the bare model inside it, so
    the names are the bare model's (:func:`~stabilityscope.models.wrappers.unwrap_model`).
    """
    refuse_fsdp1(model, "dissect")
    model = unwrap_model(model)
    named = list(model.named_modules())
    modules = dict(named)
    index = {n: i for i, (n, _) in enumerate(named)}
    order = execution_order(model, example_input) if example_input is not None else None
    if order:
        called = [(n, modules[n]) for n in order]
        first_call = {}
        for i, n in enumerate(order):
            first_call.setdefault(n, i)
    all_fc = [n for n, m in named if is_fc_module(m)]
    heads = set(classifier_modules(model, all_fc))
    fc = [n for n in all_fc if isinstance(modules[n], nn.Linear) or conv1x1 or n in heads]
    tags = {n: _tag(n, m, n == "") for n, m in named}

    def nearest(n: str) -> tuple[Optional[str], Optional[str]]:
        """(tag, ancestor name) of the nearest tagged ancestor (the module itself first)."""
        for a in [n] + _ancestors(n):
            if tags.get(a):
                return tags[a], a
        return None, None

    fc_set = set(fc)
    block_fc: dict[str, list[str]] = defaultdict(list)  # tagged ancestor → its FC maps
    for n in fc:
        _, a = nearest(n)
        if a is not None:
            block_fc[a].append(n)

    def linear_role(n: str, fan_in: int) -> str:
        leaf = _last(n)
        tag, anc = nearest(n)
        if tag == "attn" or (tag is None and (_Q.match(leaf) or _K.match(leaf) or _V.match(leaf))):
            for rx, role in ((_Q, "attn_q"), (_K, "attn_k"), (_V, "attn_v")):
                if rx.match(leaf):
                    return role
            if tag == "attn" and (_OUT.match(leaf) or block_fc[anc][-1] == n):
                return "attn_out"
            return "attn" if tag == "attn" else "hidden"
        if tag == "mlp" and len(block_fc[anc]) >= 2:
            members = block_fc[anc]
            if n == members[-1]:
                return "mlp_out"
            return "mlp_in" if fan_in == _fc_size(modules[members[0]])[1] else "mlp_hidden"
        return "hidden"

    records: list[LayerRecord] = []
    attn_fc: set[str] = set()
    model_act = getattr(model, "activation", None)
    for n in fc:
        m = modules[n]
        fan_out, fan_in = _fc_size(m)
        kind = "linear" if isinstance(m, nn.Linear) else "conv1x1"
        has_bias = m.bias is not None
        bias_param = f"{n}.bias" if has_bias else ""
        act = None
        if n not in heads:
            if order and n in first_call:
                act = _following_activation(called, first_call[n])
            else:
                act = _following_activation(named, index[n]) or (model_act if isinstance(model_act, str) else None)
        leaf = _last(n)
        if n in heads:
            records.append(LayerRecord(n, fan_out, fan_in, "head", None, has_bias, kind, n, "", None, bias_param))
            continue
        split = 3 if _FUSED_QKV.search(leaf) else 2 if _FUSED_KV.search(leaf) else 0
        if split and fan_out % split == 0:
            attn_fc.add(n)
            rows = fan_out // split
            for i, part in enumerate("qkv"[3 - split:]):
                records.append(LayerRecord(f"{n}.{part}", rows, fan_in, f"attn_{part}", None, has_bias, "qkv_view",
                                           n, f"{n}.weight", (i * rows, (i + 1) * rows), bias_param))
            continue
        role = linear_role(n, fan_in)
        if role.startswith("attn"):
            attn_fc.add(n)
        records.append(LayerRecord(n, fan_out, fan_in, role, act, has_bias, kind, n, "", None, bias_param))
    # nn.MultiheadAttention keeps q, k, v in its own parameters (torchvision's ViT)
    for n, m in named:
        if not isinstance(m, nn.MultiheadAttention):
            continue
        d = m.embed_dim
        bias = f"{n}.in_proj_bias" if m.in_proj_bias is not None else ""
        for i, part in enumerate("qkv"):
            if m.in_proj_weight is not None:
                rec = LayerRecord(f"{n}.in_proj.{part}", d, d, f"attn_{part}", None, bool(bias), "qkv_view", n,
                                  f"{n}.in_proj_weight", (i * d, (i + 1) * d), bias)
            else:  # separate q/k/v weights (kdim, vdim differ from embed_dim)
                w = getattr(m, f"{part}_proj_weight")
                rec = LayerRecord(f"{n}.{part}_proj", w.shape[0], w.shape[1], f"attn_{part}", None, bool(bias),
                                  "qkv_view", n, f"{n}.{part}_proj_weight", None, "")
            records.append(rec)
        out = f"{n}.out_proj"
        if out in fc_set:
            attn_fc.add(out)
            records = [r if r.name != out else LayerRecord(r.name, r.fan_out, r.fan_in, "attn_out", None, r.has_bias,
                                                           r.kind, r.module, r.param, r.rows, r.bias_param)
                       for r in records]
    order = {n: float(i) for i, n in enumerate(modules)}
    if chains:
        for name, d, shape, last in _find_chains(modules, fc, attn_fc, heads):
            records.append(LayerRecord(name, d, d, "mlp_block", None, False, "chain", name, "", None, "", shape))
            order[name] = order[last] + 0.5  # listed right after its last member
    return sorted(records, key=lambda r: order.get(r.owner, 0.0))


def select_layers(records: list[LayerRecord], selector: str) -> list[LayerRecord]:
    """``all``, ``head``, or a regular expression matched (``re.search``) against qualified names."""
    if selector == "all":
        return list(records)
    if selector == "head":
        return [r for r in records if r.role == "head"]
    pattern = re.compile(selector)
    return [r for r in records if pattern.search(r.name)]


def model_map_record(model: nn.Module, layer: str, input_shape: tuple[int, ...]) -> LayerRecord:
    """The record of the whole-model map input → ``layer`` (checked: shapes must agree)."""
    prefix_map(model, layer, input_shape)
    n = math.prod(input_shape)
    return LayerRecord(f"map:{layer}", n, n, "model_map", None, False, "model_map", layer, "", None, "",
                       tuple(input_shape))


def trunk_records(model: nn.Module, analysis: AnalysisConfig, input_shape: tuple[int, ...]) -> list[LayerRecord]:
    """The trunk's blocks (kind ``block``, named ``block:<first module>``) and the trunk as a whole (kind
    ``depth``, ``depth:trunk``) for the depth-wise readings (:mod:`stabilityscope.dynamics.depthwise`).
    A block's fan-in and fan-out are the entries of one input's state before and after it."""
    p = next(model.parameters(), None)
    example = torch.zeros(1, *input_shape, device=p.device if p is not None else None,
                          dtype=p.dtype if p is not None and p.is_floating_point() else None)
    spans = find_trunk(model, analysis.trunk, example)
    shapes = trunk_shapes(model, spans, example)
    records = [LayerRecord(f"block:{span[0]}", math.prod(s_out), math.prod(s_in), "block", None, False, "block",
                           span[0], "", None, "", s_in, tuple(span)) for span, (s_in, s_out) in zip(spans, shapes)]
    first = records[0]
    # the trunk's span is its blocks' modules in the order of the forward pass: the trace keeps its records by
    # name, and a name's order is not the trunk's (ConvNeXt's downsample runs before its stage's blocks)
    records.append(LayerRecord("depth:trunk", records[-1].fan_out, first.fan_in, "depth", None, False, "depth",
                               first.module, "", None, "", first.input_shape, tuple(m for s in spans for m in s)))
    return records


def tracked_records(model: nn.Module, model_cfg: Optional[ModelConfig], analysis: Optional[AnalysisConfig],
                    input_shape: Optional[tuple[int, ...]]) -> list[LayerRecord]:
    """What a run records: the FC maps selected by ``analysis.layers`` (1×1 convs when
    ``model.conv1x1``, MLP chains when ``analysis.chains``), plus the whole-model map input →
    ``analysis.map_layer`` (default: the model's own ``map_layer``, as for eoc_mlp / eoc_cnn).

    ``input_shape`` (one input, no batch axis) lets one dry forward pass read which activation follows
    each layer; None skips it (activations then come from the module order) and the model map.

    Raises:
        ConfigError: the model has no FC map (naming what was searched), nothing is selected, or the map
            layer does not exist or changes the shape.
    """
    model_cfg = as_options(model_cfg, ModelConfig, "model")
    analysis = as_options(analysis, AnalysisConfig, "analysis")
    model = unwrap_model(model)
    p = next(model.parameters(), None)
    example = None
    if input_shape is not None:  # one forward pass tells which activation follows each layer
        example = torch.zeros(1, *input_shape, device=p.device if p is not None else None,
                              dtype=p.dtype if p is not None and p.is_floating_point() else None)
    records = dissect(model, conv1x1=model_cfg.conv1x1, chains=analysis.chains, example_input=example)
    if not records:
        raise ConfigError(f"{type(model).__name__} has no fully connected map to record. Searched: nn.Linear "
                          f"layers (incl. fused q/k/v projections), MLP blocks d → h → d"
                          f"{'' if analysis.chains else ' (off: analysis.chains=false)'} and 1×1 convolutions"
                          f"{'' if model_cfg.conv1x1 else ' (off: set model.conv1x1=true / ModelConfig(conv1x1=True))'}"
                          f" among its {sum(1 for _ in model.modules())} modules.")
    chosen = select_layers(records, analysis.layers)
    if analysis.depthwise and input_shape is not None:
        chosen += trunk_records(model, analysis, tuple(input_shape))
    layer = analysis.map_layer or getattr(model, "map_layer", None)
    if layer and analysis.maps and input_shape is not None:
        chosen.append(model_map_record(model, layer, tuple(input_shape)))
    if not chosen:
        raise ConfigError(f"analysis.layers={analysis.layers!r} selects no fully connected layer of model "
                          f"{type(model).__name__} ({model_cfg.name}); its layers are: "
                          f"{', '.join(r.name for r in records)}.")
    return chosen
