"""Logistic-map reference (docs/science/iterated-maps.md): periods, Lyapunov exponents, doublings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stabilityscope.theory.logistic import (
    PERIOD_DOUBLINGS,
    R_INFINITY,
    bifurcation_data,
    detect_period,
    logistic_lyapunov,
    logistic_orbit,
    period_doubling_points,
)

# ---- tolerances, in one place -------------------------------------------------------------
LYAP_LN2_ATOL = 1e-2  # lambda(4) = ln 2 from a finite chaotic time average
LYAP_EXACT_ATOL = 1e-6  # periodic r: lambda = ln|multiplier| / period exactly
LYAP_EDGE_ATOL = 1e-2  # lambda(r_inf) -> 0, approached slowly
DOUBLING_ATOL = 1e-3  # r_k against the reference values (docs/science/iterated-maps.md)


def test_detect_period_textbook_values():
    r = np.array([2.8, 3.2, 3.5, 3.56, 3.9])
    period, bits = detect_period(logistic_orbit(r))
    assert period.tolist() == [1, 2, 4, 8, 0]
    np.testing.assert_allclose(bits[:4], [0.0, 1.0, 2.0, 3.0])
    assert np.isnan(bits[4])


def test_orbit_shapes_values_and_torch():
    r = np.array([2.8, 3.2, 3.9])
    orbit = logistic_orbit(r, steps=50, transient=500)
    assert orbit.shape == (3, 50) and orbit.dtype == np.float64
    assert np.all((orbit >= 0) & (orbit <= 1))
    np.testing.assert_allclose(orbit[0], 1 - 1 / 2.8, atol=1e-12)  # stable fixed point 1 - 1/r
    ot = logistic_orbit(torch.tensor(r), steps=50, transient=500)
    assert isinstance(ot, torch.Tensor) and ot.shape == (3, 50)
    np.testing.assert_allclose(ot.numpy(), orbit, rtol=0, atol=0)  # same float64 arithmetic
    with pytest.raises(ValueError):
        detect_period(orbit[:, :10], max_period=8)


def test_lyapunov_values():
    r = np.array([4.0, 2.8, 3.2, 3.5, 3.56, 3.83, 3.9])
    lam = logistic_lyapunov(r)
    assert lam[0] == pytest.approx(math.log(2.0), abs=LYAP_LN2_ATOL)
    assert lam[1] == pytest.approx(math.log(0.8), abs=LYAP_EXACT_ATOL)  # f'(x*) = 2 - r
    # 2-cycle multiplier -r^2 + 2r + 4 (= 0.16 at r = 3.2)
    assert lam[2] == pytest.approx(math.log(-(3.2**2) + 2 * 3.2 + 4) / 2, abs=LYAP_EXACT_ATOL)
    assert np.all(lam[1:6] < 0)  # periodic windows, including the period-3 window at 3.83
    assert lam[6] > 0
    lt = logistic_lyapunov(torch.tensor([4.0, 3.2]), steps=20_000)
    assert isinstance(lt, torch.Tensor) and float(lt[1]) == pytest.approx(lam[2], abs=LYAP_EXACT_ATOL)


def test_lyapunov_vanishes_at_onset_of_chaos():
    lam_edge, lam_below = logistic_lyapunov(np.array([R_INFINITY, 3.5]))
    assert abs(lam_edge) < LYAP_EDGE_ATOL
    assert lam_below < -0.5


def test_period_doubling_points():
    r = period_doubling_points(4)
    assert r.shape == (4,)
    np.testing.assert_allclose(r, PERIOD_DOUBLINGS, atol=DOUBLING_ATOL)
    assert r[1] == pytest.approx(1 + math.sqrt(6), abs=DOUBLING_ATOL)
    assert np.all(np.diff(r) > 0)


def test_bifurcation_data():
    r, states = bifurcation_data(2.5, 4.0, 64, steps=32, transient=200)
    assert r.shape == (64,) and states.shape == (64, 32)
    assert r[0] == 2.5 and r[-1] == 4.0
