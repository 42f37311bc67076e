"""A network's trunk: the blocks its residual stream passes through, in forward order.

Depth-wise readings (:mod:`stabilityscope.dynamics.depthwise`) follow the stream from block to block.
Each trunk entry is a *span*: one module (a transformer or mixer block, a ConvNeXt block or stage
transition, a ResNet basic block) or a few modules applied one after another (a plain network's
``Linear`` and its activation). :func:`find_trunk` finds it:

1. the model's own ``trunk`` attribute (the built-in seed models declare theirs);
2. ``analysis.trunk``: a regular expression; the matching modules, in the order one forward pass
   calls them, each form one span;
3. the families by structure: a ``blocks`` container (timm's ViT, DeiT, MLP-Mixer, ResMLP, ...), the
   ``stages`` of timm's ConvNeXt (each stage's transition, when it has weights, then its blocks),
   ResNets' ``layer1`` .. ``layer4``, torchvision's ViT (``encoder.layers``) and ConvNeXt
   (``features``);
4. otherwise the longest ``Sequential`` or ``ModuleList`` of two or more children of one class.

A trunk is *contiguous* when each span's output is the next span's input; :func:`check_contiguous`
verifies it on a forward pass, because the depth product of the readings assumes it.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import torch
from torch import nn

from stabilityscope.errors import ConfigError

Span = tuple[str, ...]


def _children(model: nn.Module, name: str) -> list[str]:
    module = model.get_submodule(name)
    return [f"{name}.{c}" for c, _ in module.named_children()]


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _container(model: nn.Module, name: str) -> bool:
    try:
        return isinstance(model.get_submodule(name), (nn.Sequential, nn.ModuleList))
    except AttributeError:
        return False


def _by_structure(model: nn.Module) -> list[Span]:
    """Step 3 of the module docstring: the known families."""
    if _container(model, "blocks"):
        return [(n,) for n in _children(model, "blocks")]
    if _container(model, "stages"):  # timm ConvNeXt (and other staged timm models)
        spans: list[Span] = []
        for stage in _children(model, "stages"):
            module = model.get_submodule(stage)
            down = getattr(module, "downsample", None)
            if isinstance(down, nn.Module) and _has_weights(down):
                spans.append((f"{stage}.downsample",))
            if _container(model, f"{stage}.blocks"):
                spans += [(n,) for n in _children(model, f"{stage}.blocks")]
            else:
                spans.append((stage,))
        return spans
    layers = [f"layer{i}" for i in range(1, 5) if _container(model, f"layer{i}")]
    if layers:  # ResNets: torchvision's and timm's
        return [(n,) for layer in layers for n in _children(model, layer)]
    if _container(model, "encoder.layers"):  # torchvision ViT
        return [(n,) for n in _children(model, "encoder.layers")]
    if _container(model, "features"):  # torchvision ConvNeXt: stem, stage, transition, stage, ...
        spans = []
        for i, item in enumerate(_children(model, "features")):
            if i == 0:
                continue  # the stem makes the stream
            module = model.get_submodule(item)
            if isinstance(module, nn.Sequential) and all(type(c).__name__ == "CNBlock" for c in module):
                spans += [(n,) for n in _children(model, item)]
            elif _has_weights(module):
                spans.append((item,))
        return spans
    return []


def _longest_container(model: nn.Module) -> list[Span]:
    """Step 4: the longest Sequential/ModuleList of >= 2 same-class children."""
    best: list[Span] = []
    for name, module in model.named_modules():
        if not name or not isinstance(module, (nn.Sequential, nn.ModuleList)):
            continue
        kids = list(module.named_children())
        if len(kids) >= 2 and len({type(m) for _, m in kids}) == 1 and len(kids) > len(best):
            best = [(f"{name}.{c}",) for c, _ in kids]
    return best


def find_trunk(model: nn.Module, pattern: Optional[str] = None,
               example_input: Optional[torch.Tensor] = None) -> list[Span]:
    """The trunk's spans in forward order (see the module docstring).

    Args:
        model: any ``nn.Module``.
        pattern: ``analysis.trunk``: a regular expression on qualified module names; each matching
            module is one span, in the order ``example_input``'s forward pass calls them (needed then).
        example_input: a batch the model accepts.

    Raises:
        ConfigError: the pattern matches nothing (or no example input to order it), or no trunk is found.
    """
    if pattern is None and getattr(model, "trunk", None):
        return [tuple(span) for span in model.trunk]
    if pattern is not None:
        rx = re.compile(pattern)
        names = [n for n, _ in model.named_modules() if n and rx.search(n)]
        # a module inside another matching one is part of that span, not a span of its own
        names = [n for n in names if not any(n.startswith(o + ".") for o in names)]
        if not names:
            raise ConfigError(f"analysis.trunk={pattern!r} matches no module of {type(model).__name__}; its top-level "
                              f"modules are: {', '.join(n for n, _ in model.named_children())}.")
        if example_input is None:
            raise ConfigError("analysis.trunk needs the input shape to order the matched modules by a forward pass.")
        return [(n,) for n in _call_order(model, names, example_input)]
    spans = _by_structure(model) or _longest_container(model)
    if not spans:
        raise ConfigError(f"No trunk found in {type(model).__name__}: it has no `blocks` or `stages` container, no "
                          f"ResNet layers and no Sequential/ModuleList of repeated blocks. Name its blocks with "
                          f"analysis.trunk=<regex on module names>.")
    return spans


def _call_order(model: nn.Module, names: Sequence[str], example_input: torch.Tensor) -> list[str]:
    modules = dict(model.named_modules())
    order: list[str] = []
    hooks = [modules[n].register_forward_pre_hook(lambda mod, args, n=n: order.append(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return list(dict.fromkeys(order))


@torch.no_grad()
def trunk_shapes(model: nn.Module, spans: Sequence[Span], example_input: torch.Tensor
                 ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) of one state per span, from a forward pass of ``example_input`` (one
    input; works on the meta device)."""
    modules = dict(model.named_modules())
    ins: dict[int, tuple[int, ...]] = {}
    outs: dict[int, tuple[int, ...]] = {}
    hooks = []
    for i, span in enumerate(spans):
        def before(mod: nn.Module, args: tuple, i: int = i) -> None:  # a pre-hook's return value would replace args
            if args and i not in ins:
                ins[i] = tuple(args[0].shape[1:])

        def after(mod: nn.Module, args: tuple, out: torch.Tensor, i: int = i) -> None:
            outs.setdefault(i, tuple(out.shape[1:]))

        hooks += [modules[span[0]].register_forward_pre_hook(before), modules[span[-1]].register_forward_hook(after)]
    was_training = model.training
    model.eval()
    try:
        model(example_input)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    missing = [".".join(spans[i]) for i in range(len(spans)) if i not in ins or i not in outs]
    if missing:
        raise ConfigError(f"trunk blocks that never ran in a forward pass of {type(model).__name__}: "
                          f"{', '.join(missing)}; name the blocks with analysis.trunk=<regex>.")
    return [(ins[i], outs[i]) for i in range(len(spans))]


@torch.no_grad()
def check_contiguous(model: nn.Module, spans: Sequence[Span], example_input: torch.Tensor) -> list[bool]:
    """For each span but the last: is its output exactly the next span's input on ``example_input``?"""
    modules = dict(model.named_modules())
    ins: dict[int, torch.Tensor] = {}
    outs: dict[int, torch.Tensor] = {}
    hooks = []
    for i, span in enumerate(spans):
        def before(mod: nn.Module, args: tuple, i: int = i) -> None:
            if args and i not in ins:
                ins[i] = args[0]

        def after(mod: nn.Module, args: tuple, out: torch.Tensor, i: int = i) -> None:
            outs.setdefault(i, out)

        hooks += [modules[span[0]].register_forward_pre_hook(before), modules[span[-1]].register_forward_hook(after)]
    was_training = model.training
    model.eval()
    try:
        model(example_input)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [i in outs and i + 1 in ins and outs[i].shape == ins[i + 1].shape and torch.equal(outs[i], ins[i + 1])
            for i in range(len(spans) - 1)]
