"""Fast Importance Mining for the LSTM sentiment classifier (the paper's Section 5.1).

Plug-in for `dltutorials_is.fim.driver`: for review i, a private copy of the classifier starts from the
main run's W(0) and takes SGD steps on review i alone (loss: its cross-entropy, as in the
tutorial's training cost; dropout on by default, as in the tutorial's training mode) until a
step's loss is below ε or `max_iters` steps were taken. It returns T_i and the four score kinds
of every base matrix:

    Wc      the cell candidate's input weights W^c, `lstm_W[:, 3d:4d]` (paper eq. 27-28; default)
    lstm_W  all input weights of the four gates (the paper's W^x, eq. 22-23)
    lstm_U  the recurrent weights
    Wemb    the word embedding
    U       the classifier's weights

Two interchangeable private trainers compute the same numbers:

* `plain`: the tutorial's own model (`models.lstm.LstmModel`: its graph and split SGD step) at batch
  size 1: the reference.
* `fast` (default): the same model as one compiled function per SGD step (gradient and update
  fused), with the LSTM recurrence as two C loops (`graphs.lstm_kernels`) instead of `scan`, and a
  private copy of only the embedding rows of the review's own words (the other rows of Wemb get
  a zero gradient, so this is exactly SGD on the full matrix, without updating 10,000×d numbers
  per step); each distinct word's input projection is computed once per step.

What to expect (paper protocol, λ = 1, ε = 0.01, seed 123): every private run takes 50-51 steps
and ‖W^c_i‖ is the same for every review to ~1e-5 relative (the classifier's bias absorbs
single-review training), so the paper's P is uniform; ‖W^c_i − W^c(0)‖ varies with CV ≈ 0.08.

Each review's dropout masks come from the tutorial's MRG generator reseeded from (seed, i), so
results depend on neither the worker nor the order of the reviews.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import aesara
import aesara.tensor as at
from aesara.tensor.special import softmax

from dltutorials_is.datasets.imdb import imdb_paths, load_splits
from dltutorials_is.errors import SettingError
from dltutorials_is.fim import driver as fim
from dltutorials_is.graphs import lstm as graph
from dltutorials_is.graphs.lstm_kernels import PackedLSTMForward
from dltutorials_is.graphs.row_ops import gather_rows
from dltutorials_is.io import fingerprint
from dltutorials_is.models.base import reseed_first_streams
from dltutorials_is.models.lstm import LstmModel

BASES = graph.BASES
TRAINERS = ("fast", "plain")
DEFAULTS = {  # FIM's own hyperparameters
    "eps": 0.01,  # private training stops after the first step with loss < eps
    "lr": 1.0,  # private SGD step size λ
    "max_iters": 1000,
    "norm": "fro",
}


# ---------------------------------------------------------------------------------------------
# W(0) and the training set, as the main run makes them


def initial_state(options: dict, seed: int, data_dir=None):
    """`(train, W(0))` exactly as `tutorials.lstm.train_lstm` builds them for the same options and seed.

    Replays the run's RandomState: the validation split (and test subsample) first, then the
    initial parameters. `options` needs protocol, n_words, maxlen, test_size and dim_proj.
    """
    rng = np.random.RandomState(seed)
    train, _, _ = load_splits(options["protocol"], imdb_paths(data_dir)[0], options["n_words"],
                              options["maxlen"], options["test_size"], rng)
    options = {**options, "ydim": int(np.max(train[1])) + 1}
    return train, graph.init_params(options, rng)


def train_fingerprint(train) -> str:
    return fingerprint(train[0], np.asarray(train[1], dtype="int64"))


def init_fingerprint(params: dict) -> str:
    """Hash of W(0) as the run holds it, so in its floatX: the tutorial scales the classifier's
    weights after casting them, so float32 and float64 runs of one seed differ in the last bit."""
    return fingerprint(*[name for name in params], *[np.asarray(v) for v in params.values()])


def default_importance_path(options: dict) -> Path:
    """Where lstm/fim.py saves and lstm/train.py --is looks, named after what W(0) depends on, and the
    private model's options when they are not the tutorial's (so each such run mines its own P)."""
    precision = "" if aesara.config.floatX == "float64" else f"_{aesara.config.floatX}"
    private = ("" if options.get("use_dropout", True) else "_nodropout") + \
        (f"_decay{options['decay_c']:g}" if options.get("decay_c") else "")
    return Path(f"fim_{options['protocol']}_seed{options['seed']}_d{options['dim_proj']}"
                f"_w{options['n_words']}_maxlen{options['maxlen']}_test{options['test_size']}{private}{precision}.pkl")


def run_options(options: dict, floatX: str | None = None) -> dict:
    """The options of a run that change FIM's private model or its data, as an artefact's config records
    them: what `LstmFimSpec.config()` holds besides FIM's own settings, and what a run asks for
    (`expected`) when it loads P. `options` are the run's (train_lstm's model options, or the scripts'
    flags); floatX defaults to Aesara's current one."""
    return {"model": "lstm", "protocol": options.get("protocol"),
            "use_dropout": bool(options.get("use_dropout", True)), "decay_c": float(options.get("decay_c", 0.0)),
            "seed": int(options.get("seed", 123)), "floatX": floatX or aesara.config.floatX,
            "dim_proj": int(options["dim_proj"]), "n_words": int(options["n_words"]),
            "maxlen": options.get("maxlen") or None}  # 0 and None both keep every review


