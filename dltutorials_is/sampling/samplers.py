"""Samplers decide which training samples each update sees and how much each one weighs.

A sampler yields, per epoch, a list of `(indices, weights)` minibatches. The training cost is the
weighted mean of per-sample losses, so a weight of 1/(N·p_i) on a sample drawn with probability p_i
keeps the expected gradient equal to the uniform full-batch gradient (the paper's Algorithm 1).
Samplers know nothing about models; every random draw comes from the `rng` passed in, so a run is
reproducible from one seed and draws in the same order as the original tutorial.

Every sampler has one state protocol, `get_state() -> dict` and `set_state(dict)`: what a checkpoint
must keep besides the rng to continue exactly (nothing for the i.i.d. samplers, the song order for the
RNN-RBM tutorial's sampler, the switch of the online sampler).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dltutorials_is.models.base import ModelStateError


def cut_minibatches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive slices of `batch_size`; a shorter last one holds what is left (as the tutorial)."""
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class UniformSampler:
    """The tutorial's sampler: a fresh shuffle of all N samples per epoch, every weight 1."""

    name = "uniform"

    def __init__(self, n: int, batch_size: int):
        _check_sizes(n, batch_size)
        self.n, self.batch_size = n, batch_size

    def draw_order(self, rng: np.random.RandomState) -> np.ndarray:
        order = np.arange(self.n, dtype="int32")
        rng.shuffle(order)
        return order

    def weights_of(self, indices: np.ndarray) -> np.ndarray:
        return np.ones(len(indices))

    def epoch(self, rng: np.random.RandomState) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(b, self.weights_of(b)) for b in cut_minibatches(self.draw_order(rng), self.batch_size)]

    def get_state(self) -> dict:
        return {}  # every epoch's draws come from the rng alone

    def set_state(self, state: dict) -> None:
        pass


class ReplacementSampler(UniformSampler):
    """Control arm: N draws i.i.d. from the uniform distribution (with replacement), weights 1.

    Separates the effect of *importance* from the effect of sampling with replacement.
    """

    name = "replacement"

    def draw_order(self, rng: np.random.RandomState) -> np.ndarray:
        return rng.randint(0, self.n, size=self.n).astype("int32")


class ImportanceSampler(UniformSampler):
    """IS-SGD: N draws i.i.d. from P per epoch; each drawn sample i weighs 1/(N·p_i)."""

    name = "importance"

    def __init__(self, p: np.ndarray, batch_size: int):
        p = np.asarray(p, dtype="float64")
        super().__init__(len(p), batch_size)
        if not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise ValueError("every sampling probability must be finite and > 0 (IS weights are 1/(N p_i))")
        if abs(p.sum() - 1.0) > 1e-6:
            raise ValueError(f"sampling probabilities sum to {p.sum():.8g}, not 1")
        self.p = p / p.sum()
        self._cdf = np.cumsum(self.p)

    def draw_order(self, rng: np.random.RandomState) -> np.ndarray:
        # Inverse-CDF sampling: the same draws as rng.choice(n, n, p=p), without its per-call checks.
        u = rng.random_sample(self.n)
        return np.minimum(np.searchsorted(self._cdf, u, side="right"), self.n - 1).astype("int32")

    def weights_of(self, indices: np.ndarray) -> np.ndarray:
        return 1.0 / (self.n * self.p[indices])


class SongOrderSampler:
    """The RNN-RBM tutorial's order: songs reshuffled in place every epoch, each song's chunks in order.

    `chunks` are (song, first frame) pairs (`datasets.chunks.make_chunks`). The shuffle permutes the
    previous epoch's order (the tutorial shuffled its song list in place), so the order is state that
    checkpoints keep. Every minibatch is one chunk, with weight 1.
    """

    name = "uniform"

    def __init__(self, chunks: Sequence[tuple[int, int]]):
        if not chunks:
            raise ValueError("the training set is empty")
        n_songs = max(s for s, _ in chunks) + 1
        self.chunks_of_song = [[] for _ in range(n_songs)]
        for index, (s, _) in enumerate(chunks):
            self.chunks_of_song[s].append(index)
        self.song_order = np.arange(n_songs)

    def epoch(self, rng: np.random.RandomState) -> list[tuple[np.ndarray, np.ndarray]]:
        rng.shuffle(self.song_order)
        return [
            (np.array([c], dtype="int32"), np.ones(1))
            for s in self.song_order
            for c in self.chunks_of_song[s]
        ]

    def get_state(self) -> dict:
        return {"song_order": self.song_order.copy()}

    def set_state(self, state: dict) -> None:
        order = np.asarray(state["song_order"])
        if sorted(order.tolist()) != list(range(len(self.chunks_of_song))):
            raise ModelStateError(f"the saved song order is of {len(order)} songs, this training set has "
                                  f"{len(self.chunks_of_song)} — resume with the data flags (--max-songs, --on-bad, "
                                  "--data-dir) of the run that saved it")
        self.song_order = order.astype(self.song_order.dtype)


