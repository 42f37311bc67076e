"""timm and torchvision vision models, built for the dataset at hand.

``model=timm model.name=<any timm name>`` and ``model=torchvision model.name=<any classification
model>`` build the library's own model with the dataset's classes and channels:

- **classes**: the library's ``num_classes``; a pretrained torchvision model keeps its 1000-class
  weights and gets a fresh classifier (timm resets its head itself).
- **channels**: timm's ``in_chans`` (it sums or repeats pretrained stem weights); for torchvision the
  first 3-channel convolution is rebuilt for the dataset's channels, with pretrained weights adapted
  the same way (timm's ``adapt_input_conv``).
- **small inputs** (28×28, 32×32): timm models that take ``img_size`` are built for the dataset's
  size (``model.img_size`` overrides), as are torchvision's ViTs (``image_size``) and MaxViT
  (``input_size``) when not pretrained. Elsewhere our documented options: ``model.small_input=true``
  swaps a ResNet-style stem (``conv1`` + ``maxpool``) for a 3×3 stride-1 conv without pooling (the
  CIFAR ResNet stem), and ``model.input_size=N`` resizes every input to N×N (bilinear) in a forward
  pre-hook on the model.

A dry forward pass (:func:`check_forward`) turns a shape mismatch into a :class:`ConfigError` before
training starts. ``model.pretrained=true`` uses the libraries' own download and cache (timm: the
Hugging Face hub cache; torchvision: ``torch.hub.get_dir()``) and fails with a clear message offline.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import os
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stabilityscope.config import ModelConfig, as_options, value_of
from stabilityscope.errors import ConfigError

SIZE_HINT = ("For small images: model.small_input=true (ResNet-style stems), model.img_size=<size> (timm models "
             "that take img_size), or model.input_size=224 (resize every input).")


def timm_names() -> list[str]:
    """Every model name timm knows (``timm.list_models()``)."""
    import timm

    return timm.list_models()


def torchvision_names() -> list[str]:
    """torchvision's classification models (the ``torchvision.models`` namespace)."""
    from torchvision import models

    return models.list_models(module=models)


def _unknown(family: str, name: str, names: Sequence[str]) -> ConfigError:
    prefixed = [n for n in names if n.startswith(name)]  # e.g. vit_small → vit_small_patch16_224, ...
    close = list(dict.fromkeys(prefixed[:5] + difflib.get_close_matches(name, names, n=5, cutoff=0.6)))[:8]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return ConfigError(f"Unknown {family} model model.name={name!r}.{hint} List them with "
                       f"{'timm.list_models()' if family == 'timm' else 'torchvision.models.list_models()'} "
                       f"({len(names)} names).")


@contextlib.contextmanager
def _params_to_meta() -> Iterator[None]:
    """Move every parameter and buffer to the meta device as it is registered.

    Helper tensors the constructor computes (e.g. RegNet's widths, read with ``.tolist()``) stay
    real, which ``torch.device("meta")`` does not allow.
    """
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def param(self: nn.Module, name: str, p: Optional[nn.Parameter]) -> None:
        register_parameter(self, name, p)
        if p is not None and p.device.type != "meta":
            self._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    def buffer(self: nn.Module, name: str, b: Optional[torch.Tensor], persistent: bool = True) -> None:
        register_buffer(self, name, b.to("meta") if b is not None else None, persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = param, buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer  # type: ignore[method-assign]


def on_meta(build: Any, *args: Any, **kwargs: Any) -> nn.Module:
    """``build(*args, **kwargs)`` with every weight on the meta device (no memory for weights).

    Tries ``torch.device("meta")`` first, then moves parameters to meta as they are registered.
    """
    try:
        with torch.device("meta"):
            return build(*args, **kwargs)
    except (NotImplementedError, RuntimeError) as exc:
        if "meta" not in str(exc):
            raise
    with _params_to_meta():
        return build(*args, **kwargs)


def _pretrained_error(family: str, name: str, exc: Exception) -> ConfigError:
    cache = (os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
             if family == "timm" else os.path.join(torch.hub.get_dir(), "checkpoints"))
    return ConfigError(
        f"model.pretrained=true: could not get the pretrained weights of {family} model {name!r} "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). The weights come from {family}'s own "
        f"download and cache ({cache}); without network access use model.pretrained=false, or place the "
        f"weights in that cache first.")


