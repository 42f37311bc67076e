"""``sgd_cnn``: a small CNN for the SGD-complexity experiments (docs/science/secondary.md).

Nakkiran et al., "SGD on neural networks learns functions of increasing complexity" (NeurIPS 2019,
arXiv:1905.11604), train small CNNs on CIFAR tasks until the training error is zero and compare the
network at each checkpoint with a linear classifier. The network below is our choice, in that style,
not a recovered copy of theirs:

    conv3×3(C→32)-φ-maxpool2 → conv3×3(32→64)-φ-maxpool2 → conv3×3(64→128)-φ-maxpool2
    → flatten → Linear(128·⌊H/8⌋·⌊W/8⌋, width) named ``dense`` → φ → Linear(width, classes) named ``head``

Why: a plain stack of conv + pool stages is the small CNN of such experiments; three stages bring
32×32 down to 4×4, so ``dense`` has fan-in 2048; the wide ``dense`` layer and the ``head`` are the two
fully connected layers the dissection tracks (3×3 convolutions are not FC maps). φ is ReLU in
``conf/model/sgd_cnn.yaml`` (``model.activation``), the width 512 (``model.width``). Weights use
PyTorch's default initialisation (Kaiming-uniform with a = √5, uniform biases). Convolutions pad by
1, so only the poolings shrink the image: 32×32 → 4×4 (flattened 2048), 28×28 → 3×3 (1152).
``model.kwargs.channels`` (three numbers) changes the filters: ``experiment=sgd_complexity_cifar10``
uses (16, 32, 64), a quarter of the convolution FLOPs, to fit the 2-core CPU.
"""
from __future__ import annotations

import torch
from torch import nn

from stabilityscope.config import ModelConfig, value_of
from stabilityscope.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
CHANNELS = (32, 64, 128)  # filters of the three conv stages


class SgdCNN(nn.Module):
    """Three 3×3 conv + max-pool stages, a wide ``dense`` layer and the ``head`` (SGD-complexity, ours)."""

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, width: int = 512,
                 activation: str = "relu", channels: tuple[int, int, int] = CHANNELS) -> None:
        super().__init__()
        c, h, w = input_shape
        if len(channels) != 3 or any(int(k) < 1 for k in channels):
            raise ConfigError(f"model sgd_cnn takes model.kwargs.channels = three positive filter counts (one per "
                              f"conv stage); got {list(channels)}.")
        ch = [int(k) for k in channels]
        if h < 8 or w < 8:
            raise ConfigError(f"model sgd_cnn needs images of at least 8×8 pixels (three 2×2 max-poolings); got "
                              f"input shape {input_shape}.")
        act = ACTIVATIONS[activation]
        self.activation = activation
        self.conv1, self.act1, self.pool1 = nn.Conv2d(c, ch[0], 3, padding=1), act(), nn.MaxPool2d(2)
        self.conv2, self.act2, self.pool2 = nn.Conv2d(ch[0], ch[1], 3, padding=1), act(), nn.MaxPool2d(2)
        self.conv3, self.act3, self.pool3 = nn.Conv2d(ch[1], ch[2], 3, padding=1), act(), nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        # each pooling floors: 32 → 16 → 8 → 4, 28 → 14 → 7 → 3
        self.dense = nn.Linear(ch[2] * (h // 8) * (w // 8), width)
        self.act4 = act()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))  # (B, c1, H/2, W/2)
        x = self.pool2(self.act2(self.conv2(x)))  # (B, c2, H/4, W/4)
        x = self.pool3(self.act3(self.conv3(x)))  # (B, c3, H/8, W/8)
        return self.head(self.act4(self.dense(self.flatten(x))))  # (B, classes)


def build_sgd_cnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The registry's ``sgd_cnn`` on images (C, H, W); ``model.kwargs.channels`` sets its width."""
    if len(input_shape) != 3:
        raise ConfigError(f"model sgd_cnn takes images (C, H, W); the dataset gives inputs of shape {input_shape}.")
    unknown = sorted(set(cfg.kwargs) - {"channels"})
    if unknown:
        raise ConfigError(f"model sgd_cnn has no option(s) {', '.join(unknown)}; model.kwargs takes: channels.")
    channels = tuple(cfg.kwargs.get("channels", CHANNELS))
    return SgdCNN(tuple(input_shape), num_classes, cfg.width, value_of(cfg.activation), channels)
