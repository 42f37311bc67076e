"""Datasets held in memory as tensors, read straight from torchvision's on-disk layout.

The canonical input is EOC-training's: pixels / 255, flattened. The IDX ``.gz`` files are read
directly (nothing is written into ``root``, which may be read-only); uncompressed files are accepted
too. ``download=True`` hands over to torchvision's downloader for users with internet.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from stabilityscope.errors import DataError


@dataclass(frozen=True)
class InMemoryData:
    """Train and test tensors of one dataset (inputs float32, labels int64)."""

    name: str
    x_train: torch.Tensor  # (n_train, *input_shape)
    y_train: torch.Tensor  # (n_train,)
    x_test: torch.Tensor  # (n_test, *input_shape)
    y_test: torch.Tensor  # (n_test,)
    num_classes: int
    input_shape: tuple[int, ...]

    def to(self, device: torch.device | str) -> "InMemoryData":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return InMemoryData(self.name, move(self.x_train), move(self.y_train), move(self.x_test),
                            move(self.y_test), self.num_classes, self.input_shape)


@dataclass(frozen=True)
class IdxDataset:
    """A dataset shipped as the four IDX files of the MNIST family."""

    name: str
    folder: str  # torchvision's class name, e.g. "FashionMNIST"
    torchvision_class: str
    num_classes: int = 10

    def files(self, root: Path) -> dict[str, Path]:
        raw = root / self.folder / "raw"
        stems = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
                 "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
        return {k: raw / s for k, s in stems.items()}


DATASETS: dict[str, IdxDataset] = {
    "fashion_mnist": IdxDataset("fashion_mnist", "FashionMNIST", "FashionMNIST"),
    "mnist": IdxDataset("mnist", "MNIST", "MNIST"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``path`` or ``path.gz``) into a numpy array of its stored shape."""
    gz = path.with_name(path.name + ".gz")
    opener: Callable = gzip.open if gz.exists() else open
    target = gz if gz.exists() else path
    with opener(target, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte data
        raise DataError(f"{target} is not an unsigned-byte IDX file (magic number {magic:#x}).")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{target} is truncated: expected {int(np.prod(shape))} values, found {data.size}.")
    return data.reshape(shape)


def _missing(spec: IdxDataset, root: Path, path: Path) -> DataError:
    return DataError(
        f"Dataset {spec.name!r} not found: looked for {path.name}(.gz) in {path.parent} "
        f"(dataset.root={str(root)!r}). Either point dataset.root (or the STABILITYSCOPE_DATA "
        f"environment variable) at a folder holding {spec.folder}/raw/*.gz in torchvision's layout, "
        f"or pass dataset.download=true to fetch it with torchvision's downloader (needs internet)."
    )


def _download(spec: IdxDataset, root: Path) -> None:
    import torchvision

    cls = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # network errors come in many classes
        raise DataError(f"Downloading {spec.name!r} into {root} failed ({exc}). Without internet, "
                        f"copy {spec.folder}/raw/*.gz there yourself and run without dataset.download.") from exc


def load_dataset(name: str, root: str | Path, *, download: bool = False,
                 train_subset: Optional[int] = None, test_subset: Optional[int] = None) -> InMemoryData:
    """Load a dataset into memory: inputs as float32 in [0, 1] (pixels / 255), flattened later by the model.

    Subsets take the first n examples of each split (deterministic, the same for every seed).
    """
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}.")
    spec, root = DATASETS[name], Path(root).expanduser()
    files = spec.files(root)
    if download and not all(p.exists() or p.with_name(p.name + ".gz").exists() for p in files.values()):
        _download(spec, root)
    for p in files.values():
        if not (p.exists() or p.with_name(p.name + ".gz").exists()):
            raise _missing(spec, root.resolve(), p)
    arrays = {k: read_idx(p) for k, p in files.items()}
    cut = {"x_train": train_subset, "y_train": train_subset, "x_test": test_subset, "y_test": test_subset}
    arrays = {k: a[: cut[k]] if cut[k] is not None else a for k, a in arrays.items()}
    # (n, 28, 28) uint8 → (n, 1, 28, 28) float32 / 255: channel-first so that vision models accept it.
    images = {k: torch.from_numpy(arrays[k].astype(np.float32) / 255.0).unsqueeze(1) for k in ("x_train", "x_test")}
    labels = {k: torch.from_numpy(arrays[k].astype(np.int64)) for k in ("y_train", "y_test")}
    return InMemoryData(name, images["x_train"], labels["y_train"], images["x_test"], labels["y_test"],
                        spec.num_classes, tuple(images["x_train"].shape[1:]))
