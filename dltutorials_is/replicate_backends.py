"""The real models behind `python -m dltutorials_is.replicate`: LSTM on IMDB (fig4), RNN-RBM on
Nottingham (fig6), as `replicate.Backend`s.

Each backend is a small picklable description (data directory, floatX); the model is built inside
the worker process that trains it. Randomness: the run's `ctx.rng` (a RandomState(seed), restored on
resume) gives the initial parameters and the sampler's draws, as in the tutorials; the rest of a
run's state (parameters, MRG streams, the tutorial's song order) travels in the checkpoint.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from dltutorials_is.replicate import PAPER_SCORE, Backend, FimOutcome, RunFailed, RunSpec, subset_indices


MAX_CROSS_ENTROPY = 1e4  # nats per frame; ~40 is already extreme for 88 piano keys


def make_backend(figure: str, data_dir: Path | None = None, floatX: str = "float64") -> Backend:
    if figure == "fig6":
        return RnnRbmBackend(data_dir, floatX)
    if figure == "fig4":
        return LstmBackend(data_dir, floatX)
    raise ValueError(f"no backend for {figure!r}")


def _log_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _subset_key(spec: RunSpec) -> str:
    return "all" if spec.train_subset is None else f"{spec.subset_mode}{spec.train_subset}"


# ---------------------------------------------------------------------------------------------
# Figure 6: RNN-RBM on Nottingham


class RnnRbmBackend(Backend):
    """The RNN-RBM tutorial (dltutorials_is.rnnrbm_training) with one chunk of `batch_size` frames per
    SGD update. `--train-subset N` keeps N songs (all their chunks), so the tutorial's song-order
    sampler still applies. Metric `cost`: the mean per-frame cross-entropy (minus the tutorial's
    pseudo-log-likelihood monitor) over all training chunks, evaluated after each epoch without updates
    (the paper's footnote 6; its "objective function: cross-entropy"); `cd_cost` is the free-energy cost.
    IS arms also log `grad_var_ratio`, as in Figure 4, on `grad_variance_samples` fixed chunks.
    """

    figure = "fig6"

    def __init__(self, data_dir: Path | None = None, floatX: str = "float64", grad_variance_samples: int = 32):
        self.data_dir = data_dir
        self.floatX = floatX
        self.grad_variance_samples = grad_variance_samples

    def protocol_key(self, spec: RunSpec) -> str:
        return f"b{spec.batch_size}_{_subset_key(spec)}"

    def _songs(self, spec: RunSpec) -> list[np.ndarray]:
        from dltutorials_is.datasets.nottingham import load_nottingham

        key = ("nottingham", str(self.data_dir), self.floatX)
        if key not in _WORKER_CACHE:
            _WORKER_CACHE[key] = load_nottingham(self.data_dir, "train", dtype=self.floatX)
        songs = _WORKER_CACHE[key]
        return [songs[i] for i in subset_indices(len(songs), spec.train_subset, spec.subset_mode)]

    def _config(self, spec: RunSpec):
        from dltutorials_is.rnnrbm_training import RnnRbmConfig

        return RnnRbmConfig(lr=spec.step_size, batch_size=spec.batch_size, num_epochs=spec.epochs, seed=spec.seed,
                            floatX=self.floatX)

    def mine_importance(self, spec: RunSpec, workdir: Path) -> FimOutcome:
        import aesara

        from dltutorials_is import fim, fim_rnnrbm
        from dltutorials_is.graphs import rnnrbm as graph

        aesara.config.floatX = self.floatX
        config = self._config(spec)
        songs = self._songs(spec)
        rng = np.random.RandomState(spec.seed)  # the runs' draws: the MRG seed, then W(0)
        rng.randint(1 << 30)
        initial = graph.initial_params(config.n_visible, config.n_hidden, config.n_hidden_recurrent, rng,
                                       config.floatX)
        artefact_path = Path(workdir) / "fim_rnnrbm.pkl"
        fim_rnnrbm.load_or_mine_rnnrbm_importance(artefact_path, songs, initial, config, score=PAPER_SCORE,
                                                  base="W", n_jobs=1, log=_log_stderr)
        return _outcome_from_artefact(fim.read_artefact(artefact_path), n_songs=len(songs))

    def train(self, ctx) -> None:
        spec = ctx.spec
        with ctx.setup():
            import aesara

            from dltutorials_is.graphs import rnnrbm as graph
            from dltutorials_is.rnnrbm_training import SongOrderSampler, evaluation_seed, make_chunks, prepare_split

            aesara.config.floatX = self.floatX
            config = self._config(spec)
            songs = self._songs(spec)
            chunk_index = make_chunks(songs, spec.batch_size)
            chunks = prepare_split("train", songs, spec.batch_size, self.floatX).chunks
            model = _cached_rnnrbm(config)
            # The tutorial's draws from the run's RNG: the MRG seed, then W(0) (a resumed run replays
            # them on a throw-away RNG and then takes everything from its checkpoint).
            init_rng = ctx.rng if ctx.checkpoint is None else np.random.RandomState(spec.seed)
            mrg_seed = init_rng.randint(1 << 30)
            model.set_params(graph.initial_params(config.n_visible, config.n_hidden, config.n_hidden_recurrent,
                                                  init_rng, config.floatX))
            model.srng.seed(int(mrg_seed))
            model.eval_srng.seed(evaluation_seed(spec.seed))
            model.learning_rate.set_value(np.asarray(spec.step_size, dtype=config.floatX))
            sampler = ctx.make_sampler(len(chunks), batch_size=1, uniform=SongOrderSampler(chunk_index),
                                       presample_size=3)
        if ctx.checkpoint is not None:
            model.set_params(ctx.checkpoint["params"])
            model.set_random_states(ctx.checkpoint["mrg"])
            if ctx.checkpoint["song_order"] is not None:
                sampler.inner.set_state(ctx.checkpoint["song_order"])
        if hasattr(sampler, "bind"):
            def cross_entropy(indices):
                # A saturated visible unit makes a chunk's cross-entropy +inf (log 0): cap it, so that such
                # a chunk gets a large but finite probability; NaN still stops the run.
                values = np.array([-float(model.evaluate_function(chunks[i])[1]) for i in indices])
                return np.clip(values, 0.0, MAX_CROSS_ENTROPY)

            sampler.bind(cross_entropy)

        eval_chunks = [chunks[i] for i in subset_indices(len(chunks), spec.eval_subset, "random")]
        probe = _variance_probe(len(chunks), self.grad_variance_samples) if spec.uses_fim else None

        def metrics():
            with ctx.evaluation(len(eval_chunks)):
                values = np.array([model.evaluate_function(chunk) for chunk in eval_chunks], dtype="float64")
            cross_entropy = -values[:, 1]
            # The tutorial's monitor is +inf when a sigmoid saturates to exactly 0 or 1 in floating point
            # (log 0): such a chunk counts MAX_CROSS_ENTROPY (a spike, not a lost run); NaN still fails.
            saturated = int(np.sum(np.isinf(cross_entropy) | (cross_entropy > MAX_CROSS_ENTROPY)))
            result = {"cost": float(np.mean(np.clip(cross_entropy, 0.0, MAX_CROSS_ENTROPY))),
                      "cd_cost": float(np.mean(values[:, 0])), "saturated_chunks": saturated}
            if probe is not None:
                with ctx.evaluation(3 * len(probe)):  # one forward + backward per probed chunk
                    result["grad_var_ratio"] = _rnnrbm_variance_ratio(model, chunks, probe, ctx.fim["p"][ctx.fim_kind])
            return result

        if ctx.start_epoch == 0:
            ctx.end_epoch(0, metrics())
        floatX = self.floatX
        for epoch in range(ctx.start_epoch + 1, spec.epochs + 1):
            for indices, weights in sampler.epoch(ctx.rng):
                for index, weight in zip(indices, weights):
                    cost, _ = model.train_function(chunks[index], np.asarray(weight, dtype=floatX))
                    if not math.isfinite(float(cost)):
                        raise RunFailed(f"epoch {epoch}: the cost became {float(cost)} (diverged)")
            song_order = sampler.inner.get_state() if isinstance(sampler.inner, SongOrderSampler) else None
            ctx.end_epoch(epoch, metrics(), checkpoint={"params": model.get_params(), "mrg": model.random_states(),
                                                        "song_order": song_order})


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
    dropout, batch 16, no weight decay). IS arms also log `grad_var_ratio` after each epoch: the
    trace of the one-sample gradient variance under their P over that of uniform sampling, on
    `grad_variance_samples` fixed training samples (dltutorials_is.variance; evaluation, not charged).
    """

    figure = "fig4"
    DATA_SEED = 123  # the tutorial's SEED: the same splits for every run
    OPTIONS = dict(dim_proj=128, n_words=10000, maxlen=100, valid_batch_size=64, use_dropout=True, decay_c=0.0,
                   test_size=-1, protocol="paper")

    def __init__(self, data_dir: Path | None = None, floatX: str = "float64", grad_variance_samples: int = 32):
        self.data_dir = data_dir
        self.floatX = floatX
        self.grad_variance_samples = grad_variance_samples

    def protocol_key(self, spec: RunSpec) -> str:
        if spec.seed <= 0:
            raise ValueError(f"LSTM seeds must be positive (they also seed the MRG dropout stream), got {spec.seed}")
        return _subset_key(spec)

    def _splits(self, spec: RunSpec):
        from dltutorials_is.datasets.imdb import imdb_paths, load_splits

        o = self.OPTIONS
        key = ("imdb", str(self.data_dir))
        if key not in _WORKER_CACHE:
            _WORKER_CACHE[key] = load_splits(o["protocol"], imdb_paths(self.data_dir)[0], o["n_words"], o["maxlen"],
                                             o["test_size"], np.random.RandomState(self.DATA_SEED))
        train, valid, test = _WORKER_CACHE[key]
        keep = subset_indices(len(train[0]), spec.train_subset, spec.subset_mode)
        train = ([train[0][i] for i in keep], [train[1][i] for i in keep])
        return train, valid, test

    def _options(self, spec: RunSpec, train) -> dict:
        return dict(self.OPTIONS, batch_size=spec.batch_size, lrate=spec.step_size, optimizer="sgd",
                    ydim=int(np.max(train[1])) + 1)

    def mine_importance(self, spec: RunSpec, workdir: Path) -> FimOutcome:
        import aesara

        from dltutorials_is import fim, fim_lstm
        from dltutorials_is.graphs.lstm import init_params

        aesara.config.floatX = self.floatX
        train, _, _ = self._splits(spec)
        options = self._options(spec, train)
        initial = init_params(options, np.random.RandomState(spec.seed))  # the runs' W(0): first draws of ctx.rng
        artefact_path = Path(workdir) / "fim_lstm.pkl"
        fim_lstm.load_or_mine_lstm_importance(artefact_path, train, initial, dict(options, seed=spec.seed),
                                              score=PAPER_SCORE, base="Wc", n_jobs=1, log=_log_stderr)
        return _outcome_from_artefact(fim.read_artefact(artefact_path), n_train=len(train[0]))

    def train(self, ctx) -> None:
        spec = ctx.spec
        with ctx.setup():
            import aesara

            from dltutorials_is.datasets.imdb import prepare_data
            from dltutorials_is.graphs.lstm import floatx, get_values, init_params, set_values
            from dltutorials_is.training import pred_error, sequential_batches

            aesara.config.floatX = self.floatX  # floatx() and init_params() read the global setting

            train, heldout, test = self._splits(spec)
            options = self._options(spec, train)
            compiled = _cached_lstm(options, self.floatX)
            tparams, trng, model = compiled.tparams, compiled.trng, compiled.model
            f_grad_shared, f_update, f_pred, f_losses = compiled.f_grad_shared, compiled.f_update, compiled.f_pred, \
                compiled.f_losses
            # W(0): the first draws of the run's RNG, as in train_lstm (a resumed run replays them on a
            # throw-away RNG, then loads its checkpoint). The dropout stream restarts from the run seed.
            set_values(tparams, init_params(options, ctx.rng if ctx.checkpoint is None else
                                            np.random.RandomState(spec.seed)))
            trng.seed(spec.seed)
            sampler = ctx.make_sampler(len(train[0]))
        if ctx.checkpoint is not None:
            set_values(tparams, ctx.checkpoint["params"])
            _set_mrg_states(trng, ctx.checkpoint["mrg"])

        def batch(indices):
            return prepare_data([train[0][i] for i in indices], [train[1][i] for i in indices])

        if hasattr(sampler, "bind"):
            def losses(indices):
                # The tutorial's loss is −log(p_y + 1e-8), about −1e-8 for a confidently right review:
                # score such a review 0 (NaN and inf still stop the run).
                model.use_noise.set_value(floatx(0.0))
                x, mask, y = batch(indices)
                return np.maximum(np.asarray(f_losses(x, mask, y), dtype="float64"), 0.0)

            sampler.bind(losses)

        train_eval, test, heldout = (_eval_part(split, spec) for split in (train, test, heldout))
        train_batches = sequential_batches(len(train_eval[0]), options["valid_batch_size"])
        test_batches = sequential_batches(len(test[0]), options["valid_batch_size"])
        heldout_batches = sequential_batches(len(heldout[0]), options["valid_batch_size"])
        probe = _variance_probe(len(train[0]), self.grad_variance_samples) if spec.uses_fim else None

        def metrics():
            model.use_noise.set_value(floatx(0.0))
            with ctx.evaluation(len(train_eval[0]) + len(test[0]) + len(heldout[0])):
                values = {"train_err": pred_error(f_pred, train_eval, train_batches),
                          "valid_err": pred_error(f_pred, test, test_batches),
                          "heldout_err": pred_error(f_pred, heldout, heldout_batches),
                          # what always answering the majority class scores: has the model learned more?
                          "train_err_constant": _constant_error(train_eval[1]),
                          "valid_err_constant": _constant_error(test[1])}
            if probe is not None:
                with ctx.evaluation(3 * len(probe)):  # one forward + backward per probed sample
                    values["grad_var_ratio"] = _lstm_variance_ratio(
                        probe, ctx.fim["p"][ctx.fim_kind], batch, f_grad_shared, tparams, trng, floatx)
            return values

        if ctx.start_epoch == 0:
            ctx.end_epoch(0, metrics())
        for epoch in range(ctx.start_epoch + 1, spec.epochs + 1):
            for indices, weights in sampler.epoch(ctx.rng):
                model.use_noise.set_value(floatx(1.0))
                x, mask, y = batch(indices)
                cost = f_grad_shared(x, mask, y, floatx(weights))
                if not np.isfinite(cost):
                    raise RunFailed(f"epoch {epoch}: the cost became {float(cost)} (diverged); that update was "
                                    "not applied")
                f_update(spec.step_size)
            ctx.end_epoch(epoch, metrics(), checkpoint={"params": get_values(tparams), "mrg": _mrg_states(trng)})


def _constant_error(labels) -> float:
    """Error of the best constant classifier (always the majority label)."""
    counts = np.bincount(np.asarray(labels, dtype="int64"))
    return float(1.0 - counts.max() / counts.sum())


def _eval_part(split, spec: RunSpec):
    """The part of an evaluation set a run's metrics use (all, or `eval_subset` fixed random samples)."""
    keep = subset_indices(len(split[0]), spec.eval_subset, "random")
    return [split[0][i] for i in keep], [split[1][i] for i in keep]


class _CompiledLstm:
    """The LSTM's graphs and compiled functions for one set of model options (not lr or batch size)."""

    def __init__(self, options: dict, floatX: str):
        import aesara
        import aesara.tensor as at

        from dltutorials_is.graphs.lstm import build_model, init_params, random_stream, to_shared
        from dltutorials_is.optimisers import get_optimiser

        with aesara.config.change_flags(floatX=floatX):
            self.tparams = to_shared(init_params(options, np.random.RandomState(1)))  # values reset per run
            self.trng = random_stream(1)
            self.model = build_model(self.tparams, options, self.trng)
            grads = at.grad(self.model.cost, wrt=list(self.tparams.values()))
            lr = at.scalar(name="lr")
            self.f_grad_shared, self.f_update = get_optimiser("sgd")(lr, self.tparams, grads, self.model.inputs,
                                                                     self.model.cost)
            self.f_pred = self.model.f_pred
            m = self.model
            self.f_losses = aesara.function([m.x, m.mask, m.y], m.per_sample_loss, name="f_losses")


#: Per worker process: data sets and compiled models, reused by every run the worker trains, so a
#: grid compiles each graph once per worker instead of once per run. Runs reset every value.
_WORKER_CACHE: dict = {}


def _cached_lstm(options: dict, floatX: str) -> _CompiledLstm:
    key = ("lstm", floatX, *(options[k] for k in ("dim_proj", "n_words", "ydim", "use_dropout", "decay_c")))
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = _CompiledLstm(options, floatX)
    return _WORKER_CACHE[key]


def _cached_rnnrbm(config):
    """An RnnRbmModel with compiled functions for the config's sizes; parameters and streams are reset
    by the caller."""
    import aesara

    from dltutorials_is.rnnrbm_training import RnnRbmModel

    key = ("rnnrbm", config.floatX, config.n_hidden, config.n_hidden_recurrent, config.k, config.r)
    if key not in _WORKER_CACHE:
        with aesara.config.change_flags(floatX=config.floatX):
            model = RnnRbmModel(config, np.random.RandomState(1))
            model.train_function, model.evaluate_function  # compile now
        _WORKER_CACHE[key] = model
    return _WORKER_CACHE[key]


def _mrg_states(srng) -> list:
    return [state.get_value() for state, *_ in srng.state_updates]


def _set_mrg_states(srng, states: list) -> None:
    for (state, *_), value in zip(srng.state_updates, states):
        state.set_value(value)


def _variance_probe(n_train: int, size: int) -> np.ndarray | None:
    """Fixed training samples (independent of the run) on which the gradient variance is measured."""
    if size <= 0:
        return None
    return np.sort(np.random.RandomState(1).choice(n_train, min(size, n_train), replace=False))


def _lstm_variance_ratio(probe, p, batch, f_grad_shared, tparams, trng, floatx) -> float:
    """tr Var(IS one-sample gradient) / tr Var(uniform), exactly over `probe`, at the current parameters.

    f_grad_shared stores the gradient in the optimiser's shared variables without moving the
    parameters; dropout is off, and the dropout stream is put back so training draws are unchanged.
    """
    updated = {i.variable.name: i.variable for i in f_grad_shared.maker.inputs if i.update is not None}
    stores = {name: updated[f"{name}_grad"] for name in tparams}  # the optimiser's gradient buffers
    saved = _mrg_states(trng)

    def gradient(i):
        x, mask, y = batch([i])
        f_grad_shared(x, mask, y, floatx([1.0]))
        return {name: store.get_value() for name, store in stores.items()}

    ratio = _whole_variance_ratio(gradient, probe, p)
    _set_mrg_states(trng, saved)
    return ratio


def _rnnrbm_variance_ratio(model, chunks, probe, p) -> float:
    """tr Var(IS one-chunk gradient) / tr Var(uniform), exactly over `probe`, at the current parameters.

    The CD-k gradient is itself random (its Gibbs chain): every probed chunk starts its chain from the
    same evaluation-stream state (common random numbers), so the ratio measures the variance that
    comes from *which* chunk is drawn. The stream is put back afterwards, so the run is unchanged.
    """
    from dltutorials_is.graphs.rnnrbm import PARAM_NAMES

    saved = model.random_states()

    def gradient(i):
        model.set_random_states(saved)
        return dict(zip(PARAM_NAMES, model.gradient_function(chunks[i])))

    ratio = _whole_variance_ratio(gradient, probe, p)
    model.set_random_states(saved)
    return ratio


def _whole_variance_ratio(gradient, probe, p) -> float:
    """The variance ratio (P over uniform) of the whole parameter vector, over the probed samples."""
    from dltutorials_is.variance import WHOLE, gradient_variance

    return next(r.ratio for r in gradient_variance(gradient, probe, p) if r.block == WHOLE)


def _outcome_from_artefact(art: dict, **info) -> FimOutcome:
    base = art["default_base"]
    iterations = np.asarray(art["iterations"])
    return FimOutcome(
        p={kind: np.asarray(p) for kind, p in art["p"][base].items()},
        private_steps=int(iterations.sum()),
        info={"base": base, "eps": art["eps"], "n_train": int(art["n"]),
              "converged": int(np.sum(art["converged"])), "median_T_i": float(np.median(iterations)),
              "compute_seconds": float(art["timing"]["compute_seconds"]), **info},
    )
