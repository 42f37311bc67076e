"""The linear baseline L of SGD-complexity: L-BFGS against an independent scipy fit, caching, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from stabilityscope.training.baseline import fit_linear_baseline, load_baseline
from stabilityscope.training.data import load_dataset


@pytest.fixture(scope="module")
def data(data_root):
    return load_dataset("fashion_mnist", str(data_root), train_subset=1500, test_subset=500)


def scipy_fit(x: np.ndarray, y: np.ndarray, k: int, l2: float) -> tuple[np.ndarray, float]:
    """The same penalised objective, minimised by scipy's L-BFGS-B with an analytic gradient."""
    n, d = x.shape
    onehot = np.eye(k)[y]

    def f(theta):
        w, b = theta[: k * d].reshape(k, d), theta[k * d:]
        z = x @ w.T + b
        p = np.exp(z - logsumexp(z, axis=1, keepdims=True))
        loss = -(z[np.arange(n), y] - logsumexp(z, axis=1)).mean() + 0.5 * l2 * (w * w).sum()
        g = (p - onehot) / n
        return loss, np.concatenate([(g.T @ x + l2 * w).ravel(), g.sum(0)])

    res = minimize(f, np.zeros(k * d + k), jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-9})
    return res.x, float(res.fun)


def test_the_fit_reaches_the_unique_optimum_an_independent_solver_finds(data):
    L = fit_linear_baseline(data.x_train, data.y_train, 10, l2=1e-2)
    assert L.converged and L.grad_max <= 1e-4
    theta, fun = scipy_fit(data.x_train.reshape(1500, -1).double().numpy(), data.y_train.numpy(), 10, 1e-2)
    # a strictly convex objective has one minimum: both reach it (scipy stops at its ftol, ~2e-8 above ours)
    assert L.train_loss == pytest.approx(fun, abs=1e-7) and L.train_loss <= fun + 1e-9
    np.testing.assert_allclose(L.weight.numpy().ravel(), theta[:7840], atol=2e-3)
    assert L.accuracy(data.x_test, data.y_test) > 0.75


def test_a_fit_round_trips_through_its_cache_file(tmp_path, data):
    with pytest.warns(RuntimeWarning, match="did not converge"):  # 50 iterations: quick, not converged
        L = fit_linear_baseline(data.x_train, data.y_train, 10, max_iter=50)
    back = load_baseline(L.save(tmp_path / "baseline.pt"))
    assert torch.equal(back.weight, L.weight) and back.iterations == L.iterations == 50
    assert torch.equal(back.predict(data.x_test), L.predict(data.x_test))


def test_an_unconverged_fit_says_so(data):
    with pytest.warns(RuntimeWarning, match="did not converge"):
        L = fit_linear_baseline(data.x_train, data.y_train, 10, max_iter=3)
    assert not L.converged


def test_bad_input(data):
    with pytest.raises(ValueError, match="1500 inputs and 3 labels"):
        fit_linear_baseline(data.x_train, data.y_train[:3], 10)
    with pytest.raises(ValueError, match="labels must lie in"):
        fit_linear_baseline(data.x_train, data.y_train, 5)