def make_chunk_sampler(kind: str, chunks: Sequence[tuple[int, int]], p: np.ndarray | None = None):
    """The RNN-RBM's samplers: 'uniform' is the tutorial's song order; 'replacement' and 'importance'
    draw N chunks i.i.d., one per update."""
    if kind == "uniform":
        return SongOrderSampler(chunks)
    return make_sampler(kind, len(chunks), 1, p)


def make_sampler(kind: str, n: int, batch_size: int, p: np.ndarray | None = None) -> UniformSampler:
    """Build a sampler by name: 'uniform', 'replacement' or 'importance' (which needs `p`)."""
    if kind == "uniform":
        return UniformSampler(n, batch_size)
    if kind == "replacement":
        return ReplacementSampler(n, batch_size)
    if kind == "importance":
        if p is None:
            raise ValueError("the importance sampler needs a probability vector p")
        if len(p) != n:
            raise ValueError(f"P has {len(p)} entries but the training set has {n} samples")
        return ImportanceSampler(p, batch_size)
    raise ValueError(f"unknown sampler {kind!r}: choose uniform, replacement or importance")


def summarize_p(p: np.ndarray) -> dict[str, float]:
    """How far P is from uniform, and what that can buy.

    cv: coefficient of variation of p; max_over_min; ess: effective sample size 1/(N·Σp²) as a
    fraction of N; speedup_bound: the paper's eq. 13 ratio N·Σs²/(Σs)² = 1 + cv², the most IS can
    improve the convergence bound over uniform sampling.
    """
    p = np.asarray(p, dtype="float64")
    n = len(p)
    cv = float(p.std() / p.mean())
    return {
        "n": n,
        "cv": cv,
        "max_over_min": float(p.max() / p.min()),
        "ess": float(1.0 / (n * np.sum(p**2))),
        "speedup_bound": float(n * np.sum(p**2) / np.sum(p) ** 2),
    }


def format_p_summary(p: np.ndarray) -> str:
    s = summarize_p(p)
    return (
        f"P over {s['n']} samples: CV {s['cv']:.3g}, max/min {s['max_over_min']:.4g}, "
        f"effective sample size {s['ess']:.4f}·N, eq. 13 speed-up bound {s['speedup_bound']:.6g}"
    )


#: A P whose eq. 13 bound is this close to 1 cannot make training faster than uniform sampling.
UNIFORM_BOUND_TOLERANCE = 1e-3


def uniform_p_warning(p: np.ndarray, others: dict[str, np.ndarray] | None = None) -> str | None:
    """One warning line when P is so close to uniform (eq. 13 bound within `UNIFORM_BOUND_TOLERANCE` of 1)
    that importance sampling cannot speed training up, else None. `others` (score kind -> its P, e.g.
    the other score kinds of the same FIM artefact) are named when they spread P more, best first."""
    summary = summarize_p(p)
    bound = summary["speedup_bound"]
    if not bound - 1.0 <= UNIFORM_BOUND_TOLERANCE:
        return None
    line = (f"warning: this P is uniform to within a coefficient of variation of {summary['cv']:.2g} (eq. 13 bound "
            f"{bound:.7g}): importance sampling cannot speed training up")
    if others is None:
        return line
    better = sorted(((summarize_p(q)["speedup_bound"], kind) for kind, q in others.items()), reverse=True)
    better = [f"{kind} (bound {b:.5g})" for b, kind in better if b > bound]
    if better:
        return f"{line}; the score kinds that spread P more here are: {', '.join(better)}"
    return f"{line}; no other score kind here spreads P more"


def _check_sizes(n: int, batch_size: int) -> None:
    if n <= 0:
        raise ValueError("the training set is empty")
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
