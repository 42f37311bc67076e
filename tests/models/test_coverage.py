"""Dissection coverage of timm and torchvision names on the meta device (no weights in memory).

CI dissects a representative sample (:data:`stabilityscope.models.coverage.SAMPLE`). The full sweep over
every ``timm.list_models()`` name and every torchvision classification model runs with
``STABILITYSCOPE_COVERAGE=full`` (``make coverage``; about 20 minutes on 2 CPU cores).
"""
from __future__ import annotations

import os

import pytest
import torch

from stabilityscope.models.coverage import SAMPLE, all_names, dissect_name, summary, sweep


@pytest.mark.parametrize("library,name", [(lib, n) for lib, names in SAMPLE.items() for n in names])
def test_sample_builds_on_meta_and_yields_fc_maps(library, name):
    r = dissect_name(library, name)
    assert r.built, r.error
    assert r.covered and r.maps >= 1, r.error or "no fully connected map"
    assert r.head_ok, f"{library}:{name}: no classifier head with the model's number of classes"


def test_meta_build_allocates_no_weights():
    from stabilityscope.models.coverage import _build

    model = _build("torchvision", "regnet_x_400mf")  # needs the fallback: its constructor calls .tolist()
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.skipif(os.environ.get("STABILITYSCOPE_COVERAGE") != "full",
                    reason="the full sweep runs with STABILITYSCOPE_COVERAGE=full (make coverage)")
def test_full_sweep_every_buildable_name_yields_a_map():
    torch.set_num_threads(1)
    results = sweep(all_names())
    print("\n" + summary(results))
    gaps = [f"{r.library}:{r.name}" for r in results if r.built and not r.covered]
    assert not gaps, f"built but no FC map: {gaps}"
