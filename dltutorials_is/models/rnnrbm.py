"""The RNN-RBM as a `Model`: the tutorial's graphs, CD-k SGD step and random streams, bound to the
training chunks.

A training sample is a chunk (`datasets.chunks`); one update trains on one chunk, as the tutorial did.
Random numbers follow the original: the run's numpy RandomState gives the MRG seed, then W(0); the
training and generation chains share that MRG stream, built in the tutorial's order. Evaluation (the
paper's footnote 6: the cost over all chunks without updating), per-sample losses and one-chunk
gradients draw their Gibbs chains from a separate stream, so they change no random number of training.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Callable, Mapping, Sequence

import numpy as np
import aesara
import aesara.tensor as at

from dltutorials_is.errors import SettingError
from dltutorials_is.graphs import rnnrbm as graph
from dltutorials_is.io import non_finite
from dltutorials_is.models.base import ModelStateError, StepResult, set_stream_states, stream_states

#: A chunk's cross-entropy (nats per frame) counts at most this much: a visible unit whose sigmoid
#: saturates to exactly 0 or 1 makes the tutorial's monitor log 0 = -inf; ~40 is already extreme for 88 keys.
MAX_CROSS_ENTROPY = 1e4


@dataclass
class RnnRbmConfig:
    """Everything that defines a run; the defaults are the tutorial's."""

    n_hidden: int = 150
    n_hidden_recurrent: int = 100
    lr: float = 0.001
    r: tuple[int, int] = (21, 109)
    dt: float = 0.3
    batch_size: int = 100
    num_epochs: int = 200
    k: int = graph.TRAIN_GIBBS_STEPS
    seed: int = 0xBEEF  # the tutorial's numpy.random.seed(0xbeef)
    floatX: str = "float64"
    sampler: str = "uniform"
    #: Training and evaluation graph (`graphs.rnnrbm.TRAINING_GRAPHS`): "fast" (no scan, compiled ops)
    #: or "tutorial" (the tutorial's scans); the same numbers up to rounding.
    graph: str = "fast"

    @property
    def n_visible(self) -> int:
        return self.r[1] - self.r[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RnnRbmConfig":
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.r = tuple(config.r)
        return config


def evaluation_seed(seed: int) -> int:
    """MRG seed of the evaluation stream: derived from the run seed without touching its RandomState."""
    return int(np.random.RandomState([seed, 1]).randint(1, 1 << 30))


def draw_initial_state(config: RnnRbmConfig, rng: np.random.RandomState) -> tuple[int, dict[str, np.ndarray]]:
    """The tutorial's first draws from its numpy generator: the MRG seed, then W(0)."""
    mrg_seed = int(rng.randint(1 << 30))
    return mrg_seed, graph.initial_params(config.n_visible, config.n_hidden, config.n_hidden_recurrent, rng, config.floatX)


def initial_values(config: RnnRbmConfig) -> dict[str, np.ndarray]:
    """W(0) of a run (what `RnnRbmModel` starts from), without building a model."""
    return draw_initial_state(config, np.random.RandomState(config.seed))[1]


class RnnRbmModel:
    """Parameters, random streams and (lazily) compiled functions of one RNN-RBM.

    `rng` is the run's RandomState; the model takes its first draws exactly as the tutorial did.
    `chunks` (arrays of frames) are the training samples indices refer to.
    """

    BASES = graph.PARAM_NAMES  # "W" first: the paper's base matrix (Section 5.2.3)

    def __init__(self, config: RnnRbmConfig, rng: np.random.RandomState, chunks: Sequence[np.ndarray] = ()):
        if config.graph not in graph.TRAINING_GRAPHS:
            raise SettingError(f"graph must be one of {', '.join(graph.TRAINING_GRAPHS)}, got {config.graph!r}")
        self.config = config
        self.use_data(chunks)
        with aesara.config.change_flags(floatX=config.floatX):
            mrg_seed, values = draw_initial_state(config, rng)
            self.params = graph.shared_params(values)
            self.srng = graph.random_stream(mrg_seed)
            self.training, self.generation = graph.build_rnnrbm(self.params, self.srng, config.k,
                                                                training_graph=config.graph)
            self.eval_srng = graph.random_stream(evaluation_seed(config.seed))
            self.evaluation = graph.TRAINING_GRAPHS[config.graph](self.params, self.eval_srng, config.k)
            self.weight = at.scalar("weight")
            self.learning_rate = aesara.shared(np.asarray(config.lr, dtype=config.floatX), name="lr")

    def use_data(self, chunks: Sequence[np.ndarray]) -> None:
        """Make `chunks` the training set that indices refer to (a compiled model serves many runs)."""
        self.chunks = list(chunks)
        self.n_train = len(self.chunks)

    # -- compiled functions ------------------------------------------------------------------

    def _compile(self, inputs, outputs, updates) -> Callable:
        with aesara.config.change_flags(floatX=self.config.floatX):
            return aesara.function(inputs, outputs, updates=updates)

    def _sgd_updates(self, grads: list) -> dict:
        updates = dict(self.training.updates)
        params = [self.params[n] for n in graph.PARAM_NAMES]
        updates.update((p, p - self.learning_rate * g) for p, g in zip(params, grads))
        return updates

    def _weighted_gradients(self) -> list:
        """The CD-k gradient times the weight, the negative particles held constant.

        The weight multiplies the gradient, not the cost: differentiating `weight * cost` gives the
        same numbers up to rounding, but with weight 1 only this form is the original's bit for bit."""
        t = self.training
        params = [self.params[n] for n in graph.PARAM_NAMES]
        return [self.weight * g for g in aesara.grad(t.cost, params, consider_constant=[t.v_sample])]

    @cached_property
    def train_function(self) -> Callable:
        """(chunk, weight) -> (cost, monitor) before the update; applies one plain SGD step
        p <- p - lr * weight * dcost/dp (the tutorial's update when the weight is 1)."""
        t = self.training
        return self._compile([t.v, self.weight], [t.cost, t.monitor], self._sgd_updates(self._weighted_gradients()))

    @cached_property
    def train_function_with_gradients(self) -> Callable:
        """The same step, also returning the weighted gradient of every parameter (FIM scores them).

        A separate function: gradients as outputs change how the update is compiled, and the plain
        step must stay the tutorial's bit for bit."""
        t = self.training
        grads = self._weighted_gradients()
        return self._compile([t.v, self.weight], [t.cost, t.monitor, *grads], self._sgd_updates(grads))

    @cached_property
    def evaluate_function(self) -> Callable:
        """chunk -> (cost, monitor) without changing the parameters (own random stream)."""
        e = self.evaluation
        return self._compile([e.v], [e.cost, e.monitor], e.updates)

    @cached_property
    def gradient_function(self) -> Callable:
        """chunk -> the CD-k gradient of every parameter (tutorial order), parameters untouched."""
        e = self.evaluation
        params = [self.params[n] for n in graph.PARAM_NAMES]
        return self._compile([e.v], aesara.grad(e.cost, params, consider_constant=[e.v_sample]), e.updates)

    @cached_property
    def generate_function(self) -> Callable:
        """() -> a generated piano-roll (200 frames, k=25 Gibbs steps per frame)."""
        return self._compile([], self.generation.v_t, self.generation.updates)

    # -- training ----------------------------------------------------------------------------

    def set_step_size(self, value: float) -> None:
        self.learning_rate.set_value(np.asarray(value, dtype=self.config.floatX))

    def train_step(self, indices: np.ndarray, weights: np.ndarray) -> StepResult:
        """One SGD step on one chunk; a step whose cost is not finite, or that makes a parameter NaN or
        infinite, is undone (parameters only: the run stops there)."""
        step, _ = self._step(indices, weights, self.train_function)
        return step

    def train_step_with_gradients(self, indices: np.ndarray, weights: np.ndarray) -> tuple[StepResult, dict]:
        """`train_step`, and the (weighted) gradient it applied, by parameter name."""
        step, grads = self._step(indices, weights, self.train_function_with_gradients)
        return step, dict(zip(graph.PARAM_NAMES, grads))

    def _step(self, indices, weights, function) -> tuple[StepResult, list]:
        if len(indices) != 1:
            raise ValueError(f"an RNN-RBM update trains on one chunk (footnote 5), got {len(indices)}")
        before = {name: p.get_value() for name, p in self.params.items()}
        cost, monitor, *grads = function(self.chunks[int(indices[0])], np.asarray(weights[0], dtype=self.config.floatX))
        params_finite = not non_finite({n: p.get_value(borrow=True) for n, p in self.params.items()})
        applied = bool(np.isfinite(cost)) and params_finite
        if not applied:
            self.set_params(before)
        return StepResult(float(cost), float(monitor), params_finite=params_finite, applied=applied), grads

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, chunks: Sequence[np.ndarray], progress: Callable = iter) -> dict[str, float]:
        """Means over chunks without updating: the CD cost, the tutorial's monitor and the cross-entropy
        (−monitor, each chunk's capped at MAX_CROSS_ENTROPY), and how many chunks were capped."""
        values = np.array([self.evaluate_function(chunk) for chunk in progress(chunks)], dtype="float64")
        cross_entropy = -values[:, 1]
        capped = np.isinf(cross_entropy) | (cross_entropy > MAX_CROSS_ENTROPY)
        return {"cost": float(np.mean(values[:, 0])), "monitor": float(np.mean(values[:, 1])),
                "cross_entropy": float(np.mean(np.clip(cross_entropy, 0.0, MAX_CROSS_ENTROPY))),
                "saturated_chunks": int(np.sum(capped))}

    def losses(self, indices: Sequence[int]) -> np.ndarray:
        """Per-chunk cross-entropies (−monitor, capped at MAX_CROSS_ENTROPY; NaN is kept)."""
        values = np.array([-float(self.evaluate_function(self.chunks[int(i)])[1]) for i in indices])
        return np.clip(values, 0.0, MAX_CROSS_ENTROPY)

    def gradient(self, index: int) -> dict[str, np.ndarray]:
        """Chunk `index`'s CD-k gradient. The evaluation stream is put back afterwards, so successive
        calls use the same Gibbs noise (common random numbers) and training's draws are untouched."""
        saved = stream_states(self.eval_srng)
        grads = self.gradient_function(self.chunks[int(index)])
        set_stream_states(self.eval_srng, saved)
        return dict(zip(graph.PARAM_NAMES, grads))

    def base_matrices(self, params: Mapping[str, np.ndarray]) -> dict:
        return {name: params[name] for name in self.BASES}

    def generate(self) -> np.ndarray:
        return self.generate_function()

    # -- state ---------------------------------------------------------------------------------

    def get_params(self) -> dict[str, np.ndarray]:
        return {name: p.get_value() for name, p in self.params.items()}

    def set_params(self, values: Mapping[str, np.ndarray]) -> None:
        for name, p in self.params.items():
            if name not in values:
                raise ModelStateError(f"the saved parameters have no {name!r}")
            current = p.get_value(borrow=True)
            value = np.asarray(values[name])
            if value.shape != current.shape:
                raise ModelStateError(f"parameter {name} has shape {value.shape}, the model expects {current.shape}")
            p.set_value(value.astype(current.dtype))

    def random_states(self) -> dict[str, np.ndarray]:
        """Every MRG sub-stream state (training/generation and evaluation), for exact resumption."""
        states = {}
        for prefix, srng in (("train", self.srng), ("eval", self.eval_srng)):
            for i, state in enumerate(stream_states(srng)):
                states[f"{prefix}/{i}"] = state
        return states

    def set_random_states(self, states: Mapping[str, np.ndarray]) -> None:
        for prefix, srng in (("train", self.srng), ("eval", self.eval_srng)):
            saved = [states.get(f"{prefix}/{i}") for i in range(len(srng.state_updates))]
            current = stream_states(srng)
            set_stream_states(srng, [c if s is None else s for s, c in zip(saved, current)])

    def get_state(self) -> dict:
        return {"params": self.get_params(), "streams": self.random_states()}

    def set_state(self, state: dict) -> None:
        self.set_params(state["params"])
        self.set_random_states(state["streams"])

    def reset(self, seed: int, rng: np.random.RandomState | None = None) -> None:
        """The tutorial's draws for `seed` (the MRG seed, then W(0)), and the evaluation stream's seed."""
        mrg_seed, values = draw_initial_state(self.config, rng if rng is not None else np.random.RandomState(seed))
        self.set_params(values)
        self.srng.seed(mrg_seed)
        self.eval_srng.seed(evaluation_seed(seed))
