"""The real models behind `python -m dltutorials_is.replicate`: LSTM on IMDB (fig4), RNN-RBM on
Nottingham (fig6), as `grid.Backend`s. Each says which data, which model and which metrics; the grid
trains them with the one training loop.

Each backend is a small picklable description (data directory, floatX); data and compiled models
are built inside the worker process and cached there (`_WORKER_CACHE`), so a worker compiles each
graph once for all the runs it trains. Randomness: the run's RandomState(seed) gives W(0) and then
the sampler's draws, as in the tutorials; the rest of a run's state (parameters, random streams, the
sampler's) travels in the grid's checkpoint.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import aesara
from scipy.stats import mannwhitneyu

from dltutorials_is.datasets.chunks import chunk_arrays, make_chunks
from dltutorials_is.datasets.download import DataError
from dltutorials_is.datasets.imdb import PREPARE_COMMAND as PREPARE_IMDB, imdb_paths, load_splits
from dltutorials_is.datasets.nottingham import load_nottingham, split_files
from dltutorials_is.fim import driver as fim
from dltutorials_is.fim.lstm import load_or_mine_lstm_importance
from dltutorials_is.fim.rnnrbm import load_or_mine_rnnrbm_importance
from dltutorials_is.graphs.lstm import init_params
from dltutorials_is.models.base import set_stream_states, stream_states
from dltutorials_is.models.lstm import GRAPH_OPTIONS, LstmModel, error_rate
from dltutorials_is.models.rnnrbm import RnnRbmConfig, RnnRbmModel, initial_values
from dltutorials_is.replicate.grid import Backend, Experiment, FimOutcome, RunContext
from dltutorials_is.replicate.specs import PAPER_SCORE, RunSpec, subset_indices
from dltutorials_is.sampling.samplers import SongOrderSampler
from dltutorials_is.sampling.variance import WHOLE, gradient_variance
from dltutorials_is.tutorials.lstm import sequential_batches

#: Per worker process: data sets and compiled models, reused by every run the worker trains, so a
#: grid compiles each graph once per worker instead of once per run. Runs reset every value.
_WORKER_CACHE: dict = {}


def make_backend(figure: str, data_dir: Path | None = None, floatX: str = "float64", on_bad: str = "error") -> Backend:
    """`on_bad` (fig6 only): what loading Nottingham does with a MIDI file that does not read."""
    if figure == "fig6":
        return RnnRbmBackend(data_dir, floatX, on_bad=on_bad)
    if figure == "fig4":
        return LstmBackend(data_dir, floatX)
    raise ValueError(f"no backend for {figure!r}")


def _cached(key, make):
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = make()
    return _WORKER_CACHE[key]


def _log_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _subset_key(spec: RunSpec) -> str:
    return "all" if spec.train_subset is None else f"{spec.subset_mode}{spec.train_subset}"


def _variance_probe(n_train: int, size: int) -> np.ndarray | None:
    """Fixed training samples (independent of the run) on which the gradient variance is measured."""
    if size <= 0:
        return None
    return np.sort(np.random.RandomState(1).choice(n_train, min(size, n_train), replace=False))


def _variance_ratio(model, probe, p) -> float:
    """tr Var(IS one-sample gradient) / tr Var(uniform) of the whole parameter vector, exactly over
    `probe`, at the current parameters (`model.gradient` leaves the run's state as it was)."""
    return next(r.ratio for r in gradient_variance(model.gradient, probe, p) if r.block == WHOLE)


def _outcome_from_artefact(art: dict, **info) -> FimOutcome:
    base = art["default_base"]
    iterations = np.asarray(art["iterations"])
    return FimOutcome(
        p={kind: np.asarray(p) for kind, p in art["p"][base].items()},
        private_steps=int(iterations.sum()),
        info={"base": base, "eps": art["eps"], "n_train": int(art["n"]),
              "converged": int(np.sum(art["converged"])), "median_T_i": float(np.median(iterations)),
              "compute_seconds": float(art["timing"]["compute_seconds"]),
              "wall_seconds_last_session": float(art["timing"]["wall_seconds_last_session"]), **info},
    )


# ---------------------------------------------------------------------------------------------
# Figure 6: RNN-RBM on Nottingham


class RnnRbmBackend(Backend):
    """The RNN-RBM tutorial's model with one chunk of `batch_size` frames per SGD update.
    `--train-subset N` keeps N songs (all their chunks), so the tutorial's song-order sampler still
    applies. Metric `cost`: the mean per-frame cross-entropy (minus the tutorial's pseudo-log-likelihood
    monitor, each chunk's capped at `MAX_CROSS_ENTROPY`) over the training chunks, evaluated after each
    epoch without updates (the paper's footnote 6; its "objective function: cross-entropy"); `cd_cost`
    is the free-energy cost. IS arms also log `grad_var_ratio`, as in Figure 4, on
    `grad_variance_samples` fixed chunks (every probed chunk's Gibbs chain draws the same noise, so the
    ratio measures which chunk is drawn).
    """

    figure = "fig6"

    def __init__(self, data_dir: Path | None = None, floatX: str = "float64", grad_variance_samples: int = 32,
                 on_bad: str = "error"):
        self.data_dir = data_dir
        self.floatX = floatX
        self.grad_variance_samples = grad_variance_samples
        self.on_bad = on_bad

    def check_data(self) -> None:
        split_files(self.data_dir, "train")

    def protocol_key(self, spec: RunSpec) -> str:
        return f"b{spec.batch_size}_{_subset_key(spec)}"

    def songs(self, spec: RunSpec) -> list[np.ndarray]:
        """The run's training songs (cached per worker)."""
        on_bad = getattr(self, "on_bad", "error")
        songs = _cached(("nottingham", str(self.data_dir), self.floatX, on_bad),
                        lambda: load_nottingham(self.data_dir, "train", on_bad=on_bad, dtype=self.floatX))
        return [songs[i] for i in subset_indices(len(songs), spec.train_subset, spec.subset_mode)]

    def config(self, spec: RunSpec) -> RnnRbmConfig:
        return RnnRbmConfig(lr=spec.step_size, batch_size=spec.batch_size, num_epochs=spec.epochs, seed=spec.seed,
                            floatX=self.floatX)

    def mine_importance(self, spec: RunSpec, workdir: Path, n_jobs: int = 1,
                        parallel: str | None = None) -> FimOutcome:
        aesara.config.floatX = self.floatX
        config = self.config(spec)
        songs = self.songs(spec)
        artefact_path = Path(workdir) / "fim_rnnrbm.pkl"
        load_or_mine_rnnrbm_importance(artefact_path, songs, initial_values(config), config, score=PAPER_SCORE,
                                       base="W", n_jobs=n_jobs, backend=parallel, log=_log_stderr)
        return _outcome_from_artefact(fim.read_artefact(artefact_path), n_songs=len(songs))

    def _model(self, config: RnnRbmConfig) -> RnnRbmModel:
        """A compiled RnnRbmModel for the config's sizes (its values are reset per run)."""

        def build():
            model = RnnRbmModel(replace(config, seed=1), np.random.RandomState(1))
            model.train_function, model.evaluate_function  # compile now
            return model

        return _cached(("rnnrbm", config.floatX, config.n_hidden, config.n_hidden_recurrent, config.k, config.r), build)

    def prepare(self, spec: RunSpec, rng: np.random.RandomState) -> Experiment:
        aesara.config.floatX = self.floatX
        config = self.config(spec)
        songs = self.songs(spec)
        model = self._model(config)
        model.use_data(chunk_arrays(songs, spec.batch_size, self.floatX))
        model.reset(spec.seed, rng)  # the tutorial's draws: the MRG seed, then W(0)
        model.set_step_size(spec.step_size)
        eval_chunks = [model.chunks[i] for i in subset_indices(model.n_train, spec.eval_subset, "random")]
        probe = _variance_probe(model.n_train, self.grad_variance_samples) if spec.uses_fim else None

        def metrics(ctx: RunContext) -> dict:
            with ctx.evaluation(len(eval_chunks)):
                values = model.evaluate(eval_chunks)
            result = {"cost": values["cross_entropy"], "cd_cost": values["cost"],
                      "saturated_chunks": values["saturated_chunks"]}
            if probe is not None:
                with ctx.evaluation(3 * len(probe)):  # one forward + backward per probed chunk
                    result["grad_var_ratio"] = _variance_ratio(model, probe, ctx.importance)
            return result

        return Experiment(model, batch_size=1, metrics=metrics, uniform=SongOrderSampler(make_chunks(songs, spec.batch_size)),
                          online_options={"presample_size": 3})


# ---------------------------------------------------------------------------------------------
# Figure 4: LSTM on IMDB


class LstmBackend(Backend):
    """The LSTM tutorial with plain SGD on the paper's protocol (Wang et al. footnote 4: train on the
    25,000 reviews of the official test split, test on the tutorial's ~1,998 short training reviews).

    Figure 4's "validation error" is the error on those ~1,998 reviews (the paper calls the original's
    evaluation set "validation"); the tutorial's ~105 held-out reviews give `heldout_err`. The data
    split uses the tutorial's RandomState(123) for every run, so all seeds see the same sets; the run
    seed gives W(0), the minibatch draws and the dropout masks. `--train-subset N` keeps N of the
    25,000 training reviews. Everything else is the tutorial's default (dim 128, 10,000 words,
    dropout, batch 16, no weight decay). Evaluation puts the dropout stream back afterwards, so what
    is measured (and on how many reviews) does not change the run's masks. IS arms also log
    `grad_var_ratio` after each epoch: the trace of the one-sample gradient variance under their P
    over that of uniform sampling, on `grad_variance_samples` fixed training samples
    (`sampling.variance`; evaluation, not charged).
    """

    figure = "fig4"
    DATA_SEED = 123  # the tutorial's SEED: the same splits for every run
    OPTIONS = dict(dim_proj=128, n_words=10000, maxlen=100, valid_batch_size=64, use_dropout=True, decay_c=0.0,
                   test_size=-1, protocol="paper")

    def __init__(self, data_dir: Path | None = None, floatX: str = "float64", grad_variance_samples: int = 32):
        self.data_dir = data_dir
        self.floatX = floatX
        self.grad_variance_samples = grad_variance_samples

    def check_data(self) -> None:
        path = imdb_paths(self.data_dir)[0]
        if not path.is_file():
            raise DataError(f"IMDB data not found at {path} — build it with `{PREPARE_IMDB} --data-dir {path.parent}`")

    def protocol_key(self, spec: RunSpec) -> str:
        if spec.seed <= 0:
            raise ValueError(f"LSTM seeds must be positive (they also seed the MRG dropout stream), got {spec.seed}")
        return _subset_key(spec)

    def splits(self, spec: RunSpec):
        """(train, held-out, test) of the run (cached per worker; `train` is the run's subset)."""
        o = self.OPTIONS
        train, heldout, test = _cached(
            ("imdb", str(self.data_dir), tuple(sorted(o.items()))),
            lambda: load_splits(o["protocol"], imdb_paths(self.data_dir)[0], o["n_words"], o["maxlen"],
                                o["test_size"], np.random.RandomState(self.DATA_SEED)))
        keep = subset_indices(len(train[0]), spec.train_subset, spec.subset_mode)
        return ([train[0][i] for i in keep], [train[1][i] for i in keep]), heldout, test

    def options(self, spec: RunSpec, train) -> dict:
        return dict(self.OPTIONS, batch_size=spec.batch_size, lrate=spec.step_size, optimizer="sgd",
                    ydim=int(np.max(train[1])) + 1, seed=spec.seed)

    def mine_importance(self, spec: RunSpec, workdir: Path, n_jobs: int = 1,
                        parallel: str | None = None) -> FimOutcome:
        aesara.config.floatX = self.floatX
        train, _, _ = self.splits(spec)
        options = self.options(spec, train)
        initial = init_params(options, np.random.RandomState(spec.seed))  # the runs' W(0): first draws of their RNG
        artefact_path = Path(workdir) / "fim_lstm.pkl"
        load_or_mine_lstm_importance(artefact_path, train, initial, options, score=PAPER_SCORE, base="Wc", n_jobs=n_jobs,
                                     backend=parallel, log=_log_stderr)
        return _outcome_from_artefact(fim.read_artefact(artefact_path), n_train=len(train[0]))

    def _model(self, options: dict, train) -> LstmModel:
        def build():
            model = LstmModel(options, train, seed=1)
            model.optimiser, model.f_pred  # compile now
            return model

        return _cached(("lstm", self.floatX, *(options.get(k) for k in GRAPH_OPTIONS)), build)

    def prepare(self, spec: RunSpec, rng: np.random.RandomState) -> Experiment:
        aesara.config.floatX = self.floatX  # init_params() reads the global setting
        train, heldout, test = self.splits(spec)
        options = self.options(spec, train)
        model = self._model(options, train)
        model.use_data(train)
        model.reset(spec.seed, rng)
        model.set_step_size(spec.step_size)
        evaluated = {name: _eval_part(split, spec, options["valid_batch_size"])
                     for name, split in (("train_err", train), ("valid_err", test), ("heldout_err", heldout))}
        n_evaluated = sum(len(split[0]) for split, _ in evaluated.values())
        probe = _variance_probe(len(train[0]), self.grad_variance_samples) if spec.uses_fim else None

        def metrics(ctx: RunContext) -> dict:
            saved = stream_states(model.trng)
            with ctx.evaluation(n_evaluated):
                values = {}
                for name, (split, batches) in evaluated.items():
                    values.update(_classification_metrics(model, name, split, batches))
            # what always answering the majority class scores: has the model learned more?
            values["train_err_constant"] = _constant_error(evaluated["train_err"][0][1])
            values["valid_err_constant"] = _constant_error(evaluated["valid_err"][0][1])
            set_stream_states(model.trng, saved)
            if probe is not None:
                with ctx.evaluation(3 * len(probe)):  # one forward + backward per probed sample
                    values["grad_var_ratio"] = _variance_ratio(model, probe, ctx.importance)
            return values

        return Experiment(model, batch_size=spec.batch_size, metrics=metrics)


def _eval_part(split, spec: RunSpec, batch_size: int):
    """The part of an evaluation set a run's metrics use (all, or `eval_subset` fixed random samples),
    with its minibatches."""
    keep = subset_indices(len(split[0]), spec.eval_subset, "random")
    part = [split[0][i] for i in keep], [split[1][i] for i in keep]
    return part, sequential_batches(len(keep), batch_size)


def _classification_metrics(model: LstmModel, name: str, split, batches) -> dict:
    """`name` (the tutorial's error rate) and `<set>_auc`, from one forward pass over the set.

    The AUC (probability that a random positive review scores above a random negative one) sees
    learning that the error rate cannot: on SGD's plateau every review gets the majority class, while
    the reviews' ranking may already be improving (no AUC when the set holds one class only)."""
    probabilities = model.probabilities(split, batches)
    labels = np.asarray(split[1])[np.concatenate(batches)]
    values = {name: error_rate(int((probabilities.argmax(axis=1) == labels).sum()), len(labels))}
    if probabilities.shape[1] == 2 and 0 < labels.sum() < len(labels):
        positive, negative = probabilities[labels == 1, 1], probabilities[labels == 0, 1]
        values[name.replace("_err", "_auc")] = float(mannwhitneyu(positive, negative).statistic
                                                     / (len(positive) * len(negative)))
    return values


def _constant_error(labels) -> float:
    """Error of the best constant classifier (always the majority label)."""
    counts = np.bincount(np.asarray(labels, dtype="int64"))
    return float(1.0 - counts.max() / counts.sum())
