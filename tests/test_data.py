"""Datasets read straight from the torchvision layout, without writing into the root."""
from __future__ import annotations

import gzip
import os
import shutil

import numpy as np
import pytest
import torch

from stabilityscope.errors import DataError
from stabilityscope.training.data import DATASETS, load_dataset, read_idx


@pytest.mark.parametrize("name,n_train,n_test", [("fashion_mnist", 60000, 10000), ("mnist", 60000, 10000)])
def test_full_datasets_load_with_expected_shapes(data_root, name, n_train, n_test):
    before = sorted(os.listdir(data_root / DATASETS[name].folder / "raw"))
    d = load_dataset(name, data_root)
    assert d.x_train.shape == (n_train, 1, 28, 28) and d.x_test.shape == (n_test, 1, 28, 28)
    assert d.x_train.dtype.is_floating_point and 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) == 1.0
    assert np.bincount(d.y_train.numpy()).tolist() == [6000] * 10 if name == "fashion_mnist" else True
    assert d.num_classes == 10 and d.input_shape == (1, 28, 28)
    assert sorted(os.listdir(data_root / DATASETS[name].folder / "raw")) == before  # nothing written


def test_fashion_mnist_first_labels_match_the_original_file(data_root):
    d = load_dataset("fashion_mnist", data_root, train_subset=10, test_subset=5)
    # The first training labels of Fashion-MNIST (ankle boot, T-shirt, T-shirt, dress, ...).
    assert d.y_train.tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert len(d.x_test) == 5


def test_uncompressed_idx_files_are_read_too(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for src in (data_root / "MNIST" / "raw").glob("*.gz"):
        with gzip.open(src, "rb") as fin, open(raw / src.stem, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    a = load_dataset("mnist", tmp_path, test_subset=50)
    b = load_dataset("mnist", data_root, test_subset=50)
    assert (a.x_test == b.x_test).all() and (a.y_train == b.y_train).all()


def test_missing_data_names_folder_and_both_fixes(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg
    assert "dataset.root" in msg and "STABILITYSCOPE_DATA" in msg and "dataset.download=true" in msg


def test_truncated_file_is_reported(tmp_path):
    p = tmp_path / "bad-idx1-ubyte"
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 10, 1, 2, 3]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match="fashion_mnist"):
        load_dataset("imagenet", tmp_path)


# ------------------------------------------------------------------------------- Abalone (regression)


def _abalone_by_hand(path) -> tuple[np.ndarray, np.ndarray]:
    """An independent reading of the UCI file: one-hot Sex (M, F, I), 7 measurements, Rings; seeded split."""
    import csv

    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    x = np.array([[r[0] == "M", r[0] == "F", r[0] == "I"] + [float(v) for v in r[1:8]] for r in rows], float)
    y = np.array([float(r[8]) for r in rows])
    perm = np.random.default_rng(0).permutation(len(rows))
    train = x[perm[:3133], 3:]
    x[:, 3:] = (x[:, 3:] - train.mean(0)) / train.std(0)
    return x[perm], y[perm]


def test_abalone_is_a_seeded_standardised_regression_split(data_root):
    from stabilityscope.training.data import dataset_info

    d = load_dataset("abalone", data_root)
    assert d.task == "regression" and d.num_classes == 1 and d.input_shape == (10,)
    assert dataset_info("abalone") == ((10,), 1)
    assert d.x_train.shape == (3133, 10) and d.x_test.shape == (1044, 10)
    assert d.y_train.shape == (3133, 1) and d.y_train.dtype == torch.float32 and d.x_train.dtype == torch.float32
    x, y = _abalone_by_hand(data_root / "abalone" / "abalone.data")
    np.testing.assert_allclose(torch.cat([d.x_train, d.x_test]).numpy(), x, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(torch.cat([d.y_train, d.y_test])[:, 0].numpy(), y)
    sex = torch.cat([d.x_train, d.x_test])[:, :3]
    assert sex.sum(0).tolist() == [1528, 1307, 1342] and (sex.sum(1) == 1).all()  # the README's counts
    rings = torch.cat([d.y_train, d.y_test])
    assert rings.min() == 1 and rings.max() == 29 and (rings == rings.round()).all()
    assert float(rings.mean()) == pytest.approx(9.9337, abs=1e-4)  # the UCI documentation's mean
    # the measurements are standardised on the training split only
    np.testing.assert_allclose(d.x_train[:, 3:].double().mean(0).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(d.x_train[:, 3:].double().std(0, unbiased=False).numpy(), 1, atol=1e-6)
    assert float(d.x_test[:, 3:].mean(0).abs().max()) > 1e-3


def test_abalone_subsets_and_moves_keep_the_split_and_the_task(data_root):
    from stabilityscope.config import DatasetConfig, ModelConfig
    from stabilityscope.training.subsample import apply_subsample

    full = load_dataset("abalone", data_root)
    part = load_dataset("abalone", data_root, train_subset=100, test_subset=50)
    assert torch.equal(part.x_train, full.x_train[:100]) and torch.equal(part.y_test, full.y_test[:50])
    assert full.to("cpu").task == "regression"
    half = apply_subsample(full, DatasetConfig(name="abalone", subsample="random", subsample_fraction=0.5),
                           ModelConfig(), seed=0)
    assert half.task == "regression" and len(half.x_train) == len(half.y_train) < 3133


def test_abalone_missing_or_malformed_file_is_reported(tmp_path, data_root):
    with pytest.raises(DataError) as err:
        load_dataset("abalone", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "abalone") in msg and "abalone.data" in msg
    assert "dataset.root" in msg and "STABILITYSCOPE_DATA" in msg
    (tmp_path / "abalone").mkdir()
    lines = (data_root / "abalone" / "abalone.data").read_text().splitlines()
    (tmp_path / "abalone" / "abalone.data").write_text("\n".join(lines[:6] + ["X,0.1,0.2"] + lines[7:]) + "\n")
    with pytest.raises(DataError, match="line 7: 'X,0.1,0.2' is not an Abalone row"):
        load_dataset("abalone", tmp_path)
    (tmp_path / "abalone" / "abalone.data").write_text("\n".join(lines[:100]) + "\n")
    with pytest.raises(DataError, match="has 100 rows; the UCI Abalone file has 4177"):
        load_dataset("abalone", tmp_path)
