"""The networks of EOC-optimality's experiments (docs/science/iterated-maps.md), rebuilt in PyTorch.

EOC-optimality iterates a *trained* network: it picks the sub-network from the input to a layer
whose output has the input's shape and reads it as a map F: R^N → R^N. Its two basic models:

``eoc_mlp`` (Fashion-MNIST): 784 → Dense(784, ReLU) → Dense(100, ReLU) → Dense(784, ReLU) →
Dense(classes). The map is input → the third layer's output (``act3``, after its ReLU; Keras'
``dense_2``), a map R^784 → R^784 on flattened images.

``eoc_cnn`` (CIFAR-10, the original's ``cnn``): two 3×3 convs with 32 filters, max-pool, two with 64,
max-pool (32×32 → 8×8×64), depth-to-space by 4 (→ 32×32×4), a 3×3 conv with as many filters as the
input has channels (→ 32×32×3), max-pool, Dense(512), Dense(classes), ReLU throughout. The map is
input → the output of that conv's ReLU (``act5``; Keras' ``activation_4``), R^3072 → R^3072.

Choices: depth-to-space is :class:`torch.nn.PixelShuffle`, which orders the channels of each block
differently from TensorFlow's ``depth_to_space`` (a fixed permutation of the 64 channels, which
training absorbs). Weights are Glorot-uniform and biases zero, Keras' defaults, as in the original.
Both accept any input shape the pooling admits (e.g. 1×28×28 for ``eoc_cnn``: 28 → 7 → 28).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from stabilityscope.config import ModelConfig, value_of
from stabilityscope.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def keras_init_(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every Linear and Conv2d (Keras' defaults)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


class EocMLP(nn.Module):
    """EOC-optimality's MLP 784-784-100-784-classes; its iterated map is input → ``act3``."""

    map_layer = "act3"  # the module whose output closes the map (same width as the input)
    trunk = (("fc1", "act1"), ("fc2", "act2"), ("fc3", "act3"))  # the map's layers, for the depth-wise readings

    def __init__(self, in_features: int = 784, num_classes: int = 10, activation: str = "relu",
                 widths: tuple[int, int, int] = (784, 100, 784)) -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        self.activation = activation
        self.flatten = nn.Flatten()
        self.fc1, self.act1 = nn.Linear(in_features, widths[0]), act()
        self.fc2, self.act2 = nn.Linear(widths[0], widths[1]), act()
        self.fc3, self.act3 = nn.Linear(widths[1], widths[2]), act()
        self.head = nn.Linear(widths[2], num_classes)
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.fc1(self.flatten(x)))  # (B, 784)
        h = self.act2(self.fc2(h))  # (B, 100)
        h = self.act3(self.fc3(h))  # (B, 784): the end of the iterated map
        return self.head(h)  # (B, classes)


class EocCNN(nn.Module):
    """EOC-optimality's CIFAR-10 CNN with 5 convolutions; its iterated map is input → ``act5``."""

    map_layer = "act5"
    trunk = (("conv1", "act1"), ("conv2", "act2", "pool1"), ("conv3", "act3"), ("conv4", "act4", "pool2"),
             ("depth_to_space", "conv5", "act5"))  # the map's layers, for the depth-wise readings

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                 activation: str = "relu") -> None:
        super().__init__()
        c, h, w = input_shape
        if h % 4 or w % 4:
            raise ConfigError(f"model eoc_cnn needs an input height and width divisible by 4 (two 2×2 "
                              f"poolings undone by depth-to-space ×4); got input shape {input_shape}.")
        act = ACTIVATIONS[activation]
        self.activation = activation
        self.conv1, self.act1 = nn.Conv2d(c, 32, 3, padding=1), act()
        self.conv2, self.act2 = nn.Conv2d(32, 32, 3, padding=1), act()
        self.pool1 = nn.MaxPool2d(2)
        self.conv3, self.act3 = nn.Conv2d(32, 64, 3, padding=1), act()
        self.conv4, self.act4 = nn.Conv2d(64, 64, 3, padding=1), act()
        self.pool2 = nn.MaxPool2d(2)
        self.depth_to_space = nn.PixelShuffle(4)  # (64, H/4, W/4) → (4, H, W)
        self.conv5, self.act5 = nn.Conv2d(4, c, 3, padding=1), act()  # back to the input's shape
        self.pool3 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c * (h // 2) * (w // 2), 512)
        self.act6 = act()
        self.head = nn.Linear(512, num_classes)
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act2(self.conv2(self.act1(self.conv1(x)))))  # (B, 32, H/2, W/2)
        x = self.pool2(self.act4(self.conv4(self.act3(self.conv3(x)))))  # (B, 64, H/4, W/4)
        x = self.act5(self.conv5(self.depth_to_space(x)))  # (B, C, H, W): the end of the iterated map
        x = self.flatten(self.pool3(x))  # (B, C·H/2·W/2)
        return self.head(self.act6(self.fc(x)))  # (B, classes)


def build_eoc_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The registry's ``eoc_mlp``: :class:`EocMLP` on the flattened inputs."""
    return EocMLP(math.prod(input_shape), num_classes, value_of(cfg.activation))


def build_eoc_cnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The registry's ``eoc_cnn``: :class:`EocCNN` on images (C, H, W)."""
    if len(input_shape) != 3:
        raise ConfigError(f"model eoc_cnn takes images (C, H, W); the dataset gives inputs of shape {input_shape}.")
    return EocCNN(tuple(input_shape), num_classes, value_of(cfg.activation))