# ---------------------------------------------------------------------------------------------
# The plug-in


class LstmFimSpec:
    """Picklable description of FIM for one training set and W(0) (see `dltutorials_is.fim.driver`)."""

    def __init__(self, train, initial_params: dict, options: dict, eps=DEFAULTS["eps"], lr=DEFAULTS["lr"],
                 max_iters=DEFAULTS["max_iters"], norm=DEFAULTS["norm"], use_dropout=None, trainer="fast",
                 bases=BASES, seed=None, floatX=None):
        if trainer not in TRAINERS:
            raise ValueError(f"unknown private trainer {trainer!r}; choose {' or '.join(TRAINERS)}")
        fim.check_private_run_options(norm, bases, BASES, eps, lr, max_iters)
        seqs, labels = train
        if len(seqs) == 0:
            raise SettingError("the training set is empty — FIM needs at least one review")
        self.lengths = np.array([len(s) for s in seqs], dtype="int64")
        if np.any(self.lengths == 0):
            raise SettingError(f"review {int(np.flatnonzero(self.lengths == 0)[0])} is empty (no words) — FIM "
                               "cannot train on it; rebuild imdb.pkl with `python data/prepare_imdb.py --force`")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.words = np.concatenate([np.asarray(s, dtype="int64") for s in seqs])
        self.labels = np.asarray(labels, dtype="int64")
        self.floatX = floatX or aesara.config.floatX
        self.params = OrderedDict((k, np.asarray(v, dtype=self.floatX)) for k, v in initial_params.items())
        self.dim = self.params["lstm_U"].shape[0]
        self.run_options = run_options(
            {**options, "dim_proj": self.dim, "n_words": self.params["Wemb"].shape[0],
             **({} if use_dropout is None else {"use_dropout": use_dropout}), **({} if seed is None else {"seed": seed})},
            self.floatX)
        self.use_dropout, self.decay_c = self.run_options["use_dropout"], self.run_options["decay_c"]
        self.seed, self.protocol = self.run_options["seed"], self.run_options["protocol"]
        self.eps, self.lr, self.max_iters, self.norm = float(eps), float(lr), int(max_iters), norm
        self.trainer, self.bases = trainer, tuple(bases)
        self.n_samples = len(self.labels)
        self.train_fingerprint = train_fingerprint(train)
        self.init_fingerprint = init_fingerprint(initial_params)

    def config(self) -> dict:
        # `trainer` is left out on purpose: fast and plain compute the same scores.
        return {"eps": self.eps, "lr": self.lr, "max_iters": self.max_iters, "norm": self.norm,
                "bases": list(self.bases), **self.run_options}

    def review(self, i: int) -> tuple[np.ndarray, int]:
        return self.words[self.offsets[i] : self.offsets[i + 1]], int(self.labels[i])

    def dropout_seed(self, i: int) -> int:
        """The MRG seed of review i's dropout masks: a function of (seed, i) only."""
        return int(np.random.RandomState([self.seed, i]).randint(1, 2**30))

    def build(self):
        aesara.config.floatX = self.floatX  # this worker builds graphs of the run's float type
        trainer = FastPrivateTrainer(self) if self.trainer == "fast" else PlainPrivateTrainer(self)
        return trainer.run


