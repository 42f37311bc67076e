"""Datasets read straight from the torchvision layout, without writing into the root."""
from __future__ import annotations

import gzip
import os
import shutil

import numpy as np
import pytest

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
