"""Fast Importance Mining for the RNN-RBM (the paper's Section 5.2).

Plug-in for `dltutorials_is.fim.driver`. A sample is a training chunk (up to batch_size consecutive frames
of one song, footnote 5). For chunk i a private RNN-RBM starts from the main run's W(0) and takes
plain SGD steps of the tutorial's CD-k update on chunk i alone until a step's loss, the per-frame
cross-entropy -monitor, is below ε, or `max_iters` steps were taken. Scores (`fim.SCORE_KINDS`) are
kept for every selected base matrix; the paper's is the RBM weight matrix W (Section 5.2.3), the
default. The others (bv, bh, Wuh, Wuv, Wvu, Wuu, bu) can be scored in the same run.

The Gibbs chains of chunk i draw from an MRG stream reseeded from (seed, i), so a chunk's result
depends on neither the worker nor the order in which chunks are mined.
"""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import aesara

from dltutorials_is.datasets.chunks import make_chunks, training_fingerprint
from dltutorials_is.errors import SettingError
from dltutorials_is.fim import driver as fim
from dltutorials_is.graphs import rnnrbm as graph
from dltutorials_is.io import fingerprint
from dltutorials_is.models.base import reseed_first_streams
from dltutorials_is.models.rnnrbm import RnnRbmConfig, RnnRbmModel

BASES = graph.PARAM_NAMES  # "W" first: the paper's base matrix
DEFAULTS = {  # FIM's own hyperparameters (the private SGD is not the main run's)
    "eps": 8.0,  # private training stops after the first step with per-frame cross-entropy < eps (nats)
    "lr": 0.1,  # private SGD step size
    "max_iters": 200,
    "norm": "fro",
}


def init_fingerprint(params: dict) -> str:
    """Hash of W(0) at float32 precision, so float32 and float64 runs of one seed agree."""
    return fingerprint(*graph.PARAM_NAMES, *[np.asarray(params[n], dtype="float32") for n in graph.PARAM_NAMES])


def default_importance_path(config) -> Path:
    """Named after the run options FIM depends on (k and floatX only when not the tutorial's)."""
    private = ("" if config.k == RnnRbmConfig.k else f"_k{config.k}") + \
        ("" if config.floatX == "float64" else f"_{config.floatX}")
    return Path(f"fim_rnnrbm_seed{config.seed}_b{config.batch_size}_h{config.n_hidden}"
                f"_u{config.n_hidden_recurrent}_dt{config.dt:g}_r{config.r[0]}-{config.r[1]}{private}.pkl")


def run_options(config) -> dict:
    """The options of a run (an `RnnRbmConfig`) that change FIM's private model or its chunks, as an
    artefact's config records them: what `RnnRbmFimSpec.config()` holds besides FIM's own settings, and
    what a run asks for (`expected`) when it loads P. The run's step size and epochs do not count."""
    c = config
    return {"model": "rnnrbm", "protocol": "nottingham", "k": c.k, "seed": c.seed, "floatX": c.floatX,
            "batch_size": c.batch_size, "n_hidden": c.n_hidden, "n_hidden_recurrent": c.n_hidden_recurrent,
            "r": list(c.r), "dt": c.dt}


