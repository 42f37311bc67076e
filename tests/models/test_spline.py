"""Degree-1 MARS and its exact ReLU network (Spline-FC): recovery, independent refits, exactness, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import stabilityscope as ss
from stabilityscope.errors import ConfigError, DataError, FitError
from stabilityscope.models.spline import MarsFit, fit_mars, to_network, widen
from stabilityscope.training.data import load_dataset

EXACT = 1e-10  # float64 agreement of the network with the MARS predictions (the requirement)


def grid_inputs(n: int, d: int, seed: int) -> np.ndarray:
    """n × d inputs, each column an independent shuffle of the grid i/(n−1): its deciles are exactly 0.1, 0.2, ..."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(np.arange(n) / (n - 1)) for _ in range(d)], 1)


def numpy_basis(x: np.ndarray, fit: MarsFit) -> np.ndarray:
    """[1, hinges, linear terms] built from the fit's terms with numpy alone."""
    cols = [np.ones(len(x))]
    cols += [np.maximum(0.0, s * (x[:, j] - t)) for j, t, s in zip(fit.feature.tolist(), fit.knot.tolist(),
                                                                   fit.sign.tolist())]
    cols += [x[:, j] for j in fit.linear_feature.tolist()]
    return np.stack(cols, 1)


def test_recovers_the_knots_of_a_known_piecewise_linear_function():
    """y = 2·max(0, x0 − 0.3) − max(0, 0.5 − x1) + noise: exactly those two hinges survive pruning."""
    x = grid_inputs(1001, 3, seed=0)
    clean = 2 * np.maximum(0, x[:, 0] - 0.3) - np.maximum(0, 0.5 - x[:, 1])
    y = clean + 0.01 * np.random.default_rng(1).standard_normal(len(x))
    fit = fit_mars(x, y, knots=9)  # candidate knots: the deciles 0.1, ..., 0.9 of each input
    assert [(t.feature, t.knot, t.sign) for t in fit.terms] == [(0, 0.3, 1), (1, 0.5, -1)]
    assert len(fit.forward) == 4  # the two reflected pairs; pruning dropped the two halves that carry nothing
    assert fit.coef[:, 0].tolist() == pytest.approx([2.0, -1.0], abs=3e-3)
    assert float(fit.intercept) == pytest.approx(0.0, abs=3e-3)
    assert fit.linear_feature.numel() == 0 and fit.squeeze
    assert np.abs(fit.predict(x).numpy() - clean).max() < 5e-3
    assert fit.r2 > 0.999


def test_forward_pass_matches_a_brute_force_greedy_search():
    """The batched, incrementally updated scores pick the same terms, with the same RSS, as one least-squares
    refit per candidate (numpy), step after step, on two outputs and with a binary (linear-only) input."""
    rng = np.random.default_rng(1)
    n, d, knots, max_terms = 300, 4, 7, 9
    x = rng.standard_normal((n, d))
    x[:, 3] = rng.integers(0, 2, n)
    y = np.stack([np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + 0.5 * x[:, 3], np.abs(x[:, 2]) - x[:, 0]], 1)
    y += 0.1 * rng.standard_normal((n, 2))
    fit = fit_mars(x, y, max_terms=max_terms, knots=knots, threshold=0.0, penalty=0.0)

    def rss(cols: list[np.ndarray]) -> float:
        b = np.stack(cols, 1)
        coef, *_ = np.linalg.lstsq(b, y, rcond=None)
        return float(((y - b @ coef) ** 2).sum())

    levels = np.round(np.arange(1, knots + 1) * (n - 1) / (knots + 1)).astype(int)
    basis, steps = [np.ones(n)], []
    while len(basis) < max_terms:
        best = None
        for j in range(d):
            knots_j = [t for t in np.unique(np.sort(x[:, j])[levels]) if x[:, j].min() < t < x[:, j].max()]
            for t in [None] + knots_j:  # None: the linear term
                cols = [x[:, j]] if t is None else [np.maximum(0, x[:, j] - t), np.maximum(0, t - x[:, j])]
                new: list[np.ndarray] = []  # only columns that are new (a reflected half can lie in the span)
                for c in cols:
                    if rss_free(basis + new, c) > 1e-9 * (c @ c):
                        new.append(c)
                options = [new] if len(basis) + len(new) <= max_terms else [[c] for c in new]  # one slot left
                for option in options:
                    r = rss(basis + option)
                    if option and (best is None or r < best[0] * (1 - 1e-12)):
                        best = (r, j, t, option)
        r, j, t, new = best
        basis += new
        steps.append((j, t, r))
    by_step: dict[int, list] = {}
    for term in fit.forward:
        by_step.setdefault(term.step, []).append(term)
    assert len(by_step) == len(steps)
    for (j, t, r), terms in zip(steps, by_step.values()):
        assert {term.feature for term in terms} == {j}
        assert all((term.sign == 0) == (t is None) for term in terms)
        if t is not None:
            assert terms[0].knot == t
        m = 1 + sum(len(v) for k, v in by_step.items() if k <= terms[0].step)
        assert rss(list(numpy_forward_basis(x, fit)[:m])) == pytest.approx(r, rel=1e-9)


