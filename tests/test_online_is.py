"""Behaviour of the Katharopoulos & Fleuret online importance sampler (dltutorials_is/sampling/online.py)."""
import numpy as np
import pytest

from dltutorials_is.sampling.online import OnlineImportanceSampler, break_even_tau, equivalent_batch_increment

N = 12
# Toy per-sample "gradients" (2-d) with very different sizes; the score is the gradient norm.
GRADS = np.random.RandomState(0).randn(N, 2) * np.linspace(0.1, 5.0, N)[:, None]


def norm_scores(indices):
    return np.linalg.norm(GRADS[indices], axis=1)


def weighted_mean_gradient(indices, weights):
    return (weights[:, None] * GRADS[indices]).mean(axis=0)


def test_is_weights_are_unbiased_for_the_uniform_mean_gradient():
    sampler = OnlineImportanceSampler(N, batch_size=2, presample_size=6, tau_threshold=0.5, tau_momentum=0.0)
    sampler.bind(norm_scores)
    rng = np.random.RandomState(1)
    sampler.next_batch(rng)  # τ is estimated after the first (uniform) update; IS is on from then
    estimates = []
    for _ in range(40000):
        indices, weights = sampler.next_batch(rng)
        estimates.append(weighted_mean_gradient(indices, weights))
    estimates = np.array(estimates)
    assert sampler.is_updates == 40000
    standard_error = estimates.std(axis=0) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - GRADS.mean(axis=0)) < 4 * standard_error)


def test_is_reduces_the_variance_of_the_weighted_gradient_here():
    def spread(tau_threshold):
        sampler = OnlineImportanceSampler(N, 2, 6, tau_threshold=tau_threshold, tau_momentum=0.0).bind(norm_scores)
        rng = np.random.RandomState(2)
        draws = np.array([weighted_mean_gradient(*sampler.next_batch(rng)) for _ in range(5000)])
        return draws.var(axis=0).sum()

    assert spread(tau_threshold=0.5) < spread(tau_threshold=np.inf)


def test_tau_is_one_for_uniform_scores_and_grows_with_their_spread():
    assert equivalent_batch_increment(np.full(8, 1 / 8)) == pytest.approx(1.0)
    g = np.array([0.7, 0.1, 0.1, 0.1])
    assert equivalent_batch_increment(g) == pytest.approx(len(g) * np.sum(g**2))
    assert break_even_tau(presample_size=48, batch_size=16) == pytest.approx(2.0)


def test_switch_stays_off_while_scores_are_flat_and_turns_on_when_they_spread():
    flat = True

    def scores(indices):
        return np.ones(len(indices)) if flat else np.where(indices == 0, 1000.0, 0.01)

    sampler = OnlineImportanceSampler(N, batch_size=4, presample_size=12).bind(scores)
    assert sampler.tau_threshold == pytest.approx(2.0)
    rng = np.random.RandomState(3)
    for _ in range(50):
        _, weights = sampler.next_batch(rng)
        assert np.all(weights == 1.0)
    assert sampler.is_updates == 0 and sampler.tau <= sampler.tau_threshold

    flat = False
    seen_weights = [sampler.next_batch(rng)[1] for _ in range(100)]
    assert sampler.is_active and sampler.is_updates > 0
    assert any(np.any(w != 1.0) for w in seen_weights)


def test_switch_can_turn_on_with_one_sample_per_update():
    """With b = 1 the warm-up estimates τ over the last B draws, not over the one current sample."""
    sampler = OnlineImportanceSampler(N, batch_size=1, presample_size=6)
    sampler.bind(lambda idx: np.where(idx < 2, 100.0, 0.01))
    rng = np.random.RandomState(5)
    for _ in range(200):
        sampler.next_batch(rng)
    assert sampler.is_updates > 0


def test_scoring_units_count_every_scored_sample():
    sampler = OnlineImportanceSampler(N, batch_size=2, presample_size=6, tau_threshold=0.5, tau_momentum=0.0)
    sampler.bind(norm_scores)
    rng = np.random.RandomState(4)
    sampler.next_batch(rng)  # uniform phase: scores its b samples
    assert sampler.scoring_units == 2
    sampler.next_batch(rng)  # IS phase: scores the B presampled
    assert sampler.scoring_units == 2 + 6


def test_same_seed_same_batches_and_state_round_trip():
    def run(seed, n_updates=30):
        sampler = OnlineImportanceSampler(N, 3, 9, tau_threshold=1.05).bind(norm_scores)
        rng = np.random.RandomState(seed)
        return [b for _ in range(n_updates) for b in sampler.next_batch(rng)], sampler

    a, sampler_a = run(7)
    b, _ = run(7)
    c, _ = run(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))

    restored = OnlineImportanceSampler(N, 3, 9, tau_threshold=1.05).bind(norm_scores)
    restored.set_state(sampler_a.get_state())
    rng_a, rng_b = np.random.RandomState(9), np.random.RandomState(9)
    for _ in range(10):
        for x, y in zip(sampler_a.next_batch(rng_a), restored.next_batch(rng_b)):
            assert np.array_equal(x, y)


def test_epoch_is_lazy_and_sized_like_a_uniform_epoch():
    calls = []

    def scores(indices):
        calls.append(len(indices))
        return np.ones(len(indices))

    sampler = OnlineImportanceSampler(10, batch_size=4).bind(scores)
    epoch = sampler.epoch(np.random.RandomState(0))
    assert len(epoch) == 3 and calls == []
    batches = list(epoch)
    assert len(batches) == 3 and len(calls) == 3


def test_bad_use_fails_clearly():
    sampler = OnlineImportanceSampler(N, 2)
    with pytest.raises(RuntimeError, match="bind"):
        sampler.next_batch(np.random.RandomState(0))
    sampler.bind(lambda idx: -np.ones(len(idx)))
    with pytest.raises(ValueError, match=">= 0"):
        sampler.next_batch(np.random.RandomState(0))
    with pytest.raises(ValueError, match="presample"):
        OnlineImportanceSampler(N, batch_size=8, presample_size=4)
