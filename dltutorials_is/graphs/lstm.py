"""The LSTM sentiment classifier of the deeplearning.net tutorial as Aesara graphs.

Words are embedded (`Wemb`), read by one LSTM layer (`lstm_W`, `lstm_U`, `lstm_b`), the hidden
states are mean-pooled over each review's real (unpadded) steps, dropped out, and a softmax
classifier (`U`, `b`) gives the class probabilities. Two graphs compute the LSTM part (`ENCODERS`):
the tutorial's, `scan` over a padded time-major minibatch (`x` and `mask`, time steps × samples),
and the fast one, the same function over a packed minibatch (the default; `fast_encoder`).

The four gates share one matrix each: the columns of `lstm_W`, `lstm_U` and `lstm_b` hold, in the
tutorial's order, the input gate, the forget gate, the output gate and the cell candidate
(the paper's eq. 26 z, f, o and C̃). `gate_slice` names those column blocks, so the paper's base
matrix W^c (the input weights of the cell candidate, eq. 27) is `lstm_W[:, gate_slice("cell", d)]`.

The graph is expressed with a per-sample loss and a per-sample weight, so the same graph serves
uniform training (weights 1, the tutorial's cost), importance sampling (weights 1/(N p_i)) and a
single review's private training (one column).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import aesara
import aesara.tensor as at
from aesara.tensor.special import softmax

from dltutorials_is.datasets.imdb import pack_sequences, prepare_data
from dltutorials_is.errors import UserError
from dltutorials_is.graphs.lstm_kernels import PackedLSTMForward
from dltutorials_is.graphs.row_ops import gather_rows, scatter_add_rows

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # the MRG generator is what the tutorial used
    from aesara.sandbox.rng_mrg import MRG_RandomStream

PREFIX = "lstm"
PARAM_NAMES = ("Wemb", "lstm_W", "lstm_U", "lstm_b", "U", "b")
GATES = ("input", "forget", "output", "cell")  # column blocks of lstm_W, lstm_U, lstm_b, in order
#: The matrices FIM can score, the paper's W^c first (then the gates' input weights W^x, eq. 22-23, the
#: recurrent weights, the embedding and the classifier's weights).
BASES = ("Wc", "lstm_W", "lstm_U", "Wemb", "U")


def floatx(value) -> np.ndarray:
    return np.asarray(value, dtype=aesara.config.floatX)


def gate_slice(gate: str, dim_proj: int) -> slice:
    """The columns of `lstm_W`, `lstm_U` or `lstm_b` that feed `gate` (one of `GATES`)."""
    if gate not in GATES:
        raise ValueError(f"unknown gate {gate!r}; the LSTM's gates are {', '.join(GATES)}")
    block = GATES.index(gate)
    return slice(block * dim_proj, (block + 1) * dim_proj)


def cell_input_weights(lstm_W, dim_proj: int):
    """W^c (paper eq. 26-27): the block of `lstm_W` feeding the tanh cell candidate.

    Works on a numpy array and on a symbolic matrix alike.
    """
    return lstm_W[:, gate_slice("cell", dim_proj)]


def base_matrices(params, dim_proj: int) -> dict:
    """`BASES` by name, from parameter values (numpy arrays or symbolic variables) keyed like the tutorial's."""
    return {"Wc": cell_input_weights(params["lstm_W"], dim_proj), "lstm_W": params["lstm_W"],
            "lstm_U": params["lstm_U"], "Wemb": params["Wemb"], "U": params["U"]}


def random_stream(seed: int) -> MRG_RandomStream:
    """The dropout generator (Theano's `MRG_RandomStreams(SEED)` in the tutorial)."""
    return MRG_RandomStream(seed=int(seed))


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------

def ortho_weight(ndim: int, rng: np.random.RandomState) -> np.ndarray:
    """A random orthogonal matrix: the left singular vectors of a Gaussian one."""
    u, _, _ = np.linalg.svd(rng.randn(ndim, ndim))
    return u.astype(aesara.config.floatX)


def init_params(options: dict, rng: np.random.RandomState) -> OrderedDict:
    """The tutorial's initial parameters, drawn from `rng` in its order.

    `Wemb` ~ 0.01·U[0, 1) (the tutorial draws `rand`, though it calls it randn), the four gate
    blocks of `lstm_W` then of `lstm_U` orthogonal, classifier `U` ~ 0.01·N(0, 1), biases zero.
    `options` needs `n_words`, `dim_proj` and `ydim`.
    """
    n_words, dim, ydim = options["n_words"], options["dim_proj"], options["ydim"]
    floatX = aesara.config.floatX
    params = OrderedDict()
    params["Wemb"] = (0.01 * rng.rand(n_words, dim)).astype(floatX)
    params["lstm_W"] = np.concatenate([ortho_weight(dim, rng) for _ in GATES], axis=1)
    params["lstm_U"] = np.concatenate([ortho_weight(dim, rng) for _ in GATES], axis=1)
    params["lstm_b"] = np.zeros((len(GATES) * dim,)).astype(floatX)
    params["U"] = 0.01 * rng.randn(dim, ydim).astype(floatX)
    params["b"] = np.zeros((ydim,)).astype(floatX)
    return params