class RnnRbmFimSpec:
    """Picklable description of FIM for one chunked training set and W(0) (see `dltutorials_is.fim.driver`)."""

    def __init__(self, train_songs, initial_params: dict, config, eps=DEFAULTS["eps"], lr=DEFAULTS["lr"],
                 max_iters=DEFAULTS["max_iters"], norm=DEFAULTS["norm"], bases=BASES):
        fim.check_private_run_options(norm, bases, BASES, eps, lr, max_iters)
        if not len(train_songs):
            raise SettingError("the training set is empty — FIM needs at least one song")
        self.batch_size = config.batch_size
        self.chunks = np.array(make_chunks(train_songs, config.batch_size), dtype="int64")
        lengths = np.array([len(s) for s in train_songs], dtype="int64")
        self.song_offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.frames = np.concatenate(train_songs).astype("uint8")  # 0/1: compact for the workers
        self.params = {n: np.asarray(initial_params[n], dtype=config.floatX) for n in graph.PARAM_NAMES}
        self.model_config = config
        self.eps, self.lr, self.max_iters, self.norm = float(eps), float(lr), int(max_iters), norm
        self.bases = tuple(bases)
        self.n_samples = len(self.chunks)
        self.train_fingerprint = training_fingerprint(train_songs, config.batch_size)
        self.init_fingerprint = init_fingerprint(initial_params)

    def config(self) -> dict:
        return {"eps": self.eps, "lr": self.lr, "max_iters": self.max_iters, "norm": self.norm,
                "bases": list(self.bases), **run_options(self.model_config)}

    def chunk(self, i: int) -> np.ndarray:
        song, start = self.chunks[i]
        first = self.song_offsets[song] + start
        last = min(first + self.batch_size, self.song_offsets[song + 1])
        return self.frames[first:last].astype(self.model_config.floatX)

    def gibbs_seed(self, i: int) -> int:
        """The MRG seed of chunk i's Gibbs chains: a function of (seed, i) only."""
        return int(np.random.RandomState([self.model_config.seed, 2, i]).randint(1, 2**30))

    def build(self):
        """The private trainer's `run`, compiled once per process for a given spec (a pilot and the
        full run, or a second `mine` of the same spec, reuse it)."""
        key = fingerprint(json.dumps(self.config(), sort_keys=True), self.train_fingerprint, self.init_fingerprint,
                          self.model_config.graph)  # not in the artefact (same numbers), but what is compiled
        if getattr(_compiled, "key", None) != key:
            aesara.config.floatX = self.model_config.floatX  # this worker builds graphs of the run's float type
            _compiled.trainer, _compiled.key = PrivateTrainer(self), key
        return _compiled.trainer.run


_compiled = threading.local()  # one private trainer per thread: its shared variables are not thread-safe


class PrivateTrainer:
    """One compiled private RNN-RBM (`RnnRbmModel` with FIM's step size), reset to W(0) for every chunk:
    the tutorial's CD-k SGD step, returning the loss and the gradients of the base matrices."""

    def __init__(self, spec: RnnRbmFimSpec):
        self.spec = spec
        config = replace(spec.model_config, lr=spec.lr)
        self.model = RnnRbmModel(config, np.random.RandomState(config.seed))
        self.model.train_function_with_gradients  # compile now, once per worker
        n_visible, n_hidden = spec.params["W"].shape
        self.n_random = spec.batch_size * max(n_visible, n_hidden)  # the largest binomial sample of a chunk
        self.one = np.ones(1)

    def run(self, i: int) -> fim.PrivateRun:
        spec, model = self.spec, self.model
        model.set_params(spec.params)
        model.use_data([spec.chunk(i)])
        reseed_first_streams(model.srng, spec.gibbs_seed(i), self.n_random)

        def step():
            result, grads = model.train_step_with_gradients([0], self.one)
            return (-result.monitor if result.finite else np.nan), fim.gradient_norms(grads, spec.norm)

        return fim.private_run(step, {b: spec.params[b] for b in spec.bases}, model.get_params, spec.eps,
                               spec.max_iters, spec.norm)


def load_or_mine_rnnrbm_importance(path, train_songs, initial_params: dict, config, score: str | None = None,
                                   base: str = "W", n_jobs: int = -1, backend: str | None = None,
                                   log=print, **fim_options) -> np.ndarray:
    """P over the training chunks for W(0) `initial_params`: loaded from `path` after checking it
    belongs to them, or mined first (then saved there; an interrupted mining resumes).
    `fim_options` are `RnnRbmFimSpec`'s (eps, lr, max_iters, norm). An artefact mined with other run
    options (`run_options`: k, seed, floatX, batch size, sizes, r, dt) is refused."""
    return fim.load_or_mine(
        Path(path) if path else default_importance_path(config),
        lambda: RnnRbmFimSpec(train_songs, initial_params, config,
                              bases=(base, *[b for b in BASES if b != base]), **fim_options),
        len(make_chunks(train_songs, config.batch_size)), training_fingerprint(train_songs, config.batch_size),
        init_fingerprint(initial_params), score, base, n_jobs=n_jobs, backend=backend, log=log, unit="chunks",
        expected=run_options(config))
