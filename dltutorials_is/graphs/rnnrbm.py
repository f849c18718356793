"""The RNN-RBM of the deeplearning.net tutorial (Boulanger-Lewandowski et al., 2012) as Aesara graphs.

An RNN with hidden state u_t turns the history of a piano-roll into time-dependent biases
bv_t = bv + u_{t-1} Wuv and bh_t = bh + u_{t-1} Wuh of one RBM per frame; the RBMs share W.
Training is CD-k: a k-step block Gibbs chain per frame gives negative particles, and the cost is the
free-energy difference whose gradient, with the particles held constant, is the CD estimate.

Random numbers come from an `MRG_RandomStream` the caller passes in. Each `binomial` call takes the
next sub-stream of that generator, so the graphs below make their calls in the original's order
(training chain, its monitor, then the generation chain): with the original's seed, the same
random numbers land in the same places.

`build_training` is the tutorial's training graph (two scans); `build_training_fast` computes the
same without scan, with the compiled ops of `rnnrbm_ops` (the same random numbers and states,
sums ordered differently). `TRAINING_GRAPHS` names both for `RnnRbmConfig.graph`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import aesara
import aesara.tensor as at
from aesara.tensor.xlogx import xlogy0

from dltutorials_is.graphs.rnnrbm_ops import RnnRecurrence, SigmoidBernoulli

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # the MRG generator is what the tutorial used
    from aesara.sandbox.rng_mrg import MRG_RandomStream

PARAM_NAMES = ("W", "bv", "bh", "Wuh", "Wuv", "Wvu", "Wuu", "bu")
TRAIN_GIBBS_STEPS = 15
GENERATE_GIBBS_STEPS = 25
GENERATE_FRAMES = 200


def random_stream(seed: int) -> MRG_RandomStream:
    return MRG_RandomStream(seed=int(seed))


def initial_params(n_visible: int, n_hidden: int, n_hidden_recurrent: int, rng: np.random.RandomState, dtype: str) -> dict[str, np.ndarray]:
    """The tutorial's initial values, drawn from `rng` in its order: N(0, 0.01²) for W,
    N(0, 0.0001²) for Wuh, Wuv, Wvu, Wuu, zeros for the biases."""

    def normal(rows: int, cols: int, scale: float) -> np.ndarray:
        return rng.normal(scale=scale, size=(rows, cols)).astype(dtype)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=dtype)

    values = {}  # filled in PARAM_NAMES order, which is the order of the draws
    values["W"] = normal(n_visible, n_hidden, 0.01)
    values["bv"] = zeros(n_visible)
    values["bh"] = zeros(n_hidden)
    values["Wuh"] = normal(n_hidden_recurrent, n_hidden, 0.0001)
    values["Wuv"] = normal(n_hidden_recurrent, n_visible, 0.0001)
    values["Wvu"] = normal(n_visible, n_hidden_recurrent, 0.0001)
    values["Wuu"] = normal(n_hidden_recurrent, n_hidden_recurrent, 0.0001)
    values["bu"] = zeros(n_hidden_recurrent)
    return values


def shared_params(values: dict[str, np.ndarray]) -> dict[str, aesara.compile.SharedVariable]:
    return {name: aesara.shared(values[name], name=name) for name in PARAM_NAMES}


def build_rbm(v, W, bv, bh, k: int, srng: MRG_RandomStream):
    """A k-step Gibbs chain from v (a frame, or one frame per row) and the RBM's training expressions.

    Returns (v_sample, cost, monitor, updates):
    v_sample: the chain's last visible sample (the negative particles);
    cost: (F(v) - F(v_sample)) / rows, whose gradient with v_sample held constant is the CD-k
      estimate of the negative log-likelihood gradient;
    monitor: per-row sum over units of v log p + (1-v) log(1-p), where p is the visible mean after one
      more Gibbs step from v_sample (the tutorial's "pseudo-likelihood"; minus the cross-entropy);
    updates: the random-state updates of the chain's scan.
    """

    def gibbs_step(v):
        mean_h = at.sigmoid(at.dot(v, W) + bh)
        h = srng.binomial(size=mean_h.shape, n=1, p=mean_h, dtype=aesara.config.floatX)
        mean_v = at.sigmoid(at.dot(h, W.T) + bv)
        v = srng.binomial(size=mean_v.shape, n=1, p=mean_v, dtype=aesara.config.floatX)
        return mean_v, v

    chain, updates = aesara.scan(lambda v: gibbs_step(v)[1], outputs_info=[v], n_steps=k)
    v_sample = chain[-1]
    mean_v = gibbs_step(v_sample)[0]
    return (v_sample, *_rbm_objectives(v, v_sample, mean_v, W, bv, bh), updates)


def _rbm_objectives(v, v_sample, mean_v, W, bv, bh):
    """(cost, monitor) of `build_rbm`, given the negative particles and the monitor's visible mean."""
    monitor = (xlogy0(v, mean_v) + xlogy0(1 - v, 1 - mean_v)).sum() / v.shape[0]

    def free_energy(v):
        return -(v * bv).sum() - at.log(1 + at.exp(at.dot(v, W) + bh)).sum()

    cost = (free_energy(v) - free_energy(v_sample)) / v.shape[0]
    return cost, monitor


class FastStream:
    """One sub-stream set of `srng` that `SigmoidBernoulli` draws from, standing in for one
    `srng.binomial` call of the tutorial's graph.

    It is created exactly as `srng.uniform` creates the state of a call with a symbolic size (the
    next 15,360 sub-streams of `srng`), so the tutorial's graph and the fast one draw the same numbers
    from the same seed. Each `bernoulli` advances the state as one more scan iteration of the
    tutorial's chain would; the last one (`last=True`) gives the state back by rows, which becomes
    the shared state's default update and is recorded in `srng.state_updates` (for `srng.seed`,
    `stream_states` and checkpoints), as `srng.uniform` does.
    """

    def __init__(self, srng: MRG_RandomStream, size, dtype: str):
        self.srng, self.size = srng, size
        self.shared = aesara.shared(srng.get_substream_rstates(srng.n_streams(size), dtype))
        self.state, self.by_rows = self.shared, True

    def bernoulli(self, pre, last: bool = False):
        """[u < sigmoid(pre)], u the stream's next uniforms: `srng.binomial(p=sigmoid(pre))`."""
        op = SigmoidBernoulli(rows_in=self.by_rows, rows_out=last)
        self.state, sample = op(self.state, pre)
        self.by_rows = last
        if last:
            self.srng.state_updates.append((self.shared, self.state, self.size, None))
            self.shared.default_update = self.state
        return sample


def build_rbm_fast(v, W, bv, bh, k: int, srng: MRG_RandomStream):
    """`build_rbm` for a batch of frames (v and the biases one row per frame), same results, without
    scan: the k Gibbs steps unrolled, each binomial a `SigmoidBernoulli` on a `FastStream` taking
    the place of the tutorial's `srng.binomial` call (created in the tutorial's order: the chain's
    hidden and visible streams, then the monitor's). The chain needs no gradient: the tutorial holds
    v_sample constant."""
    if k < 1:
        raise ValueError(f"CD-k needs k >= 1 Gibbs steps, got {k}")
    dtype = aesara.config.floatX
    streams = [FastStream(srng, b.shape, dtype) for b in (bh, bv, bh, bv)]
    chain_h, chain_v, monitor_h, monitor_v = streams
    v_sample = v
    for step in range(1, k + 1):
        h = chain_h.bernoulli(at.dot(v_sample, W) + bh, last=step == k)
        v_sample = chain_v.bernoulli(at.dot(h, W.T) + bv, last=step == k)
    pre_v = at.dot(monitor_h.bernoulli(at.dot(v_sample, W) + bh, last=True), W.T) + bv
    monitor_v.bernoulli(pre_v, last=True)  # the tutorial draws it, unused: it only takes its place in the stream order
    updates = {chain_h.shared: chain_h.state, chain_v.shared: chain_v.state}  # the scan's updates
    return (v_sample, *_rbm_objectives(v, v_sample, at.sigmoid(pre_v), W, bv, bh), updates)


@dataclass
class TrainingGraph:
    v: at.TensorVariable  # a piano-roll chunk, frames x n_visible
    v_sample: at.TensorVariable  # negative particles: hold constant when differentiating `cost`
    cost: at.TensorVariable
    monitor: at.TensorVariable
    updates: dict  # random-state updates of the scans; pass them to aesara.function


@dataclass
class GenerationGraph:
    v_t: at.TensorVariable  # a generated piano-roll, n_steps x n_visible
    updates: dict


def _recurrence_biases(params, u_tm1):
    bv_t = params["bv"] + at.dot(u_tm1, params["Wuv"])
    bh_t = params["bh"] + at.dot(u_tm1, params["Wuh"])
    return bv_t, bh_t


def _next_state(params, v_t, u_tm1):
    return at.tanh(params["bu"] + at.dot(v_t, params["Wvu"]) + at.dot(u_tm1, params["Wuu"]))


def _recurrence_biases_fast(params, v):
    """(bv_t, bh_t) of every frame of v, as `build_training`'s scan computes them: the recurrence
    alone in the compiled `RnnRecurrence`, the rest as matrix products over all frames."""
    u = RnnRecurrence()(params["bu"] + at.dot(v, params["Wvu"]), params["Wuu"])
    u_tm1 = at.concatenate([at.zeros_like(u[:1]), u[:-1]], axis=0)
    return _recurrence_biases(params, u_tm1)


def build_training_fast(params: dict, srng: MRG_RandomStream, k: int = TRAIN_GIBBS_STEPS) -> TrainingGraph:
    """`build_training`'s graph without scan (see `build_rbm_fast`, `RnnRecurrence`): the same cost,
    monitor, gradients, random numbers and random-state updates, up to rounding."""
    v = at.matrix("v")
    bv_t, bh_t = _recurrence_biases_fast(params, v)
    return TrainingGraph(v, *build_rbm_fast(v, params["W"], bv_t, bh_t, k, srng))


def build_training(params: dict, srng: MRG_RandomStream, k: int = TRAIN_GIBBS_STEPS) -> TrainingGraph:
    """Deterministic RNN pass over v for all biases (bv_t, bh_t), then the conditional RBMs as one batch."""
    n_hidden_recurrent = params["bu"].get_value(borrow=True).shape[0]
    v = at.matrix("v")
    u0 = at.zeros((n_hidden_recurrent,))

    def step(v_t, u_tm1, *_):
        bv_t, bh_t = _recurrence_biases(params, u_tm1)
        return [_next_state(params, v_t, u_tm1), bv_t, bh_t]

    (_, bv_t, bh_t), updates = aesara.scan(
        step, sequences=v, outputs_info=[u0, None, None], non_sequences=[params[n] for n in PARAM_NAMES]
    )
    v_sample, cost, monitor, rbm_updates = build_rbm(v, params["W"], bv_t, bh_t, k, srng)
    updates.update(rbm_updates)
    return TrainingGraph(v, v_sample, cost, monitor, updates)


#: The training graphs by `RnnRbmConfig.graph`.
TRAINING_GRAPHS = {"fast": build_training_fast, "tutorial": build_training}


def build_generation(params: dict, srng: MRG_RandomStream, k: int = GENERATE_GIBBS_STEPS, n_steps: int = GENERATE_FRAMES) -> GenerationGraph:
    """Sample a sequence: at each step a separate k-step Gibbs chain, started from silence, gives v_t."""
    n_visible = params["bv"].get_value(borrow=True).shape[0]
    n_hidden_recurrent = params["bu"].get_value(borrow=True).shape[0]
    u0 = at.zeros((n_hidden_recurrent,))

    def step(u_tm1, *_):
        bv_t, bh_t = _recurrence_biases(params, u_tm1)
        v_t, _, _, updates = build_rbm(at.zeros((n_visible,)), params["W"], bv_t, bh_t, k, srng)
        return [v_t, _next_state(params, v_t, u_tm1)], updates

    (v_t, _), updates = aesara.scan(
        step, outputs_info=[None, u0], non_sequences=[params[n] for n in PARAM_NAMES], n_steps=n_steps
    )
    return GenerationGraph(v_t, updates)


def build_rnnrbm(params: dict, srng: MRG_RandomStream, k: int = TRAIN_GIBBS_STEPS, k_generate: int = GENERATE_GIBBS_STEPS, n_generate: int = GENERATE_FRAMES, training_graph: str = "tutorial") -> tuple[TrainingGraph, GenerationGraph]:
    """Both graphs in the tutorial's construction order (which fixes which random sub-stream goes
    where); the training graph is `TRAINING_GRAPHS[training_graph]`."""
    training = TRAINING_GRAPHS[training_graph](params, srng, k)
    generation = build_generation(params, srng, k_generate, n_generate)
    return training, generation
