"""Config composition: every group option composes; bad keys, types and values fail clearly."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from stabilityscope.cli.app import conf_dir
from stabilityscope.config import validate
from stabilityscope.errors import ConfigError

GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in Path(conf_dir()).iterdir()
          if g.is_dir() and g.name != "hydra"}  # hydra/launcher: tests/cli/test_sweeps.py
APPENDED = {"eoc_case", "spline_optim"}  # groups outside the defaults list, added with + (the sweep presets do)
OPTIONS = [(group, option) for group, options in sorted(GROUPS.items()) for option in options]


def test_every_documented_group_exists():
    assert {"model", "dataset", "optim", "experiment", "analysis"} <= set(GROUPS)


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_group_option_composes_and_validates(compose_cfg, group, option):
    cfg = compose_cfg(f"{'+' if group in APPENDED else ''}{group}={option}")
    validate(cfg)
    if group in ("model", "dataset", "optim", "analysis"):
        assert str(getattr(cfg[group].name, "value", cfg[group].name)) == option


def test_defaults_are_the_canonical_case(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model.name == "fmnist_fc" and cfg.model.width == 784 and cfg.model.activation.value == "tanh"
    assert cfg.model.init_J == 0.5 and cfg.model.init_J0 == 0.0
    assert cfg.dataset.name == "fashion_mnist"
    assert (cfg.optim.name.value, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.02, 0.5, 0.0)
    assert cfg.train.batch_size == 32
    assert cfg.train.checkpoints.kind.value == "every" and cfg.train.checkpoints.every == 1


def test_abalone_brings_the_optimiser_its_results_used(compose_cfg):
    # Rings is not rescaled: the canonical SGD (lr 0.02) diverges in the first epoch, so the dataset brings Adam
    cfg = compose_cfg("dataset=abalone", "model=tabular_mlp")
    assert (cfg.optim.name.value, cfg.optim.lr) == ("adam", 0.001)
    assert compose_cfg("dataset=abalone", "optim=sgd").optim.name.value == "sgd"  # an explicit choice still wins
    assert compose_cfg("experiment=spline_abalone").optim.name.value == "adam"


def test_data_root_follows_environment(compose_cfg, monkeypatch):
    monkeypatch.setenv("STABILITYSCOPE_DATA", "/somewhere/else")
    assert compose_cfg().dataset.root == "/somewhere/else"
    monkeypatch.delenv("STABILITYSCOPE_DATA")
    assert compose_cfg().dataset.root == "data"


def test_misspelt_key_is_named(compose_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg("train.epoch=3")
    assert "epoch" in str(err.value.__cause__ or err.value)


def test_wrong_type_is_named(compose_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_cfg("train.epochs=many")
    assert "epochs" in str(err.value.__cause__ or err.value) or "many" in str(err.value.__cause__ or err.value)


def test_unknown_option_fails(compose_cfg):
    with pytest.raises(ConfigCompositionException):
        compose_cfg("model=nope")


def test_enum_values_are_listed(compose_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError, ConfigKeyError)) as err:
        compose_cfg("model.activation=sine")
    text = str(err.value.__cause__ or err.value)
    assert "tanh" in text and "relu" in text


@pytest.mark.parametrize("override,key", [
    ("optim.lr=0", "optim.lr"), ("optim.lr=-0.1", "optim.lr"), ("train.epochs=0", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"), ("train.batch_size=-4", "train.batch_size"),
    ("optim.momentum=1.0", "optim.momentum"), ("dataset.train_subset=0", "dataset.train_subset"),
    ("train.device=tpu", "train.device"), ("optim.lr=nan", "optim.lr"),
])
def test_out_of_range_values_are_rejected(compose_cfg, override, key):
    cfg = compose_cfg(override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert key in str(err.value)
