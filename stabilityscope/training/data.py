"""Datasets held in memory as tensors, read straight from torchvision's on-disk layout.

The canonical input is EOC-training's: pixels / 255, flattened. The IDX ``.gz`` files are read
directly (nothing is written into ``root``, which may be read-only); uncompressed files are accepted
too. ``download=True`` hands over to torchvision's downloader for users with internet.

CIFAR-10 comes as torchvision's ``cifar-10-batches-py/`` folder: Python pickles of plain dicts of
numpy arrays and lists. We never unpickle arbitrary objects: :class:`_CifarUnpickler` resolves only
the three numpy globals an array needs (``_reconstruct``, ``ndarray``, ``dtype``) and refuses
everything else, so a tampered file cannot run code. ``normalize=True`` standardises each channel
with the dataset's published mean and std; :func:`augment_batch` is the usual CIFAR augmentation
(random crop with padding 4 and horizontal flip), applied per batch on the device during training.

``binarize`` turns a 10-class dataset into a binary task (SGD-complexity, docs/science/secondary.md): a set of
*positive* classes becomes label 1 and every other class label 0 (``binarize_labels``).
Abalone (UCI) is the one regression table: ``abalone/abalone.data`` under the root, see
``load_abalone``. Its :class:`.InMemoryData` has ``task="regression"``, float32 targets (n, 1) and
``num_classes = 1`` (the model's output size); every other dataset has ``task="classification"``.
"""
from __future__ import annotations

import dataclasses
import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from stabilityscope.errors import ConfigError, DataError


@dataclass(frozen=True)
class InMemoryData:
    """Train and test tensors of one dataset: inputs float32; labels int64 (n,) or regression targets (n, p)."""

    name: str
    x_train: torch.Tensor  # (n_train, *input_shape)
    y_train: torch.Tensor  # (n_train,) class labels, or (n_train, p) regression targets
    x_test: torch.Tensor  # (n_test, *input_shape)
    y_test: torch.Tensor  # (n_test,) or (n_test, p)
    num_classes: int  # the model's output size: classes, or p target columns for regression
    input_shape: tuple[int, ...]
    pad_value: Optional[tuple[float, ...]] = None  # per channel: a black pixel after normalisation (crop padding)
    task: str = "classification"  # or "regression" (MSE loss; no accuracy)

    def to(self, device: torch.device | str) -> "InMemoryData":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return dataclasses.replace(self, x_train=move(self.x_train), y_train=move(self.y_train),
                                   x_test=move(self.x_test), y_test=move(self.y_test))


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


@dataclass(frozen=True)
class CifarDataset:
    """CIFAR-10 in torchvision's ``cifar-10-batches-py`` layout (python pickles of plain dicts)."""

    name: str
    folder: str = "cifar-10-batches-py"
    torchvision_class: str = "CIFAR10"
    num_classes: int = 10
    train_files: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files: tuple[str, ...] = ("test_batch",)


@dataclass(frozen=True)
class ToyDataset:
    """A generated 2-D classification problem (no files): two interleaved spirals with label noise."""

    name: str
    n_train: int = 2000  # dataset.train_subset overrides
    n_test: int = 1000  # dataset.test_subset overrides
    label_noise: float = 0.05  # fraction of labels flipped
    turns: float = 1.0  # spiral turns
    jitter: float = 0.03  # Gaussian noise on the points
    num_classes: int = 2


@dataclass(frozen=True)
class TabularDataset:
    """The UCI Abalone table (regression of Rings): one comma-separated file, split here with a fixed seed."""

    name: str
    folder: str = "abalone"
    file: str = "abalone.data"
    n_train: int = 3133  # the sizes of the UCI documentation's split (75% / 25% of 4,177 rows) ...
    n_test: int = 1044  # ... drawn here as a seeded permutation, not the file's order
    split_seed: int = 0
    num_classes: int = 1  # one regression target (the model's output size)


