"""Samplers: what they draw, how they weigh it, and that IS stays unbiased."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dltutorials_is.sampling.samplers import (
    ImportanceSampler,
    ReplacementSampler,
    UniformSampler,
    format_p_summary,
    make_sampler,
    summarize_p,
    uniform_p_warning,
)


def reference_minibatches(n, minibatch_size, rng):
    """The original tutorial's get_minibatches_idx(shuffle=True), drawing from `rng`."""
    idx = np.arange(n, dtype="int32")
    rng.shuffle(idx)
    full = [idx[k * minibatch_size : (k + 1) * minibatch_size] for k in range(n // minibatch_size)]
    return full + ([idx[len(full) * minibatch_size :]] if n % minibatch_size else [])


def counts_over_epochs(sampler, n, epochs, seed):
    rng = np.random.RandomState(seed)
    counts = np.zeros(n)
    for _ in range(epochs):
        for indices, _ in sampler.epoch(rng):
            np.add.at(counts, indices, 1)
    return counts


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (7, 16), (1, 1)])
def test_uniform_sampler_is_the_tutorials_shuffle(n, batch_size):
    ours, theirs = np.random.RandomState(123), np.random.RandomState(123)
    sampler = UniformSampler(n, batch_size)
    for _ in range(3):  # consecutive epochs consume the RandomState identically
        batches = sampler.epoch(ours)
        expected = reference_minibatches(n, batch_size, theirs)
        assert len(batches) == len(expected)
        for (indices, weights), ref in zip(batches, expected):
            assert indices.dtype == np.int32
            np.testing.assert_array_equal(indices, ref)
            np.testing.assert_array_equal(weights, np.ones(len(ref)))


def test_importance_sampler_frequencies_follow_p():
    # 20 samples, p ∝ 1..20, 500 epochs of 20 draws: the smallest expected count is 10,000/210 ≈ 48,
    # large enough for Pearson's chi-square. The seed is fixed, so the test is deterministic; a
    # correct sampler passes at the 0.1 % level, and the same counts reject the uniform law.
    n = 20
    p = np.arange(1, n + 1) / (n * (n + 1) / 2)
    counts = counts_over_epochs(ImportanceSampler(p, batch_size=6), n, epochs=500, seed=0)
    assert counts.sum() == 500 * n
    assert stats.chisquare(counts, 500 * n * p).pvalue > 1e-3
    assert stats.chisquare(counts, np.full(n, 500.0)).pvalue < 1e-20


def test_importance_draws_equal_numpy_choice_with_p():
    p = np.random.RandomState(1).dirichlet(np.ones(50))
    ours = ImportanceSampler(p, batch_size=50).draw_order(np.random.RandomState(5))
    theirs = np.random.RandomState(5).choice(50, 50, p=p)
    np.testing.assert_array_equal(ours, theirs)


def test_importance_weights_are_one_over_n_p():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    sampler = ImportanceSampler(p, batch_size=3)
    for indices, weights in sampler.epoch(np.random.RandomState(0)):
        np.testing.assert_allclose(weights, 1.0 / (4 * p[indices]))
        assert len(indices) <= 3


def least_squares_gradients(x, y, w):
    """Per-sample gradients of f_i(w) = ½ (x_i·w − y_i)², one row per sample."""
    return (x @ w - y)[:, None] * x


def test_weighted_gradient_is_exactly_unbiased():
    rng = np.random.RandomState(3)
    n, d = 9, 4
    x, y, w = rng.randn(n, d), rng.randn(n), rng.randn(d)
    g = least_squares_gradients(x, y, w)
    p = rng.dirichlet(np.ones(n))
    sampler = ImportanceSampler(p, batch_size=1)
    weights = sampler.weights_of(np.arange(n))
    expectation = (p * weights) @ g  # E_{i~P}[w_i g_i], summed exactly
    np.testing.assert_allclose(expectation, g.mean(axis=0), rtol=1e-12, atol=1e-14)
    # The training cost mean(weights · losses) over drawn batches then averages to the full-batch mean:
    rng_draw = np.random.RandomState(4)
    estimates = [np.mean(wts[:, None] * g[idx], axis=0)
                 for _ in range(2000) for idx, wts in sampler.epoch(rng_draw)]
    est = np.asarray(estimates)
    stderr = est.std(axis=0) / np.sqrt(len(est))
    assert np.all(np.abs(est.mean(axis=0) - g.mean(axis=0)) < 5 * stderr)