class _PrivateTrainer:
    """Shared part of both trainers: the SGD loop, the stopping rule and the scores."""

    def __init__(self, spec: LstmFimSpec):
        self.spec = spec

    def run(self, i: int) -> fim.PrivateRun:
        spec = self.spec
        self.start(i, spec.dropout_seed(i))
        w0 = self.base_values_at_start()
        embedding_norm = (lambda final: {("Wemb", "norm"): self.embedding_norm(final["Wemb"])}) \
            if "Wemb" in spec.bases else None
        return fim.private_run(self.step, {b: w0[b] for b in spec.bases}, self.base_values_now, spec.eps,
                               spec.max_iters, spec.norm, embedding_norm)

    def bases_of(self, p: dict) -> dict:
        """The base matrices inside parameter values `p` (keyed like the tutorial's)."""
        return graph.base_matrices(p, self.spec.dim)


class PlainPrivateTrainer(_PrivateTrainer):
    """The reference: the tutorial's model and SGD step at batch size 1, on full parameters."""

    def __init__(self, spec: LstmFimSpec):
        super().__init__(spec)
        reviews = [spec.review(i)[0] for i in range(spec.n_samples)]
        options = {"dim_proj": spec.dim, "n_words": spec.params["Wemb"].shape[0], "ydim": spec.params["U"].shape[1],
                   "use_dropout": spec.use_dropout, "decay_c": spec.decay_c, "optimizer": "sgd",
                   "lrate": np.asarray(spec.lr, dtype=spec.floatX), "graph": "tutorial"}
        self.model = LstmModel(options, (reviews, spec.labels), spec.seed)
        self.model.check_finite = False  # a private run judges its steps by their loss alone
        self.one = np.ones(1)

    def start(self, i, dropout_seed):
        self.index = i
        self.model.set_params(self.spec.params)
        reseed_first_streams(self.model.trng, dropout_seed, self.spec.dim)

    def step(self):
        loss = self.model.train_step([self.index], self.one).cost
        grads = self.bases_of(self.model.last_gradients())
        return loss, fim.gradient_norms({b: grads[b] for b in self.spec.bases}, self.spec.norm)

    def base_values_at_start(self):
        return self.bases_of(self.spec.params)

    def base_values_now(self):
        return self.bases_of(self.model.get_params())

    def embedding_norm(self, wemb):
        return fim.matrix_norm(wemb, self.spec.norm)


