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


def penalised_objective(x: np.ndarray, y: np.ndarray, k: int, l2: float):
    """The baseline's objective in numpy: mean cross-entropy + ½·l2·‖w‖², and its analytic gradient."""
    n, d = x.shape
    onehot = np.eye(k)[y]

    def f(theta):
        w, b = theta[: k * d].reshape(k, d), theta[k * d:]
        z = x @ w.T + b
        p = np.exp(z - logsumexp(z, axis=1, keepdims=True))
        loss = -(z[np.arange(n), y] - logsumexp(z, axis=1)).mean() + 0.5 * l2 * (w * w).sum()
        g = (p - onehot) / n
        return loss, np.concatenate([(g.T @ x + l2 * w).ravel(), g.sum(0)])

    return f


# Float64 rounding of the objective: a mean of 1,500 terms of size ~1 plus a penalty of size ~0.1 is exact to
# ~1e-15; 1e-12 leaves three orders of magnitude for any BLAS's summation order.
ROUNDING = 1e-12


def test_the_fit_reaches_the_unique_optimum_an_independent_solver_finds(data):
    l2 = 1e-2
    L = fit_linear_baseline(data.x_train, data.y_train, 10, l2=l2)
    assert L.converged and L.grad_max <= 1e-4
    x, y = data.x_train.reshape(1500, -1).double().numpy(), data.y_train.numpy()
    f = penalised_objective(x, y, 10, l2)
    # The reference: scipy's L-BFGS-B from zero, solved far tighter than our stopping rule (max |gradient|
    # ~3e-9 against our ~1e-5), so its end point stands in for the optimum x*.
    ref = minimize(f, np.zeros(7850), jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-12, "ftol": 0.0, "maxcor": 30})
    assert np.abs(ref.jac).max() <= 1e-7
    ours = np.concatenate([L.weight.numpy().ravel(), L.bias.numpy()])
    f_ours, g_ours = f(ours)
    assert f_ours == pytest.approx(L.train_loss, abs=ROUNDING)  # torch and numpy evaluate one objective
    gap = f_ours - ref.fun
    # Bounds that follow from the objective, not from one processor's rounding path. It is convex, so
    # f(ours) − f(x*) <= ⟨∇f(ours), ours − x*⟩: our gap is at most what our own gradient allows (a fit
    # that stopped early or wandered off exceeds it); the stopping rule puts that below 1e-6.
    assert -ROUNDING <= gap <= g_ours @ (ours - ref.x) + ROUNDING
    assert gap <= 1e-6
    # The penalty makes it l2-strongly convex in w: (l2/2)·‖w − w*‖² <= f(ours) − f(x*).
    assert np.linalg.norm(ours[:7840] - ref.x[:7840]) <= np.sqrt(2 * (gap + ROUNDING) / l2)
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
