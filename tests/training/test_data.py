"""Datasets read straight from the torchvision layout, without writing into the root."""
from __future__ import annotations

import gzip
import os
import shutil

import numpy as np
import pytest
import torch

from stabilityscope import open_trace
from stabilityscope.config import BINARY_RULE_NAMES, Config, as_options, to_container, validate
from stabilityscope.errors import ConfigError, DataError
from stabilityscope.training.data import (
    BINARY_RULES,
    DATASETS,
    binarize_labels,
    dataset_info,
    load_dataset,
    positive_classes,
    read_idx,
)


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


# -- binary tasks (dataset.binarize, SGD-complexity) ------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_greater_than_4_counts_are_the_sums_of_classes_5_to_9(data_root, name):
    d = load_dataset(name, data_root)
    b = binarize_labels(d, "greater_than_4")
    assert b.num_classes == 2 and b.x_train is d.x_train and b.input_shape == d.input_shape  # inputs shared
    for y, yb in ((d.y_train, b.y_train), (d.y_test, b.y_test)):
        counts = np.bincount(y.numpy(), minlength=10)
        assert np.bincount(yb.numpy()).tolist() == [counts[:5].sum(), counts[5:].sum()]
        assert torch.equal(yb, (y > 4).long())  # example by example, not only in total
    if name == "mnist":  # the published MNIST class counts: digits 5–9 are 29,404 of 60,000 and 4,861 of 10,000
        assert (int(b.y_train.sum()), int(b.y_test.sum())) == (29404, 4861)
    else:
        assert (int(b.y_train.sum()), int(b.y_test.sum())) == (30000, 5000)  # 6,000 / 1,000 per class


def test_vehicles_vs_animals_on_cifar10_and_the_equivalent_list(data_root):
    d = load_dataset("cifar10", data_root, train_subset=3000, test_subset=1000)
    b = binarize_labels(d, "vehicles_vs_animals")
    for y, yb in ((d.y_train, b.y_train), (d.y_test, b.y_test)):
        counts = np.bincount(y.numpy(), minlength=10)
        assert int(yb.sum()) == counts[[0, 1, 8, 9]].sum() and len(yb) - int(yb.sum()) == counts[2:8].sum()
        assert yb.tolist() == [int(c in (0, 1, 8, 9)) for c in y.tolist()]
    assert 0.3 < float(b.y_train.float().mean()) < 0.5  # about 40% vehicles: the binary task is imbalanced
    listed = load_dataset("cifar10", data_root, train_subset=3000, test_subset=1000, binarize=[9, 8, 1, 0])
    assert torch.equal(listed.y_train, b.y_train) and torch.equal(listed.y_test, b.y_test)
    assert listed.num_classes == 2 and listed.x_train.shape == (3000, 3, 32, 32)


def test_a_list_rule_and_none(data_root):
    d = load_dataset("fashion_mnist", data_root, train_subset=500, test_subset=100)
    assert binarize_labels(d, None) is d
    b = binarize_labels(d, [3])  # dress against the rest
    assert b.y_train.tolist() == (d.y_train == 3).long().tolist() and int(b.y_train.sum()) == 49  # 49 dresses
    assert b.y_test.tolist() == (d.y_test == 3).long().tolist()
    assert dataset_info("fashion_mnist", [3]) == ((1, 28, 28), 2)
    assert dataset_info("fashion_mnist") == ((1, 28, 28), 10)


@pytest.mark.parametrize("name,rule,words", [
    ("mnist", "vehicles_vs_animals", ["'vehicles_vs_animals'", "cifar10", "'mnist'"]),
    ("cifar10", "greater_than_4", ["'greater_than_4'", "mnist and fashion_mnist", "'cifar10'"]),
    ("mnist", [3, 10], ["[3, 10]", "0..9"]),
    ("mnist", [-1], ["[-1]", "0..9"]),
    ("mnist", [2, 2], ["[2, 2]", "at most once"]),
    ("mnist", [], ["[]", "neither empty"]),
    ("mnist", list(range(10)), ["every class", "'mnist'"]),
    ("toy2d", [1], ["'toy2d'", "already a binary task", "null"]),
    ("abalone", "greater_than_4", ["'abalone'", "regression table", "null"]),
    ("mnist", "odd_digits", ["'odd_digits'", "greater_than_4", "vehicles_vs_animals"]),
    ("mnist", 3, ["dataset.binarize=3", "list of positive class indices"]),
])
def test_a_rule_that_does_not_fit_the_dataset_is_refused(tmp_path, name, rule, words):
    for call in (lambda: positive_classes(name, rule), lambda: dataset_info(name, rule),
                 lambda: load_dataset(name, tmp_path, binarize=rule)):  # refused before any file is looked for
        with pytest.raises(DataError) as err:
            call()
        assert all(w in str(err.value) for w in words), str(err.value)


def test_binarising_twice_is_refused(data_root):
    b = load_dataset("mnist", data_root, train_subset=10, test_subset=10, binarize="greater_than_4")
    with pytest.raises(DataError, match="already has 2 classes"):
        binarize_labels(b, [1])


def test_the_config_names_the_same_rules_as_the_data_layer():
    assert tuple(sorted(BINARY_RULES)) == tuple(sorted(BINARY_RULE_NAMES))


@pytest.mark.parametrize("override,expected", [
    ("dataset.binarize=greater_than_4", "greater_than_4"), ("dataset.binarize=[0,1,8,9]", [0, 1, 8, 9]),
    ("dataset.binarize=null", None),
])
def test_binarize_composes_from_the_command_line(compose_cfg, override, expected):
    cfg = compose_cfg(override)
    validate(cfg)
    assert to_container(as_options(cfg, Config))["dataset"]["binarize"] == expected  # as the trace stores it


@pytest.mark.parametrize("override,shown", [
    ("dataset.binarize=odd", "'odd'"), ("dataset.binarize=[]", "[]"), ("dataset.binarize=[1,1]", "[1, 1]"),
    ("dataset.binarize=[-2]", "[-2]"), ("dataset.binarize=[a]", "['a']"), ("dataset.binarize=3", "3"),
    ("dataset.binarize=[true]", "[True]"),
])
def test_config_validation_names_the_bad_rule_and_the_allowed_ones(compose_cfg, override, shown):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(override))
    msg = str(err.value)
    assert f"dataset.binarize={shown}" in msg and "greater_than_4" in msg and "vehicles_vs_animals" in msg, msg


def test_a_binary_run_through_the_app_has_a_two_output_head(tmp_path, compose_cfg, data_root):
    from stabilityscope.cli.app import run_task

    cfg = compose_cfg("dataset=mnist", f"dataset.root={data_root}", "dataset.binarize=greater_than_4",
                      "dataset.train_subset=256", "dataset.test_subset=64", "train.epochs=1", "analysis=economy",
                      "model.width=64", "figures=false", "report=false")
    run_task(as_options(cfg, Config), tmp_path, [])
    with open_trace(tmp_path / "trace.h5") as tr:
        assert tr.status == "finished" and tr.config["dataset"]["binarize"] == "greater_than_4"
        assert tr.metric("train_loss")[0] == pytest.approx(np.log(2), rel=0.15)  # untrained: chance on 2 classes
        assert tr.layer_info("head")["fan_out"] == 2
    state = torch.load(tmp_path / "state" / "epoch_000001.pt", map_location="cpu", weights_only=True)
    assert state["model"]["head.weight"].shape == (2, 64) and state["model"]["head.bias"].shape == (2,)
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
