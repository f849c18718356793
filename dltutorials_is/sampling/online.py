"""Online importance sampling baseline (Katharopoulos & Fleuret, ICML 2018), for comparison with FIM.

Per update: presample a large batch of B indices uniformly (without replacement), score them with
a cheap forward pass, resample the b training indices from that batch with probability g_i ∝ score_i,
and weigh each resampled index by 1/(B·g_i).  The expected weighted mean gradient is then the
uniform mean gradient (over the presample, hence over the data set), exactly as for the FIM sampler.

Importance sampling pays only once the scores are spread out: K&F switch it on when the
*equivalent batch increment* τ = (1 − Σ(g−u)²/Σg²)⁻¹ (a smoothed running estimate) exceeds the cost
ratio of an IS update to a plain update.  With the forward-pass cost model of Krause et al.
(forward = 1, forward + backward = 3 per sample) that break-even is τ_th = (B + 3b)/(3b).  Before
that the sampler yields plain uniform batches of b with weights 1, and τ is estimated from the scores
of the last B uniformly drawn samples (the current batch and the previous ones). K&F use the current
batch alone; with B ≤ b that is the same, but with b = 1 (the RNN-RBM trains on one chunk per update)
a one-sample estimate is always τ = 1 and IS could never switch on.

Score choice: the per-sample *loss* (K&F's "loss" variant).  Their tighter upper bound (the norm of
the gradient with respect to the last layer's pre-activations) is not defined for the RNN-RBM's
free-energy cost, and for the LSTM's two-class softmax it is a monotone function of the loss anyway,
so the loss is used for both models.  Scores must be finite and >= 0 (the RNN-RBM's free-energy
cost can be negative: pass its non-negative reconstruction cross-entropy instead).

Cost accounting: every scored sample costs one forward pass (`scoring_units`).  K&F reuse the
training step's forward pass to score the uniform batches of the warm-up phase; a training loop
that only returns the mean cost cannot, so this sampler scores them separately and charges the b
forward passes — a conservative charge against the baseline.

Plugging it into a training loop that consumes `epoch(rng)` of `dltutorials_is.sampling.samplers`:

    sampler = OnlineImportanceSampler(n_train, batch_size)
    sampler.bind(lambda idx: per_sample_losses(train_x[idx], train_y[idx]))  # numpy array, len(idx)
    for indices, weights in sampler.epoch(rng):   # lazy: each batch is scored with the current model
        train_step(indices, weights)

The only difference from the precomputed samplers is that batches must be consumed in order
between updates (the iterator is lazy), and that `bind` must be called before the first epoch.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

ScoreFn = Callable[[np.ndarray], np.ndarray]


def break_even_tau(presample_size: int, batch_size: int, forward_units: float = 1.0, update_units: float = 3.0) -> float:
    """τ at which an IS update (B forwards + b updates) costs as much as τ·b uniform updates."""
    return (presample_size * forward_units + batch_size * update_units) / (batch_size * update_units)


def equivalent_batch_increment(g: np.ndarray) -> float:
    """K&F's τ = (1 − Σ(g−u)²/Σg²)⁻¹ for a normalised distribution g over |g| items; equals |g|·Σg²."""
    u = 1.0 / len(g)
    return 1.0 / (1.0 - np.sum((g - u) ** 2) / np.sum(g**2))