def rss_free(basis: list[np.ndarray], c: np.ndarray) -> float:
    """The squared norm of c's part orthogonal to the basis columns."""
    b = np.stack(basis, 1)
    coef, *_ = np.linalg.lstsq(b, c, rcond=None)
    return float(((c - b @ coef) ** 2).sum())


def numpy_forward_basis(x: np.ndarray, fit: MarsFit) -> np.ndarray:
    """All forward-pass basis functions, intercept first, as rows (numpy)."""
    rows = [np.ones(len(x))]
    for t in fit.forward:
        rows.append(x[:, t.feature] if t.sign == 0 else np.maximum(0, t.sign * (x[:, t.feature] - t.knot)))
    return np.stack(rows)


def test_coefficients_rss_and_gcv_match_an_independent_least_squares_refit():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (500, 4))
    y = np.abs(x[:, 0]) + np.maximum(0, x[:, 1] - 0.2) * 3 - x[:, 2] + 0.05 * rng.standard_normal(500)
    fit = fit_mars(x, y, knots=16, penalty=3.0)
    b = numpy_basis(x, fit)
    coef, *_ = np.linalg.lstsq(b, y, rcond=None)
    np.testing.assert_allclose(fit.intercept.numpy(), coef[:1], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(torch.cat([fit.coef, fit.linear_coef])[:, 0].numpy(), coef[1:], rtol=1e-8, atol=1e-10)
    rss = float(((y - b @ coef) ** 2).sum())
    m = b.shape[1]  # basis functions, intercept included
    assert fit.rss == pytest.approx(rss, rel=1e-10)
    assert fit.gcv == pytest.approx(rss / 500 / (1 - (m + 3.0 * (m - 1) / 2) / 500) ** 2, rel=1e-10)
    assert fit.r2 == pytest.approx(1 - rss / float(((y - y.mean()) ** 2).sum()), rel=1e-12)
    assert fit.gcv == pytest.approx(float(fit.gcv_path.min()), rel=1e-8)  # pruning kept the lowest-GCV subset
    assert float(fit.gcv_path[m - 1]) == pytest.approx(fit.gcv, rel=1e-8)


def test_gcv_pruning_removes_the_terms_fitted_to_noise():
    """Forced to add 20 terms to one hinge plus noise, pruning keeps two, the true hinge among them, and the
    pruned model is much closer to the noise-free function than the full forward model."""
    x = grid_inputs(401, 5, seed=3)
    clean = 3 * np.maximum(0, x[:, 0] - 0.5)
    y = clean + 0.1 * np.random.default_rng(4).standard_normal(401)
    fit = fit_mars(x, y, max_terms=21, knots=9, threshold=0.0)
    assert len(fit.forward) == 20 and {t.feature for t in fit.forward} != {0}  # noise was fitted too
    assert len(fit.terms) == 2 and (0, 0.5, 1) in [(t.feature, t.knot, t.sign) for t in fit.terms]
    assert float(fit.gcv_path[-1]) > 1.05 * fit.gcv  # the full forward model is worse by GCV
    full = numpy_forward_basis(x, fit).T
    coef, *_ = np.linalg.lstsq(full, y, rcond=None)
    pruned_error = float(((fit.predict(x).numpy() - clean) ** 2).mean())
    assert pruned_error < 0.5 * float(((full @ coef - clean) ** 2).mean())


def test_several_outputs_share_one_basis():
    """Output 0 needs a hinge of x0, output 1 a hinge of x1: the fit holds both, each with the other's weight ≈ 0,
    and every output's coefficients are that output's own least-squares refit on the shared basis."""
    x = grid_inputs(801, 3, seed=5)
    noise = 0.01 * np.random.default_rng(6).standard_normal((801, 2))
    y = np.stack([2 * np.maximum(0, x[:, 0] - 0.4), -np.maximum(0, 0.7 - x[:, 1])], 1) + noise
    fit = fit_mars(x, y, knots=9)
    assert {(t.feature, t.knot, t.sign) for t in fit.terms} == {(0, 0.4, 1), (1, 0.7, -1)}
    assert fit.coef.shape == (2, 2) and fit.n_outputs == 2 and fit.predict(x).shape == (801, 2)
    by_feature = {int(j): fit.coef[i].numpy() for i, j in enumerate(fit.feature)}
    np.testing.assert_allclose(by_feature[0], [2.0, 0.0], atol=5e-3)
    np.testing.assert_allclose(by_feature[1], [0.0, -1.0], atol=5e-3)
    b = numpy_basis(x, fit)
    for p in range(2):
        coef, *_ = np.linalg.lstsq(b, y[:, p], rcond=None)
        np.testing.assert_allclose(np.concatenate([fit.intercept[p:p + 1].numpy(), fit.coef[:, p].numpy()]), coef,
                                   rtol=1e-8, atol=1e-10)
    one = fit_mars(x, y[:, 0], knots=9)  # the first output alone picks its own hinge only
    assert [(t.feature, t.knot) for t in one.terms] == [(0, 0.4)]


def test_the_network_computes_the_mars_predictions_exactly():
    """Hinges and linear terms (a binary input) in float64: the network equals f(x) to 1e-10, also off the data."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (600, 4))
    x[:, 2] = rng.integers(0, 2, 600)
    y = np.stack([np.maximum(0, x[:, 0] - 0.2) + 1.5 * x[:, 2] - np.abs(x[:, 1]), x[:, 3] ** 2 - x[:, 2]], 1)
    fit = fit_mars(x, y, knots=16)
    assert fit.feature.numel() >= 2 and 2 in fit.linear_feature.tolist()  # the binary input enters linearly
    net = to_network(fit)
    k, n_lin = fit.feature.numel(), fit.linear_feature.numel()
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    assert net[0].weight.shape == (k + 2 * n_lin, 4) and net[2].weight.shape == (2, k + 2 * n_lin)
    # hinge k: weight s_k·e_{j_k}, bias −s_k·t_k, outgoing β_k
    assert torch.equal(net[0].weight[torch.arange(k), fit.feature], fit.sign)
    assert (net[0].weight[:k] != 0).sum(1).tolist() == [1] * k
    assert torch.equal(net[0].bias[:k], -fit.sign * fit.knot) and torch.equal(net[2].bias, fit.intercept)
    far = torch.as_tensor(rng.uniform(-3, 3, (500, 4)))  # outside the training range too
    for inputs in (torch.as_tensor(x), far):
        with torch.no_grad():
            assert (net(inputs) - fit.predict(inputs)).abs().max() < EXACT


def test_abalone_fit_beats_linear_regression_and_converts_exactly(data_root):
    data = load_dataset("abalone", data_root)
    fit = fit_mars(data.x_train, data.y_train)
    x_test, y_test = data.x_test.double(), data.y_test.double()
    mse = float(((fit.predict(x_test) - y_test) ** 2).mean())
    ones = lambda x: np.hstack([np.ones((len(x), 1)), x[:, 1:]])  # noqa: E731 (one-hot M dropped: collinear)
    coef, *_ = np.linalg.lstsq(ones(data.x_train.double().numpy()), data.y_train.double().numpy(), rcond=None)
    linear_mse = float(((ones(x_test.numpy()) @ coef - y_test.numpy()) ** 2).mean())
    assert mse < 0.95 * linear_mse  # the hinges capture the non-linear growth curve
    assert 0.5 < fit.r2 < 0.7  # Rings are noisy: MARS explains a bit more than half of the variance
    with torch.no_grad():
        assert (to_network(fit)(x_test) - fit.predict(x_test)).abs().max() < EXACT


def test_fashion_mnist_one_hot_fit_shares_its_hinges_across_the_ten_classes(data_root):
    data = load_dataset("fashion_mnist", data_root, train_subset=2000, test_subset=1000)
    x, x_test = data.x_train.reshape(2000, -1), data.x_test.reshape(1000, -1).double()
    fit = fit_mars(x, torch.nn.functional.one_hot(data.y_train, 10), max_terms=41, knots=16)
    assert fit.coef.shape == (fit.feature.numel(), 10) and len(fit.forward) == 40
    accuracy = float((fit.predict(x_test).argmax(1) == data.y_test).double().mean())
    assert accuracy > 0.7  # 40 hinges of single pixels already separate most classes (chance: 0.1)
    net = to_network(fit)
    with torch.no_grad():
        assert (net(x_test) - fit.predict(x_test)).abs().max() < EXACT


def test_widen_keeps_the_function_and_lets_the_new_units_learn():
    x = grid_inputs(301, 3, seed=8)
    fit = fit_mars(x, np.abs(x[:, 0] - 0.5) + x[:, 1], knots=9)
    net = to_network(fit)
    h = net[0].out_features
    wide = widen(net, 64, scale=0.1, seed=3)
    inputs = torch.as_tensor(grid_inputs(200, 3, seed=9) * 4 - 2)
    with torch.no_grad():
        assert (wide(inputs) - net(inputs)).abs().max() < 1e-12
    assert wide[0].weight.shape == (64, 3) and wide[2].weight.shape == (1, 64)
    assert torch.equal(wide[0].weight[:h], net[0].weight) and torch.equal(wide[2].weight[:, :h], net[2].weight)
    assert torch.count_nonzero(wide[2].weight[:, h:]) == 0 and torch.count_nonzero(wide[0].bias[h:]) == 0
    new = wide[0].weight[h:]
    assert torch.count_nonzero(new) == new.numel()
    assert float(new.detach().std()) == pytest.approx(0.1 / math.sqrt(3), rel=0.2)
    assert torch.equal(widen(net, 64, scale=0.1, seed=3)[0].weight, wide[0].weight)  # seeded
    assert not torch.equal(widen(net, 64, scale=0.1, seed=4)[0].weight, wide[0].weight)
    assert net[0].out_features == h  # the original is untouched
    # The new units' outgoing weights get a gradient (they can be recruited); their incoming ones start without.
    wide(inputs).pow(2).mean().backward()
    assert torch.count_nonzero(wide[2].weight.grad[:, h:]) > 0
    assert torch.count_nonzero(wide[0].weight.grad[h:]) == 0


def test_widen_refuses_to_narrow_or_to_take_another_network():
    fit = fit_mars(grid_inputs(101, 2, 0), grid_inputs(101, 2, 0)[:, 0] ** 2, knots=5)
    net = to_network(fit)
    with pytest.raises(ConfigError, match=rf"width=1 must be an integer ≥ the network's {net[0].out_features}"):
        widen(net, 1)
    with pytest.raises(ConfigError, match="Sequential\\(Linear\\(d, K\\), ReLU\\(\\), Linear\\(K, p\\)\\)"):
        widen(torch.nn.Sequential(net[0], torch.nn.Tanh(), net[2]), 64)


def test_a_fit_without_terms_is_an_error_not_a_silent_fallback():
    x = grid_inputs(200, 3, seed=10)
    with pytest.raises(FitError, match="MARS selected no term: no hinge or linear term of the 3 inputs"):
        fit_mars(x, np.full(200, 4.0))
    noise = np.random.default_rng(11).standard_normal(200)
    with pytest.raises(FitError, match="GCV pruning with model.mars.penalty=50 prefers the intercept alone"):
        fit_mars(x, noise, max_terms=11, threshold=0.0, penalty=50.0)


@pytest.mark.parametrize("options,match", [
    ({"max_terms": 1}, "model.mars.max_terms=1"), ({"knots": 0}, "model.mars.knots=0"),
    ({"penalty": -1.0}, "model.mars.penalty=-1.0"), ({"threshold": 1.0}, "model.mars.threshold=1.0"),
    ({"knot": 3}, "Unknown key\\(s\\) model.mars.knot"),
])
def test_bad_options_are_named(options, match):
    with pytest.raises(ConfigError, match=match):
        fit_mars(grid_inputs(50, 2, 0), np.arange(50.0), **options)


def test_bad_data_is_named():
    x = grid_inputs(50, 2, 0)
    with pytest.raises(DataError, match=r"x must be a matrix \(n, d\)"):
        fit_mars(x[:, 0], np.arange(50.0))
    with pytest.raises(DataError, match="the n = 50 rows of x, got shape \\(49,\\)"):
        fit_mars(x, np.arange(49.0))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="x holds 1 NaN or infinite"):
        fit_mars(bad, np.arange(50.0))


def test_options_come_as_the_dataclass_or_keywords():
    x = grid_inputs(301, 2, seed=12)
    y = np.maximum(0, x[:, 0] - 0.5)
    a = fit_mars(x, y, ss.config.MarsConfig(knots=9, penalty=3.0))
    b = fit_mars(x, y, {"knots": 9}, penalty=3.0)
    assert a.options == b.options and torch.equal(a.coef, b.coef)
    assert ss.spline.fit_mars is fit_mars  # the lazy facade attribute
