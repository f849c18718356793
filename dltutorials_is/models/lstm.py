"""The LSTM sentiment classifier as a `Model`: the tutorial's graph, optimiser and dropout stream, bound
to a training set.

Everything that trains, scores or probes the LSTM goes through `LstmModel`: the tutorial's loop, the
replication, FIM's reference private trainer, the variance probe and the benchmarks. Its training step
is the tutorial's `f_grad_shared(x, mask, y, weights)` then `f_update(lrate)`, on the minibatch
`prepare_data` pads from the named reviews, so with weights 1 it computes the tutorial's numbers.
By default the graph is the fast one (`options["graph"] = "fast"`: the same function over a packed
minibatch, see `graphs.lstm.fast_encoder`); `"tutorial"` is the original's `scan` graph.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import cached_property
from typing import Mapping, Sequence

import numpy as np
import aesara
import aesara.tensor as at

from dltutorials_is.graphs import lstm as graph
from dltutorials_is.io import non_finite
from dltutorials_is.models.base import ModelStateError, StepResult, set_stream_states, stream_states
from dltutorials_is.optimisers import get_optimiser

Split = tuple[list, list]

#: The options that shape the compiled graph (a model can be reused for runs that differ in nothing else).
GRAPH_OPTIONS = ("dim_proj", "n_words", "ydim", "use_dropout", "decay_c", "optimizer", "graph")


class LstmModel:
    """One LSTM classifier: shared parameters, optimiser, dropout stream and compiled functions.

    `options` are `train_lstm`'s (`dim_proj`, `n_words`, `ydim`, `use_dropout`, `decay_c`,
    `optimizer`, `lrate`); `train` the training set the step's indices refer to. W(0) is drawn from
    `rng` (default `RandomState(seed)`) in the tutorial's order and the dropout stream is the
    tutorial's `MRG_RandomStreams(seed)`. Every function compiles on first use (the training step,
    prediction, per-sample losses, the one-sample gradient).
    """

    BASES = graph.BASES

    def __init__(self, options: dict, train: Split, seed: int, rng: np.random.RandomState | None = None):
        self.options = dict(options)
        self.floatX = aesara.config.floatX
        self.dim = int(options["dim_proj"])
        self.use_data(train)
        params = graph.init_params(self.options, rng if rng is not None else np.random.RandomState(seed))
        self.tparams = graph.to_shared(params)
        self.trng = graph.random_stream(seed)
        self.graph = graph.build_model(self.tparams, self.options, self.trng)
        self.layout = graph.encoder(self.options).layout
        self.set_step_size(self.options.get("lrate", 0.0001))
        #: check after every update that the parameters are still finite (see `train_step`)
        self.check_finite = True

    @cached_property
    def optimiser(self):
        """The tutorial's `(f_grad_shared, f_update)` over the weighted cost, compiled on first use."""
        grads = at.grad(self.graph.cost, wrt=list(self.tparams.values()))
        lr = at.scalar(name="lr")
        return get_optimiser(self.options.get("optimizer", "adadelta"))(
            lr, self.tparams, grads, self.graph.inputs, self.graph.cost)

    # -- data ------------------------------------------------------------------------------------

    def use_data(self, train: Split) -> None:
        """Make `train` the training set that indices refer to (a compiled model serves many runs)."""
        self.train = train
        self.n_train = len(train[0])

    def minibatch(self, indices: Sequence[int], split: Split | None = None) -> tuple[tuple, np.ndarray]:
        """(sequences, y) of those reviews of `split` (default: the training set): the graph's sequence
        inputs (the tutorial graph's `prepare_data` x and mask, or the fast graph's packed layout)."""
        seqs, labels = split if split is not None else self.train
        return tuple(self.layout([seqs[i] for i in indices])), np.asarray([labels[i] for i in indices], dtype="int64")

    # -- training --------------------------------------------------------------------------------

    def set_step_size(self, value: float) -> None:
        self.lrate = value

    def train_step(self, indices: np.ndarray, weights: np.ndarray) -> StepResult:
        """The tutorial's update in training mode (dropout on); not applied if the cost is not finite.

        After the update the parameters are checked to be finite (a step size far too large can make
        them infinite while the cost that was computed before the update is still finite). That check
        costs ~1 ms at the tutorial's size, a few % of an update; the update itself cannot be undone
        without copying every parameter and optimiser accumulator at every step, which would cost more,
        so such a step is reported as applied (`StepResult.params_finite` False, `applied` True).
        """
        self.graph.use_noise.set_value(graph.floatx(1.0))
        sequences, y = self.minibatch(indices)
        cost = self.optimiser.f_grad_shared(*sequences, y, graph.floatx(weights))
        if not np.isfinite(cost):
            return StepResult(float(cost), applied=False)
        self.optimiser.f_update(self.lrate)
        finite = not self.check_finite or not non_finite({n: p.get_value(borrow=True) for n, p in self.tparams.items()})
        return StepResult(float(cost), params_finite=finite)

    def last_gradients(self) -> OrderedDict:
        """The gradient the last `train_step` computed (by parameter name), before its update."""
        return OrderedDict((name, g.get_value()) for name, g in zip(self.tparams, self.optimiser.gradients))

    # -- evaluation ------------------------------------------------------------------------------

    @cached_property
    def f_pred(self):
        """(*sequences) -> predicted classes. Like every function of the graph it draws a dropout mask."""
        return self.graph.f_pred

    @cached_property
    def f_losses(self):
        g = self.graph
        return aesara.function([*g.sequences, g.y], g.per_sample_loss, name="f_losses")

    @cached_property
    def f_grad(self):
        g = self.graph
        return aesara.function(g.inputs, at.grad(g.cost, wrt=list(self.tparams.values())), name="f_grad")

    def error(self, split: Split, batches: Sequence[np.ndarray]) -> float:
        """The tutorial's `pred_error`: error rate over `split`, classified minibatch by minibatch."""
        self.graph.use_noise.set_value(graph.floatx(0.0))
        labels = np.asarray(split[1])
        correct = 0
        for index in batches:
            sequences, _ = self.minibatch(index, split)
            correct += (self.f_pred(*sequences) == labels[index]).sum()
        return error_rate(correct, len(split[0]))

    def probabilities(self, split: Split, batches: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities of the reviews `np.concatenate(batches)` of `split`, dropout off: one
        forward pass gives `error`'s number (argmax, as `f_pred`) and ranking metrics as well."""
        self.graph.use_noise.set_value(graph.floatx(0.0))
        return np.concatenate([self.graph.f_pred_prob(*self.minibatch(index, split)[0]) for index in batches])

    def losses(self, indices: Sequence[int]) -> np.ndarray:
        """Per-review cross-entropies, dropout off. The tutorial's loss −log(p_y + 1e-8) is about −1e-8
        for a confidently right review: such a review scores 0 (NaN and inf are kept)."""
        self.graph.use_noise.set_value(graph.floatx(0.0))
        sequences, y = self.minibatch(indices)
        return np.maximum(np.asarray(self.f_losses(*sequences, y), dtype="float64"), 0.0)

    def gradient(self, index: int) -> OrderedDict:
        """Review `index`'s gradient at batch size 1, dropout off; the dropout stream is put back."""
        saved = stream_states(self.trng)
        self.graph.use_noise.set_value(graph.floatx(0.0))
        sequences, y = self.minibatch([index])
        values = self.f_grad(*sequences, y, graph.floatx([1.0]))
        set_stream_states(self.trng, saved)
        return OrderedDict(zip(self.tparams, values))

    def base_matrices(self, params: Mapping[str, np.ndarray]) -> dict:
        return graph.base_matrices(params, self.dim)

    # -- state -----------------------------------------------------------------------------------

    def get_params(self) -> OrderedDict:
        return graph.get_values(self.tparams)

    def set_params(self, values: Mapping[str, np.ndarray]) -> None:
        for name, shared in self.tparams.items():
            if name not in values:
                raise ModelStateError(f"the saved parameters have no {name!r}")
            value = np.asarray(values[name])
            if value.shape != shared.get_value(borrow=True).shape:
                raise ModelStateError(f"parameter {name} has shape {value.shape}, the model expects "
                                      f"{shared.get_value(borrow=True).shape}")
            shared.set_value(value.astype(self.floatX, copy=False))

    def get_state(self) -> dict:
        return {"params": self.get_params(), "streams": stream_states(self.trng),
                "optimiser": [v.get_value() for v in self.optimiser.accumulators]}

    def set_state(self, state: dict) -> None:
        self.set_params(state["params"])
        set_stream_states(self.trng, state["streams"])
        accumulators = self.optimiser.accumulators
        if len(state["optimiser"]) != len(accumulators):
            raise ModelStateError("the saved state is of another optimiser")
        for shared, value in zip(accumulators, state["optimiser"]):
            shared.set_value(np.asarray(value, dtype=shared.dtype))

    def reset(self, seed: int, rng: np.random.RandomState | None = None) -> None:
        self.set_params(graph.init_params(self.options, rng if rng is not None else np.random.RandomState(seed)))
        self.trng.seed(int(seed))
        for shared in self.optimiser.accumulators:
            shared.set_value(np.zeros_like(shared.get_value(borrow=True)))


def error_rate(correct: int, n: int) -> float:
    """`pred_error`'s arithmetic, 1 − correct/n in floatX, so that every path gives the same number."""
    return 1.0 - graph.floatx(correct) / n