DATASETS: dict[str, IdxDataset | CifarDataset | ToyDataset | TabularDataset] = {
    "fashion_mnist": IdxDataset("fashion_mnist", "FashionMNIST", "FashionMNIST"),
    "mnist": IdxDataset("mnist", "MNIST", "MNIST"),
    "cifar10": CifarDataset("cifar10"),
    "toy2d": ToyDataset("toy2d"),
    "abalone": TabularDataset("abalone"),
}
INPUT_SHAPES: dict[str, tuple[int, ...]] = {"fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                                            "toy2d": (2,), "abalone": (10,)}
ABALONE_SEXES = ("M", "F", "I")  # one-hot columns 0-2, in this order
ABALONE_FEATURES = ABALONE_SEXES + ("length", "diameter", "height", "whole_weight", "shucked_weight",
                                    "viscera_weight", "shell_weight")
# Per-channel mean and std of the training pixels in [0, 1] (the usual published values).
CHANNEL_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def two_spirals(n: int, seed: int = 0, turns: float = 1.0, jitter: float = 0.03,
                label_noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """n points (n, 2) in about [−1, 1]² on two interleaved spirals, labels (n,) with a fraction flipped.

    Class c's arm is r·(cos(θ + cπ), sin(θ + cπ)) with θ = 2π·turns·r and r = √u, u uniform on (0.05, 1)
    (uniform density along the plane); Gaussian jitter, then ``label_noise`` of the labels flipped.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    r = np.sqrt(rng.uniform(0.05, 1.0, n))
    theta = 2 * np.pi * turns * r + np.pi * y
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) + rng.normal(0, jitter, (n, 2))
    flip = rng.random(n) < label_noise
    return x.astype(np.float32), np.where(flip, 1 - y, y).astype(np.int64)


# Named binary tasks: the positive classes (label 1) and the datasets the rule is meant for.
BINARY_RULES: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    # digits (or Fashion-MNIST classes: sandal, shirt, sneaker, bag, ankle boot) 5–9 → 1, 0–4 → 0
    "greater_than_4": ((5, 6, 7, 8, 9), ("mnist", "fashion_mnist")),
    # CIFAR-10 vehicles → 1: airplane 0, automobile 1, ship 8, truck 9; the six animals → 0
    "vehicles_vs_animals": ((0, 1, 8, 9), ("cifar10",)),
}


def positive_classes(name: str, rule: Any) -> Optional[tuple[int, ...]]:
    """The sorted original classes that ``rule`` maps to label 1 on dataset ``name`` (None: no rule).

    Args:
        name: a key of ``DATASETS``.
        rule: None (the dataset's own labels), a key of ``BINARY_RULES``, or a list of positive classes.

    Raises:
        DataError: a rule that does not fit the dataset: a named rule meant for another dataset, a class
            index outside 0..num_classes−1, an empty list or one holding every class, or any rule on
            ``toy2d`` (already binary).
    """
    if rule is None:
        return None
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}.")
    spec = DATASETS[name]
    allowed = (f"allowed: null (the dataset's own labels), one of {', '.join(sorted(BINARY_RULES))}, or a list of "
               f"positive class indices in 0..{spec.num_classes - 1}, neither empty nor all of them")
    if isinstance(spec, ToyDataset):
        raise DataError(f"dataset.binarize={rule!r} does not apply to dataset {name!r}: it is already a binary "
                        f"task; use dataset.binarize=null.")
    if isinstance(spec, TabularDataset):
        raise DataError(f"dataset.binarize={rule!r} does not apply to dataset {name!r}: it is a regression table "
                        f"with no classes; use dataset.binarize=null.")
    if isinstance(rule, str):
        if rule not in BINARY_RULES:
            raise DataError(f"Invalid value dataset.binarize={rule!r}: {allowed}.")
        positives, meant_for = BINARY_RULES[rule]
        if name not in meant_for:
            raise DataError(f"dataset.binarize={rule!r} is a rule for {' and '.join(meant_for)}, not for dataset "
                            f"{name!r}; {allowed}.")
        return positives
    if not isinstance(rule, Sequence) or not all(isinstance(c, int) and not isinstance(c, bool) for c in rule):
        raise DataError(f"Invalid value dataset.binarize={rule!r}: {allowed}.")
    classes = sorted(int(c) for c in rule)
    shown = list(classes)
    if not classes or len(set(classes)) != len(classes) or classes[0] < 0 or classes[-1] >= spec.num_classes:
        raise DataError(f"Invalid value dataset.binarize={shown} for dataset {name!r}: {allowed}, each at most once.")
    if len(classes) == spec.num_classes:
        raise DataError(f"dataset.binarize={shown} names every class of {name!r}, so every label would be 1; "
                        f"{allowed}.")
    return tuple(classes)


def binarize_labels(data: InMemoryData, rule: Any) -> InMemoryData:
    """The binary task of ``data``: label 1 for the positive classes of ``rule``, 0 for the rest.

    Inputs are shared (not copied); ``num_classes`` becomes 2. The result is as balanced as the
    classes it merges: ``greater_than_4`` gives 50% positives on Fashion-MNIST (6,000 per class) and
    49.0% on MNIST's training set; ``vehicles_vs_animals`` gives 40% on CIFAR-10 (4 of 10 classes:
    20,000 of 50,000 training and 4,000 of 10,000 test images), so constant "animal" scores 60%.
    ``rule=None`` returns ``data`` unchanged.

    Raises:
        DataError: see :func:`positive_classes`.
    """
    positives = positive_classes(data.name, rule)
    if positives is None:
        return data
    if data.num_classes != DATASETS[data.name].num_classes:
        raise DataError(f"dataset.binarize={rule!r}: the {data.name!r} data given already has {data.num_classes} "
                        f"classes instead of {DATASETS[data.name].num_classes}; binarise the original labels once.")
    table = torch.zeros(data.num_classes, dtype=torch.int64)  # (classes,): new label of each original class
    table[list(positives)] = 1
    # one gather indexed by the original labels, (n,) → (n,), on the labels' own device
    relabel = lambda y: table.to(y.device)[y]  # noqa: E731
    return InMemoryData(data.name, data.x_train, relabel(data.y_train), data.x_test, relabel(data.y_test), 2,
                        data.input_shape, data.pad_value)


def dataset_info(name: str, binarize: Any = None) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) of a dataset, without reading it; 2 classes under ``binarize``."""
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}.")
    if positive_classes(name, binarize) is not None:
        return INPUT_SHAPES[name], 2
    return INPUT_SHAPES[name], DATASETS[name].num_classes


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's dicts of numpy arrays and nothing else (no arbitrary classes or code)."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle's signature)
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, whichever module holds it
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file: only numpy "
                                     f"arrays are expected there")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, 32, 32) uint8 and labels (n,) int64 of one CIFAR-10 batch file."""
    with open(path, "rb") as f:
        try:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DataError(f"{path} is not a CIFAR-10 batch file ({exc}).") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 batch file (no data/labels entries).")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: expected (n, 3072) pixels and n labels, found {data.shape} and {len(labels)}.")
    return data.reshape(-1, 3, 32, 32), labels  # rows hold the R, G, B planes, each row-major 32×32


def _load_cifar(spec: CifarDataset, root: Path, download: bool, train_subset: Optional[int],
                test_subset: Optional[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    folder = root / spec.folder
    files = [folder / f for f in spec.train_files + spec.test_files]
    if download and not all(p.exists() for p in files):
        _download(spec, root)
    for p in files:
        if not p.exists():
            raise DataError(
                f"Dataset {spec.name!r} not found: looked for {p.name} in {folder} (dataset.root={str(root)!r}). "
                f"Point dataset.root (or STABILITYSCOPE_DATA) at a folder holding {spec.folder}/ in torchvision's "
                f"layout, or pass dataset.download=true to fetch it with torchvision's downloader (needs internet).")

    def read(names: tuple[str, ...], n: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys, have = [], [], 0
        for name in names:  # only the batches the subset needs
            if n is not None and have >= n:
                break
            x, y = read_cifar_batch(folder / name)
            xs.append(x)
            ys.append(y)
            have += len(y)
        return np.concatenate(xs)[:n], np.concatenate(ys)[:n]

    x_train, y_train = read(spec.train_files, train_subset)
    x_test, y_test = read(spec.test_files, test_subset)
    return {"x_train": x_train, "x_test": x_test}, {"y_train": y_train, "y_test": y_test}


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4,
                  pad_value: Optional[tuple[float, ...]] = None) -> torch.Tensor:
    """Random crop with zero (black) padding and a random horizontal flip, per example, on x's device.

    The random numbers come from ``generator`` (a CPU generator, so runs stay reproducible and
    resumable on any device); shifts and flips are then applied with one gather on the device.

    Args:
        x: a batch of images (B, C, H, W).
        generator: source of the crop offsets and flips.
        padding: pixels of padding on each side (the crop offset ranges over 0..2·padding).
        pad_value: per-channel value of the padding (a black pixel after normalisation); None = 0.
    """
    b, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)  # (2, B)
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device)  # (B,)
    padded = x.new_empty(b, c, h + 2 * padding, w + 2 * padding)
    fill = torch.as_tensor(pad_value if pad_value is not None else (0.0,) * c, dtype=x.dtype, device=x.device)
    padded[:] = fill.view(1, c, 1, 1)
    padded[:, :, padding:padding + h, padding:padding + w] = x
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(-1), cols)[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]  # (B, C, H, W)


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


def _download(spec: IdxDataset | CifarDataset, root: Path) -> None:
    import torchvision

    cls = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # network errors come in many classes
        raise DataError(f"Downloading {spec.name!r} into {root} failed ({exc}). Without internet, "
                        f"copy {spec.folder}/raw/*.gz there yourself and run without dataset.download.") from exc


def read_abalone(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The UCI file's rows as features (n, 10) float64 (Sex one-hot M, F, I, then the 7 measurements) and Rings (n,)."""
    features, rings = [], []
    with open(path, encoding="ascii", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.strip().split(",")
            try:
                if len(fields) != 9 or fields[0] not in ABALONE_SEXES:
                    raise ValueError(f"expected Sex in {'/'.join(ABALONE_SEXES)} and 8 numbers")
                values = [float(v) for v in fields[1:]]
            except ValueError as exc:
                raise DataError(f"{path}, line {line_no}: {line.strip()[:80]!r} is not an Abalone row ({exc}); the "
                                f"UCI file has 9 comma-separated fields: Sex (M/F/I), 7 measurements, Rings.") from None
            features.append([float(fields[0] == s) for s in ABALONE_SEXES] + values[:7])
            rings.append(values[7])
    return np.asarray(features, dtype=np.float64).reshape(-1, 10), np.asarray(rings, dtype=np.float64)


def load_abalone(spec: TabularDataset, root: Path, train_subset: Optional[int] = None,
                 test_subset: Optional[int] = None) -> InMemoryData:
    """Abalone as a regression dataset: inputs (n, 10) float32, targets Rings (n, 1) float32 (not rescaled).

    The 4,177 rows are split by ``np.random.default_rng(split_seed).permutation``: the first 3,133 train, the
    other 1,044 test. The 7 measurements are standardised with the mean and std (ddof 0) of the whole training
    split (also when a subset is used, so every run sees the same inputs); the Sex one-hot columns are kept as 0/1.
    Subsets take the first n of each split.
    """
    path = root / spec.folder / spec.file
    if not path.exists():
        raise DataError(
            f"Dataset {spec.name!r} not found: looked for {path.name} in {path.parent} (dataset.root={str(root)!r}). "
            f"Point dataset.root (or the STABILITYSCOPE_DATA environment variable) at a folder holding "
            f"{spec.folder}/{spec.file}, the UCI Abalone file (archive.ics.uci.edu, dataset 1); it has no downloader, "
            f"so dataset.download=true cannot fetch it.")
    features, rings = read_abalone(path)
    if len(rings) != spec.n_train + spec.n_test:
        raise DataError(f"{path} has {len(rings)} rows; the UCI Abalone file has {spec.n_train + spec.n_test} "
                        f"(the split sizes {spec.n_train} / {spec.n_test} assume it).")
    perm = np.random.default_rng(spec.split_seed).permutation(len(rings))
    train, test = perm[:spec.n_train], perm[spec.n_train:]
    mean, std = features[train, 3:].mean(0), features[train, 3:].std(0)
    features[:, 3:] = (features[:, 3:] - mean) / std
    train, test = train[:train_subset], test[:test_subset]

    def as_tensors(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(features[rows].astype(np.float32)),
                torch.from_numpy(rings[rows].astype(np.float32)[:, None]))

    (x_train, y_train), (x_test, y_test) = as_tensors(train), as_tensors(test)
    return InMemoryData(spec.name, x_train, y_train, x_test, y_test, spec.num_classes, (10,), task="regression")


def dataset_task(name: str) -> str:
    """``regression`` for a table of ``DATASETS`` (Abalone), else ``classification`` (unknown names too:
    loading them fails with the list of datasets)."""
    return "regression" if isinstance(DATASETS.get(name), TabularDataset) else "classification"


def load_dataset(name: str, root: str | Path, *, download: bool = False,
                 train_subset: Optional[int] = None, test_subset: Optional[int] = None,
                 normalize: bool = False, binarize: Any = None) -> InMemoryData:
    """Load a dataset into memory as float32 images (n, C, H, W): pixels / 255, or standardised.

    Subsets take the first n examples of each split (deterministic, the same for every seed).

    Args:
        name: a key of ``DATASETS`` (``fashion_mnist``, ``mnist``, ``cifar10``, ``toy2d``: generated
            two interleaved spirals, 2,000 training and 1,000 test points unless the subsets say otherwise;
            ``abalone``: the UCI regression table, see ``load_abalone``, always standardised).
        root: folder in torchvision's on-disk layout (only read).
        download: fetch missing files with torchvision's downloader (needs internet; writes into root).
        train_subset: keep the first n training examples.
        test_subset: keep the first n test examples.
        normalize: subtract each channel's mean and divide by its std (``CHANNEL_STATS``).
        binarize: None (the dataset's labels), a rule of ``BINARY_RULES`` or a list of positive
            classes: a binary task with 2 classes (``binarize_labels``; checked before reading files).
    """
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}.")
    if binarize is not None:
        positive_classes(name, binarize)  # a rule that does not fit fails before the files are read
        return binarize_labels(load_dataset(name, root, download=download, train_subset=train_subset,
                                            test_subset=test_subset, normalize=normalize), binarize)
    spec, root = DATASETS[name], Path(root).expanduser()
    if isinstance(spec, ToyDataset):  # generated: the training and test sets are fixed draws (seeds 0 and 1)
        kw = dict(turns=spec.turns, jitter=spec.jitter, label_noise=spec.label_noise)
        (x_tr, y_tr), (x_te, y_te) = (two_spirals(train_subset or spec.n_train, 0, **kw),
                                      two_spirals(test_subset or spec.n_test, 1, **kw))
        return InMemoryData(name, torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te),
                            torch.from_numpy(y_te), spec.num_classes, (2,))
    if isinstance(spec, TabularDataset):
        return load_abalone(spec, root, train_subset, test_subset)
    if isinstance(spec, CifarDataset):
        pixels, targets = _load_cifar(spec, root, download, train_subset, test_subset)
    else:
        files = spec.files(root)
        if download and not all(p.exists() or p.with_name(p.name + ".gz").exists() for p in files.values()):
            _download(spec, root)
        for p in files.values():
            if not (p.exists() or p.with_name(p.name + ".gz").exists()):
                raise _missing(spec, root.resolve(), p)
        arrays = {k: read_idx(p) for k, p in files.items()}
        cut = {"x_train": train_subset, "y_train": train_subset, "x_test": test_subset, "y_test": test_subset}
        arrays = {k: a[: cut[k]] if cut[k] is not None else a for k, a in arrays.items()}
        # (n, 28, 28) uint8 → (n, 1, 28, 28): channel-first so that vision models accept it.
        pixels = {k: arrays[k][:, None] for k in ("x_train", "x_test")}
        targets = {k: arrays[k] for k in ("y_train", "y_test")}
    images = {k: torch.from_numpy(v.astype(np.float32) / 255.0) for k, v in pixels.items()}
    pad_value = None
    if normalize:
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in CHANNEL_STATS[name])
        images = {k: (v - mean) / std for k, v in images.items()}
        pad_value = tuple(float(v) for v in (-mean / std).flatten())
    labels = {k: torch.from_numpy(v.astype(np.int64)) for k, v in targets.items()}
    return InMemoryData(name, images["x_train"], labels["y_train"], images["x_test"], labels["y_test"],
                        spec.num_classes, tuple(images["x_train"].shape[1:]), pad_value)


def hold_out(data: InMemoryData, n: int) -> tuple[InMemoryData, tuple[torch.Tensor, torch.Tensor]]:
    """The data without its last ``n`` training examples, and those examples (x (n, ...), y (n,)): a validation
    split for early stopping, taken before any subsample or shuffle (the same examples for every run).

    Raises:
        ConfigError: ``n`` leaves fewer than one training example.
    """
    if not 0 < n < len(data.x_train):
        raise ConfigError(f"Invalid value dataset.validation={n}: hold out between 1 and {len(data.x_train) - 1} of "
                          f"the {len(data.x_train)} training examples (after dataset.train_subset).")
    split = len(data.x_train) - n
    kept = dataclasses.replace(data, x_train=data.x_train[:split], y_train=data.y_train[:split])
    return kept, (data.x_train[split:], data.y_train[split:])