class FastPrivateTrainer(_PrivateTrainer):
    """The same SGD as `PlainPrivateTrainer`, restructured for speed (see the module docstring)."""

    def __init__(self, spec: LstmFimSpec):
        super().__init__(spec)
        p = spec.params
        shared = lambda name, value: aesara.shared(value.copy(), name=name)  # noqa: E731
        self.rows = shared("Wemb_rows", p["Wemb"][:1])  # the review's own embedding rows
        self.shared = OrderedDict((k, shared(k, p[k])) for k in ("lstm_W", "lstm_U", "lstm_b", "U", "b"))
        self.trng = graph.random_stream(spec.seed)
        use_noise = aesara.shared(np.asarray(1.0, dtype=spec.floatX))

        local = at.vector("local_words", dtype="int64")  # the review, as indices into `rows`
        y = at.scalar("y", dtype="int64")
        lr = at.scalar("lr", dtype=spec.floatX)
        W, U, b = self.shared["lstm_W"], self.shared["lstm_U"], self.shared["lstm_b"]
        # Input projections of each distinct word once, then gathered per position: the
        # gradient then sums per word before the matrix products, which shrink from L to k rows.
        # One review packed is one row per step (batch_sizes all 1).
        hidden = PackedLSTMForward()(gather_rows(at.dot(self.rows, W), local), b, U, at.ones_like(local))[0]
        proj = (hidden.sum(axis=0) / at.cast(local.shape[0], spec.floatX))[None, :]
        if spec.use_dropout:
            proj = graph.dropout(proj, use_noise, self.trng)
        pred = softmax(at.dot(proj, self.shared["U"]) + self.shared["b"], axis=-1)
        cost = -at.log(pred[0, y] + 1e-8)
        if spec.decay_c > 0:
            cost += np.asarray(spec.decay_c, dtype=spec.floatX) * at.square(self.shared["U"]).sum()
        params = [self.rows, *self.shared.values()]
        grads = at.grad(cost, params)
        by_name = dict(zip(["Wemb", *self.shared], grads))
        base_grads = [self.bases_of(by_name)[bname] for bname in spec.bases]
        # Frobenius norms are summed inside the step, so no gradient matrix leaves it; the
        # spectral norm is numpy's, of the gradients themselves.
        self.norms_inside = spec.norm == "fro"
        self.f_step = aesara.function(
            [local, y, lr], [cost] + ([at.sqrt(at.sum(at.square(g))) for g in base_grads] if self.norms_inside
                                      else base_grads),
            updates=[(v, v - lr * g) for v, g in zip(params, grads)], name="fim_private_sgd_step",
            # Each gradient is both an input of its norm and of an update; folding lr·dot(a, b)
            # into the update's GEMM would compute every big matrix product twice.
            mode=aesara.compile.mode.get_default_mode().excluding("gemm_optimizer", "local_dot22_to_dot22scalar"))
        self.lr = np.asarray(spec.lr, dtype=spec.floatX)
        wemb = p["Wemb"].astype("float64")
        self.row_sq_norms = np.sum(wemb * wemb, axis=1)
        self.wemb_sq_norm = float(self.row_sq_norms.sum())

    def start(self, i, dropout_seed):
        words, label = self.spec.review(i)
        self.words, local = np.unique(words, return_inverse=True)
        self.local = local.astype("int64")
        self.rows.set_value(self.spec.params["Wemb"][self.words].copy())
        for name, value in self.shared.items():
            value.set_value(self.spec.params[name].copy())
        reseed_first_streams(self.trng, dropout_seed, self.spec.dim)
        self.y = np.asarray(label, dtype="int64")

    def step(self):
        loss, *outputs = self.f_step(self.local, self.y, self.lr)
        if self.norms_inside:
            return float(loss), dict(zip(self.spec.bases, map(float, outputs)))
        return float(loss), fim.gradient_norms(dict(zip(self.spec.bases, outputs)), self.spec.norm)

    def base_values_at_start(self):
        p = dict(self.spec.params, Wemb=self.spec.params["Wemb"][self.words])
        return self.bases_of(p)

    def base_values_now(self):
        p = {k: v.get_value() for k, v in self.shared.items()}
        p["Wemb"] = self.rows.get_value()
        return self.bases_of(p)

    def embedding_norm(self, rows):
        """‖Wemb_i‖ of the full matrix: the untouched rows are W(0)'s."""
        if self.spec.norm == "spectral":
            full = self.spec.params["Wemb"].copy()
            full[self.words] = rows
            return fim.matrix_norm(full, "spectral")
        rows = rows.astype("float64")
        untouched = self.wemb_sq_norm - self.row_sq_norms[self.words].sum()
        return float(np.sqrt(max(untouched, 0.0) + np.sum(rows * rows)))


# ---------------------------------------------------------------------------------------------
# What lstm/train.py --is calls


def load_or_mine_lstm_importance(path, train, initial_params: dict, options: dict, score: str | None = None,
                                 base: str = "Wc", n_jobs: int = -1, backend: str | None = None,
                                 log=print, **fim_options) -> np.ndarray:
    """P for `train` and W(0) `initial_params`: loaded from `path` after checking it belongs to
    them, or mined first (then saved there; an interrupted mining resumes). `fim_options` are
    `LstmFimSpec`'s (eps, lr, max_iters, norm, use_dropout, seed, trainer). An artefact mined with other
    run options (`run_options`: dropout, weight decay, seed, sizes, protocol, maxlen, floatX) is refused."""
    overrides = {key: fim_options[key] for key in ("use_dropout", "seed") if fim_options.get(key) is not None}
    return fim.load_or_mine(
        Path(path) if path else default_importance_path({**options, **overrides}),
        lambda: LstmFimSpec(train, initial_params, options, bases=(base, *[b for b in BASES if b != base]),
                            **fim_options),
        len(train[0]), train_fingerprint(train), init_fingerprint(initial_params), score, base,
        n_jobs=n_jobs, backend=backend, log=log, unit="reviews",
        expected=expected_options(options, initial_params, **overrides))


def expected_options(options: dict, initial_params: dict | None = None, **overrides) -> dict:
    """`run_options` of a run about to use P: its model sizes from W(0) when given (as the spec takes them)."""
    sizes = {} if initial_params is None else {"dim_proj": initial_params["lstm_U"].shape[0],
                                               "n_words": initial_params["Wemb"].shape[0]}
    return run_options({**options, **sizes, **overrides})