def test_replacement_sampler_draws_uniformly_with_replacement():
    n = 15
    sampler = ReplacementSampler(n, batch_size=4)
    rng = np.random.RandomState(2)
    order = sampler.draw_order(np.random.RandomState(2))
    np.testing.assert_array_equal(order, np.random.RandomState(2).randint(0, n, size=n))
    assert len(set(order)) < n  # with replacement: this seed repeats samples
    batches = sampler.epoch(rng)
    assert sum(len(b) for b, _ in batches) == n
    assert all(np.array_equal(wts, np.ones(len(b))) for b, wts in batches)
    counts = counts_over_epochs(sampler, n, epochs=400, seed=3)  # 400 expected per sample
    assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize(
    "p, message",
    [
        ([0.5, 0.4], "sum to 0.9"),
        ([0.5, 0.5, 0.0], "finite and > 0"),
        ([1.2, -0.2], "finite and > 0"),
        ([np.nan, 1.0], "finite and > 0"),
    ],
)
def test_importance_sampler_rejects_bad_p(p, message):
    with pytest.raises(ValueError, match=message):
        ImportanceSampler(np.array(p), batch_size=2)


def test_make_sampler_by_name_and_its_errors():
    assert isinstance(make_sampler("uniform", 5, 2), UniformSampler)
    assert isinstance(make_sampler("replacement", 5, 2), ReplacementSampler)
    assert isinstance(make_sampler("importance", 2, 2, p=np.array([0.25, 0.75])), ImportanceSampler)
    with pytest.raises(ValueError, match="P has 2 entries but the training set has 3"):
        make_sampler("importance", 3, 2, p=np.array([0.25, 0.75]))
    with pytest.raises(ValueError, match="needs a probability vector"):
        make_sampler("importance", 3, 2)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("online", 3, 2)
    with pytest.raises(ValueError, match="empty"):
        UniformSampler(0, 2)
    with pytest.raises(ValueError, match="batch size"):
        UniformSampler(3, 0)


def test_p_summary():
    uniform = summarize_p(np.full(8, 1 / 8))
    assert uniform["cv"] == pytest.approx(0) and uniform["ess"] == pytest.approx(1)
    assert uniform["speedup_bound"] == pytest.approx(1) and uniform["max_over_min"] == pytest.approx(1)
    p = np.array([0.1, 0.1, 0.2, 0.6])
    s = summarize_p(p)
    assert s["max_over_min"] == pytest.approx(6)
    assert s["speedup_bound"] == pytest.approx(1 + s["cv"] ** 2)
    assert s["ess"] == pytest.approx(1 / (4 * np.sum(p**2)))
    assert "CV" in format_p_summary(p) and "eq. 13" in format_p_summary(p)


def _p(scores):
    scores = np.asarray(scores, dtype="float64")
    return scores / scores.sum()


def test_a_uniform_p_gets_one_warning_naming_the_kinds_that_spread_p_more():
    rng = np.random.RandomState(0)
    nearly_uniform = _p(1 + 1e-3 * rng.rand(1000))  # bound 1 + ~1e-7
    others = {"displacement": _p(1 + 0.08 * rng.randn(1000).clip(-3, 3)),  # bound ~1.0064
              "grad0": _p(rng.rand(1000) + 0.1),  # bound ~1.3
              "path": _p(1 + 1e-4 * rng.rand(1000))}  # even flatter: not named
    line = uniform_p_warning(nearly_uniform, others)
    bound = summarize_p(nearly_uniform)["speedup_bound"]
    assert line.startswith("warning: this P is uniform to within a coefficient of variation of ")
    assert "\n" not in line and f"(eq. 13 bound {bound:.7g})" in line
    assert "importance sampling cannot speed training up" in line
    named = line.split("the score kinds that spread P more here are: ")[1]
    grad0 = summarize_p(others["grad0"])["speedup_bound"]
    displacement = summarize_p(others["displacement"])["speedup_bound"]
    assert named == f"grad0 (bound {grad0:.5g}), displacement (bound {displacement:.5g})"  # best first
    assert uniform_p_warning(nearly_uniform, {"path": others["path"]}).endswith("no other score kind here spreads P more")
    assert uniform_p_warning(nearly_uniform).endswith("cannot speed training up")


def test_no_warning_for_a_p_that_can_help():
    assert uniform_p_warning(_p([1, 1, 1, 1.2])) is None  # bound 1.0068
    assert uniform_p_warning(_p([1, 1, 1, 1.05])) is not None  # bound 1.00046: within 1e-3 of 1
    assert uniform_p_warning(np.full(5, 0.2), {}) is not None