def build_timm(name: str, in_chans: int, num_classes: int, img_size: Optional[int | tuple[int, int]],
               pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with the dataset's channels and classes, at ``img_size`` when it takes one."""
    import timm

    if not timm.is_model(name):
        raise _unknown("timm", name, timm_names())
    kwargs = dict(pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
    try:
        if img_size is not None and "img_size" not in kwargs:
            try:
                return timm.create_model(name, img_size=img_size, **kwargs)
            except TypeError as exc:  # the model has no img_size option: build it at its own size
                if "img_size" not in str(exc):
                    raise
        return timm.create_model(name, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        if pretrained and not isinstance(exc, (TypeError, ValueError, AssertionError)):
            raise _pretrained_error("timm", name, exc) from exc
        raise


def _size_kwargs(name: str, size: Optional[tuple[int, int]]) -> dict[str, Any]:
    """torchvision constructors with a fixed input size: ViT (``image_size``), MaxViT (``input_size``)."""
    if size is None:
        return {}
    if name.startswith("vit_") and size[0] == size[1]:
        return {"image_size": size[0]}
    if name.startswith("maxvit"):
        return {"input_size": size}
    return {}


def build_torchvision(name: str, in_chans: int, num_classes: int, size: Optional[tuple[int, int]] = None,
                      pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A torchvision classification model for ``in_chans`` channels and ``num_classes`` classes.

    GoogLeNet and Inception v3 are built without auxiliary classifiers (their training-mode output
    would otherwise be a tuple). ``size`` is passed to constructors with a fixed input size when
    the weights are not pretrained.
    """
    from torchvision import models

    names = torchvision_names()
    if name not in names:
        raise _unknown("torchvision", name, names)
    if name in ("googlenet", "inception_v3"):
        kwargs.setdefault("aux_logits", False)
    if pretrained:
        try:
            model = models.get_model(name, weights="DEFAULT", **kwargs)
        except Exception as exc:
            raise _pretrained_error("torchvision", name, exc) from exc
        _replace_classifier(model, num_classes)
    else:
        model = models.get_model(name, weights=None, num_classes=num_classes, **{**_size_kwargs(name, size), **kwargs})
    if in_chans != 3:
        adapt_input_channels_(model, in_chans)
        if hasattr(model, "transform_input"):  # GoogLeNet/Inception re-normalise 3 ImageNet channels
            model.transform_input = False
    return model


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    """Swap the (pretrained, 1000-class) classifier for a fresh one with ``num_classes`` outputs."""
    from stabilityscope.models.dissect import classifier_modules, is_fc_module

    fc = [n for n, m in model.named_modules() if is_fc_module(m)]
    for name in classifier_modules(model, fc):
        old = model.get_submodule(name)
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        else:
            new = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None)
        model.set_submodule(name, new.to(old.weight.device))


def adapt_input_channels_(model: nn.Module, in_chans: int) -> str:
    """Rebuild the first 3-channel convolution for ``in_chans`` channels; returns its name.

    Weights are adapted as timm does for pretrained stems (summed for one channel, repeated and
    rescaled for more); for random weights this is simply a fresh layer of the right shape.
    """
    from timm.models import adapt_input_conv

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3 and m.groups == 1:
            new = nn.Conv2d(in_chans, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, 1,
                            m.bias is not None, m.padding_mode, device=m.weight.device, dtype=m.weight.dtype)
            if m.weight.device.type != "meta":
                with torch.no_grad():
                    new.weight.copy_(adapt_input_conv(in_chans, m.weight.detach()))
                    if m.bias is not None:
                        new.bias.copy_(m.bias)
            model.set_submodule(name, new)
            return name
    raise ConfigError(f"{type(model).__name__} has no 3-channel convolution to adapt to {in_chans} input channels.")


def small_input_stem_(model: nn.Module, name: str) -> None:
    """The CIFAR ResNet stem: ``conv1`` → 3×3 stride 1 (same channels), ``maxpool`` → identity.

    Works for torchvision's and timm's ResNet family (a single ``conv1`` conv and a ``maxpool``).
    Pretrained ``conv1`` weights are dropped (a 7×7 kernel has no 3×3 equivalent).
    """
    conv, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if not isinstance(conv, nn.Conv2d) or pool is None:
        raise ConfigError(f"model.small_input=true needs a ResNet-style stem (a conv1 convolution and a maxpool); "
                          f"{name!r} has none. Use model.input_size=<size> to resize the inputs instead, or "
                          f"model.img_size for timm models that take it.")
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None,
                            device=conv.weight.device, dtype=conv.weight.dtype)
    model.maxpool = nn.Identity()


def _resize(size: int, module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    if x.dim() == 4 and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x, *args[1:])


def resize_inputs_(model: nn.Module, size: int) -> None:
    """Resize every input to size×size (bilinear) before ``model`` sees it (a forward pre-hook)."""
    model.register_forward_pre_hook(functools.partial(_resize, size))
    model.input_size = size  # type: ignore[assignment]


def check_forward(model: nn.Module, input_shape: Sequence[int], num_classes: int, what: str) -> None:
    """A dry forward pass on two zero inputs (eval mode, no gradients, works on the meta device).

    Raises:
        ConfigError: when the model rejects the input shape or does not return (2, num_classes).
    """
    p = next(model.parameters(), None)
    x = torch.zeros(2, *input_shape, device=p.device if p is not None else None,
                    dtype=p.dtype if p is not None and p.is_floating_point() else None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        if x.device.type == "meta" and (isinstance(exc, NotImplementedError) or "meta" in str(exc).lower()):
            return  # an operator without a meta kernel: shapes cannot be checked without weights
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"{what} does not accept the dataset's inputs of shape {tuple(input_shape)} "
                          f"({type(exc).__name__}: {msg}). {SIZE_HINT}") from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{what} returns {got} for a batch of 2 inputs of shape {tuple(input_shape)}; "
                          f"expected logits of shape (2, {num_classes}).")


def build_library_model(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A timm or torchvision model per ``cfg`` (a ModelConfig) for the dataset's inputs and classes."""
    cfg = as_options(cfg, ModelConfig, "model")
    family = value_of(cfg.family)
    if cfg.name == family:  # the generic presets leave model.name for the user to set
        raise ConfigError(f"model={family} needs a model name: pass model.name=<name> (see "
                          f"{'timm.list_models()' if family == 'timm' else 'torchvision.models.list_models()'}).")
    if len(input_shape) != 3:
        raise ConfigError(f"{family} model {cfg.name!r} takes images (C, H, W); the dataset gives "
                          f"{tuple(input_shape)}.")
    c, h, w = (int(s) for s in input_shape)
    kwargs = dict(cfg.kwargs or {})
    size = (cfg.input_size, cfg.input_size) if cfg.input_size else (h, w)
    if cfg.img_size:
        size = (cfg.img_size, cfg.img_size)
    if family == "timm":
        model = build_timm(cfg.name, c, num_classes, size[0] if size[0] == size[1] else size, cfg.pretrained, **kwargs)
    elif family == "torchvision":
        model = build_torchvision(cfg.name, c, num_classes, None if cfg.pretrained else size, cfg.pretrained, **kwargs)
    else:
        raise ConfigError(f"model.family={family!r} is not a library; allowed: timm, torchvision (or builtin).")
    if cfg.small_input:
        small_input_stem_(model, cfg.name)
    if cfg.input_size:
        resize_inputs_(model, int(cfg.input_size))
    return model