class OnlineImportanceSampler:
    """Presample B uniformly, resample b ∝ loss, weights 1/(B·g_i); IS only once τ > τ_th.

    n: training set size; batch_size: b; presample_size: B (default 3b, K&F's smallest setting);
    tau_threshold: default `break_even_tau(B, b)`; tau_momentum: K&F's a_τ; smoothing: g_i ∝
    score_i + smoothing·mean(score), which bounds every weight by (1 + smoothing)/smoothing.
    """

    name = "online"

    def __init__(
        self,
        n: int,
        batch_size: int,
        presample_size: int | None = None,
        tau_threshold: float | None = None,
        tau_momentum: float = 0.9,
        smoothing: float = 0.01,
    ):
        if n <= 0:
            raise ValueError("the training set is empty")
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        presample_size = 3 * batch_size if presample_size is None else presample_size
        if presample_size < batch_size:
            raise ValueError(f"presample size B={presample_size} must be >= batch size b={batch_size}")
        if not 0.0 <= tau_momentum < 1.0:
            raise ValueError(f"tau_momentum must be in [0, 1), got {tau_momentum}")
        if smoothing <= 0:
            raise ValueError("smoothing must be > 0 so that every weight 1/(B g_i) stays finite")
        self.n = n
        self.batch_size = min(batch_size, n)
        self.presample_size = min(presample_size, n)
        self.tau_threshold = (
            break_even_tau(self.presample_size, self.batch_size) if tau_threshold is None else tau_threshold
        )
        self.tau_momentum = tau_momentum
        self.smoothing = smoothing
        self.tau = 0.0
        self.scoring_units = 0
        self.updates = 0
        self.is_updates = 0
        self._recent_scores = np.zeros(0)  # warm-up: scores of the last B uniform draws, for τ
        self._score_fn: ScoreFn | None = None

    def bind(self, score_fn: ScoreFn) -> "OnlineImportanceSampler":
        """Give the sampler the model: `score_fn(indices) -> per-sample losses` (one forward each)."""
        self._score_fn = score_fn
        return self

    @property
    def is_active(self) -> bool:
        return self.tau > self.tau_threshold

    def updates_per_epoch(self) -> int:
        return -(-self.n // self.batch_size)

    def epoch(self, rng: np.random.RandomState) -> "_LazyEpoch":
        """As many updates as a uniform epoch has (ceil(N/b)); each batch is drawn when asked for."""
        return _LazyEpoch(self, rng, self.updates_per_epoch())

    def next_batch(self, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        if self._score_fn is None:
            raise RuntimeError("OnlineImportanceSampler needs a scoring callback: call bind(score_fn) first")
        self.updates += 1
        if self.is_active:
            self.is_updates += 1
            presample = rng.choice(self.n, self.presample_size, replace=False).astype("int32")
            g = self._distribution(presample)
            picks = np.minimum(
                np.searchsorted(np.cumsum(g), rng.random_sample(self.batch_size), side="right"), len(g) - 1
            )
            indices, weights = presample[picks], 1.0 / (len(g) * g[picks])
        else:
            indices = rng.choice(self.n, self.batch_size, replace=False).astype("int32")
            self._recent_scores = np.concatenate([self._recent_scores, self._scores(indices)])[-self.presample_size:]
            g = self._normalise(self._recent_scores)
            weights = np.ones(len(indices))
        self._update_tau(equivalent_batch_increment(g))
        return indices, weights

    def _distribution(self, indices: np.ndarray) -> np.ndarray:
        return self._normalise(self._scores(indices))

    def _scores(self, indices: np.ndarray) -> np.ndarray:
        scores = np.asarray(self._score_fn(indices), dtype="float64")
        self.scoring_units += len(indices)
        if scores.shape != (len(indices),):
            raise ValueError(f"score_fn returned shape {scores.shape} for {len(indices)} indices")
        if not np.all(np.isfinite(scores)) or np.any(scores < 0):
            raise ValueError("online IS scores must be finite and >= 0 (got NaN, inf or a negative loss)")
        return scores

    def _normalise(self, scores: np.ndarray) -> np.ndarray:
        """g ∝ score + smoothing·mean(score); uniform when every score is 0."""
        mean = scores.mean()
        if mean == 0.0:
            return np.full(len(scores), 1.0 / len(scores))
        smoothed = scores + self.smoothing * mean
        return smoothed / smoothed.sum()

    def _update_tau(self, tau_now: float) -> None:
        a = self.tau_momentum
        self.tau = a * self.tau + (1.0 - a) * tau_now

    def get_state(self) -> dict:
        """What a checkpoint needs to resume the switch exactly where it was."""
        return {"tau": self.tau, "scoring_units": self.scoring_units, "updates": self.updates,
                "is_updates": self.is_updates, "recent_scores": self._recent_scores.copy()}

    def set_state(self, state: dict) -> None:
        self._recent_scores = np.asarray(state["recent_scores"], dtype="float64")
        self.tau = float(state["tau"])
        self.scoring_units = int(state["scoring_units"])
        self.updates = int(state["updates"])
        self.is_updates = int(state["is_updates"])


class _LazyEpoch:
    """An epoch of `n_updates` batches, drawn one at a time (a sized iterable, so tqdm shows a total)."""

    def __init__(self, sampler: OnlineImportanceSampler, rng: np.random.RandomState, n_updates: int):
        self._sampler, self._rng, self._n = sampler, rng, n_updates

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for _ in range(self._n):
            yield self._sampler.next_batch(self._rng)