class ModelFileError(UserError, ValueError):
    """A saved model that cannot be loaded into this one; the message says why."""


def load_params(path: str | Path, params: OrderedDict) -> OrderedDict:
    """Replace every array of `params` by the one saved under its name in the `.npz` at `path`.

    Raises ModelFileError, naming the problem, for a missing, truncated or corrupt file, a missing
    array, one whose shape differs (a model saved with other `dim_proj`/`n_words`) or one holding
    NaN or inf.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"cannot reload the model: {path} does not exist — give the path of a model saved "
                             "by lstm/train.py (--saveto)")
    try:
        saved = np.load(path, allow_pickle=False)  # no pickled objects: a random file cannot build any
        if not isinstance(saved, np.lib.npyio.NpzFile):
            raise ValueError(f"it holds a single {type(saved).__name__}, not named arrays")
        with saved:
            arrays = {name: saved[name] for name in saved.files}
    except Exception as error:  # BadZipFile, zlib.error, EOFError, ValueError, a .npy array, …: a damaged file
        raise ModelFileError(f"cannot reload the model: {path} is not a readable .npz file (truncated or corrupt: "
                             f"{type(error).__name__}: {error}) — give another model file") from error
    for name, value in params.items():
        if name not in arrays:
            raise ModelFileError(f"cannot reload the model: {path} has no array {name!r} (it holds {sorted(arrays)})")
        if arrays[name].dtype.kind not in "biuf":
            raise ModelFileError(f"cannot reload the model: {name} in {path} holds {arrays[name].dtype} values, "
                                 "not numbers")
        if arrays[name].shape != value.shape:
            raise ModelFileError(
                f"cannot reload the model: {name} in {path} has shape {arrays[name].shape}, this model needs "
                f"{value.shape} (was it trained with other --dim-proj or --n-words?)"
            )
        if arrays[name].dtype.kind in "fc" and not np.all(np.isfinite(arrays[name])):
            raise ModelFileError(f"cannot reload the model: {name} in {path} holds NaN or inf (saved by a run that "
                                 "diverged) — reload an earlier model")
        params[name] = arrays[name].astype(value.dtype, copy=False)
    return params


def to_shared(params: OrderedDict) -> OrderedDict:
    """Shared variables holding a copy of each parameter (the tutorial's `init_tparams`)."""
    return OrderedDict((name, aesara.shared(value, name=name)) for name, value in params.items())


def get_values(tparams: OrderedDict) -> OrderedDict:
    """The current parameter values as numpy arrays (the tutorial's `unzip`)."""
    return OrderedDict((name, shared.get_value()) for name, shared in tparams.items())


def set_values(tparams: OrderedDict, params: OrderedDict) -> None:
    """Load numpy values into the shared parameters (the tutorial's `zipp`)."""
    for name, value in params.items():
        tparams[name].set_value(value)


# ---------------------------------------------------------------------------------------------
# Graph
# ---------------------------------------------------------------------------------------------

def lstm_layer(tparams: OrderedDict, emb, mask, dim_proj: int):
    """Hidden states (steps × samples × dim_proj) of the LSTM over embedded inputs `emb`.

    Padded steps (mask 0) carry the previous state through unchanged.
    """
    n_samples = emb.shape[1]

    def block(preact, gate):
        return preact[:, gate_slice(gate, dim_proj)]

    def step(m_, x_, h_, c_):
        preact = at.dot(h_, tparams["lstm_U"])
        preact += x_
        i = at.sigmoid(block(preact, "input"))
        f = at.sigmoid(block(preact, "forget"))
        o = at.sigmoid(block(preact, "output"))
        c = at.tanh(block(preact, "cell"))
        c = f * c_ + i * c
        c = m_[:, None] * c + (1.0 - m_)[:, None] * c_
        h = o * at.tanh(c)
        h = m_[:, None] * h + (1.0 - m_)[:, None] * h_
        return h, c

    # All steps' input projections at once, as the tutorial (one big dot instead of one per step).
    state_below = at.dot(emb, tparams["lstm_W"]) + tparams["lstm_b"]
    zeros = at.alloc(floatx(0.0), n_samples, dim_proj)
    (h, _), _ = aesara.scan(
        step,
        sequences=[mask, state_below],
        outputs_info=[zeros, zeros],
        name=f"{PREFIX}__layers",
        n_steps=emb.shape[0],
    )
    return h


def dropout(state, use_noise, trng: MRG_RandomStream):
    """Keep each unit with probability 1/2 while training; halve every unit otherwise.

    Both branches are in the graph (an elementwise switch), so every compiled function that
    contains it, prediction included, draws a mask and advances `trng`, as in the tutorial.
    """
    keep = trng.binomial(state.shape, p=0.5, n=1, dtype=state.dtype)
    return at.switch(use_noise, state * keep, state * 0.5)


def tutorial_encoder(tparams: OrderedDict, dim_proj: int):
    """The tutorial's graph: padded time-major `x` and `mask` (`prepare_data`'s), `scan` over every step.

    Returns the sequence inputs and the hidden states mean-pooled over each review's real steps.
    """
    x = at.matrix("x", dtype="int64")
    mask = at.matrix("mask", dtype=aesara.config.floatX)
    n_timesteps, n_samples = x.shape[0], x.shape[1]
    emb = tparams["Wemb"][x.flatten()].reshape([n_timesteps, n_samples, dim_proj])
    h = lstm_layer(tparams, emb, mask, dim_proj)
    proj = (h * mask[:, :, None]).sum(axis=0)
    return [x, mask], proj / mask.sum(axis=0)[:, None]


def fast_encoder(tparams: OrderedDict, dim_proj: int):
    """The same function over a packed minibatch (`pack_sequences`'s tokens, batch_sizes, owner, lengths):
    no padded step costs anything, the recurrence is one C loop calling BLAS (`lstm_kernels`), and
    rows are gathered and scattered by plain C loops (`row_ops`).

    Each review's states are summed in time order, as the tutorial's masked sum adds them, then divided
    by its length.
    """
    floatX = aesara.config.floatX
    tokens = at.vector("tokens", dtype="int64")
    batch_sizes = at.vector("batch_sizes", dtype="int64")
    owner = at.vector("owner", dtype="int64")
    lengths = at.vector("lengths", dtype=floatX)
    xW = at.dot(gather_rows(tparams["Wemb"], tokens), tparams["lstm_W"])
    h = PackedLSTMForward()(xW, tparams["lstm_b"], tparams["lstm_U"], batch_sizes)[0]
    summed = scatter_add_rows(h, owner, lengths.shape[0])
    return [tokens, batch_sizes, owner, lengths], summed / lengths[:, None]


@dataclass(frozen=True)
class Encoder:
    """A way to compute the mean-pooled LSTM states: its graph and the layout of its minibatches."""

    build: Callable  # (tparams, dim_proj) -> (sequence inputs, pooled states: samples × dim_proj)
    layout: Callable  # seqs -> the values of those inputs


#: `fast` (the default) and `tutorial` compute the same function (to rounding: the fast graph adds the
#: same numbers in another order inside matrix products); `tutorial` is the original's graph, for the diff.
ENCODERS = {"fast": Encoder(fast_encoder, pack_sequences),
            "tutorial": Encoder(tutorial_encoder, lambda seqs: prepare_data(seqs, [0] * len(seqs))[:2])}


def encoder(options: dict) -> Encoder:
    name = options.get("graph", "fast")
    if name not in ENCODERS:
        raise ValueError(f"unknown LSTM graph {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


@dataclass
class LstmGraph:
    """Inputs, outputs and the dropout switch of the LSTM classifier.

    `cost = mean(weights * per_sample_loss)` (+ `decay_c · ΣU²` if `decay_c > 0`); with all
    weights 1 it is the tutorial's cost. `sequences` are the encoder's inputs (`x, mask` for the
    tutorial's graph); `f_pred_prob(*sequences)` and `f_pred(*sequences)` compile on first use.
    """

    use_noise: aesara.compile.SharedVariable
    sequences: list
    y: at.TensorVariable
    weights: at.TensorVariable
    pred: at.TensorVariable  # class probabilities, samples × ydim
    per_sample_loss: at.TensorVariable
    cost: at.TensorVariable

    @property
    def inputs(self) -> list:
        """The training functions' inputs, in call order: the sequences, y, weights."""
        return [*self.sequences, self.y, self.weights]

    @cached_property
    def f_pred_prob(self):
        return aesara.function(self.sequences, self.pred, name="f_pred_prob")

    @cached_property
    def f_pred(self):
        return aesara.function(self.sequences, self.pred.argmax(axis=1), name="f_pred")


def build_model(tparams: OrderedDict, options: dict, trng: MRG_RandomStream) -> LstmGraph:
    """The classifier's graph over shared parameters `tparams` (see `LstmGraph`).

    `options` needs `dim_proj`, `use_dropout` and, optionally, `decay_c` (weight decay on `U`) and
    `graph` (`ENCODERS`; default `fast`).
    """
    floatX = aesara.config.floatX
    use_noise = aesara.shared(floatx(0.0))
    y = at.vector("y", dtype="int64")
    weights = at.vector("weights", dtype=floatX)

    sequences, proj = encoder(options).build(tparams, options["dim_proj"])
    if options["use_dropout"]:
        proj = dropout(proj, use_noise, trng)
    pred = softmax(at.dot(proj, tparams["U"]) + tparams["b"], axis=-1)

    off = 1e-6 if pred.dtype == "float16" else 1e-8  # keeps log() finite
    per_sample_loss = -at.log(pred[at.arange(pred.shape[0]), y] + off)
    cost = (weights * per_sample_loss).mean()
    decay_c = options.get("decay_c", 0.0)
    if decay_c > 0.0:
        decay = aesara.shared(floatx(decay_c), name="decay_c")
        cost += decay * at.square(tparams["U"]).sum()
    return LstmGraph(use_noise, sequences, y, weights, pred, per_sample_loss, cost)
