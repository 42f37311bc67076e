"""timm's MLP-Mixer and ResMLP at CIFAR size.

timm's named variants (``mixer_s16_224``, ``resmlp_12_224``, ...) fix the patch size at 16, which
leaves a 32×32 image 4 tokens; these builders make timm's own :class:`timm.models.mlp_mixer.MlpMixer`
with the dataset's image size and a small patch, so ``model=mixer_cifar`` / ``model=resmlp_cifar``
train the same blocks at the atlas's size:

- ``mixer_cifar`` (Tolstikhin et al. 2021): LayerNorm, token-mixing and channel-mixing MLPs with GELU
  (timm's ``MixerBlock``); ``model.width`` is the embedding width, ``model.depth`` the blocks.
- ``resmlp_cifar`` (Touvron et al. 2021): Affine normalisation, a linear token-mixing layer and a
  channel MLP with LayerScale (timm's ``ResBlock``), no stem norm.

``model.kwargs`` passes ``patch_size`` (default 4) and ``mlp_ratio`` (default (0.5, 4.0) for the Mixer,
as timm's, and 4 for ResMLP) or any other MlpMixer argument.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from stabilityscope.config import ModelConfig
from stabilityscope.errors import ConfigError


def _mlp_mixer(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, **family: Any) -> nn.Module:
    from timm.models.mlp_mixer import MlpMixer

    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ConfigError(f"model {cfg.name} takes square images (C, H, H); the dataset's inputs are {input_shape}.")
    kwargs = {"patch_size": 4, **family, **dict(cfg.kwargs)}
    if input_shape[1] % kwargs["patch_size"]:
        raise ConfigError(f"model {cfg.name}: the image size {input_shape[1]} is not a multiple of "
                          f"patch_size={kwargs['patch_size']} (+model.kwargs.patch_size=<p>).")
    return MlpMixer(num_classes=num_classes, img_size=input_shape[1], in_chans=input_shape[0], num_blocks=cfg.depth,
                    embed_dim=cfg.width, **kwargs)


def build_mixer_cifar(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """timm's MLP-Mixer (MixerBlock: LayerNorm, token and channel MLPs with GELU)."""
    return _mlp_mixer(cfg, input_shape, num_classes, mlp_ratio=(0.5, 4.0))


def build_resmlp_cifar(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """timm's ResMLP (ResBlock: Affine norms, linear token mixing, channel MLP, LayerScale)."""
    from timm.models.mlp_mixer import Affine, ResBlock

    return _mlp_mixer(cfg, input_shape, num_classes, mlp_ratio=4, block_layer=ResBlock, norm_layer=Affine,
                      stem_norm=False)
