"""Training the LSTM sentiment classifier: the tutorial's `train_lstm`, with pluggable samplers.

With the uniform sampler, the same seed and float64 this prints the same progress lines, with the
same numbers, as the original `lstm.py` run under Aesara (`tools/diff_against_original.py`
checks it). Random numbers follow the original: one `np.random.RandomState(seed)` gives, in order,
the validation split, the test subsample, the initial parameters and the per-epoch minibatch
draws; `MRG_RandomStream(seed)` gives the dropout masks.

The deliberate differences from the original (its Python 3 bugs, reloading, NaN handling) are
listed under "LSTM" in DEVIATIONS.md.
"""
from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from dltutorials_is.datasets.imdb import imdb_paths, load_splits
from dltutorials_is.graphs.lstm import load_params
from dltutorials_is.io import non_finite, require_finite, write_atomically
from dltutorials_is.loop import Hook, Progress, TrainingDiverged, fit
from dltutorials_is.models.lstm import LstmModel
from dltutorials_is.sampling.samplers import cut_minibatches, format_p_summary, make_sampler, uniform_p_warning

#: What `train_lstm` returns for a run whose cost became NaN or infinite (the original's sentinel).
DIVERGED = (1.0, 1.0, 1.0)

Split = tuple[list, list]
#: `p` may be given late: called as `p(train, initial_params, model_options)` once both exist. It returns
#: P, or `(P, others)` with `others` the P of other score kinds ({kind: P}) that the warning for a uniform P
#: names (`sampling.samplers.uniform_p_warning`).
ImportanceProvider = Callable[[Split, dict, dict], "np.ndarray | tuple[np.ndarray, dict]"]


def say(*parts) -> None:
    """Print a progress line to stdout without breaking a progress bar on stderr."""
    tqdm.write(" ".join(str(part) for part in parts), file=sys.stdout)


def sequential_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """All samples in order, in minibatches (the original's `get_minibatches_idx` without shuffle)."""
    return cut_minibatches(np.arange(n, dtype="int32"), batch_size)


def visits_each_once(batches: Sequence[np.ndarray], n: int) -> bool:
    indices = np.concatenate(batches) if len(batches) else np.array([], dtype="int32")
    return len(indices) == n and np.array_equal(np.sort(indices), np.arange(n))


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def model_path(saveto: str) -> Path:
    """Where `np.savez(saveto)` writes (it appends `.npz` when missing)."""
    return Path(saveto if str(saveto).endswith(".npz") else f"{saveto}.npz")


def options_path(saveto: str) -> Path:
    return Path(f"{saveto}.pkl")


def save_model(saveto: str, params: dict, history_errs: list, model_options: dict, **results) -> None:
    """The parameters and validation history in `saveto` (.npz), the options in `saveto.pkl`.

    Parameters holding NaN or inf are never written: `io.NotSaved` is raised and both files keep what
    they held."""
    require_finite(params, model_path(saveto))
    write_atomically(model_path(saveto), lambda f: np.savez(f, history_errs=history_errs, **results, **params))
    write_atomically(options_path(saveto), lambda f: pickle.dump(model_options, f, -1))


# ---------------------------------------------------------------------------------------------
# The tutorial's loop, as hooks of the one loop
# ---------------------------------------------------------------------------------------------

class TutorialLstmHooks(Hook):
    """What the original `train_lstm` does around each update: display the cost every `dispFreq`
    updates, save every `saveFreq`, validate every `validFreq` (keeping the best parameters) and stop
    early after `patience` validations without progress; "Seen N samples" after each epoch."""

    def __init__(self, options: dict, train: Split, valid: Split, test: Split):
        self.options = options
        self.train, self.valid, self.test = train, valid, test
        self.kf_valid = sequential_batches(len(valid[0]), options["valid_batch_size"])
        self.kf_test = sequential_batches(len(test[0]), options["valid_batch_size"])
        # The original's `len(train) // batch_size`; at least 1, so a training set smaller than one
        # minibatch validates and saves once per epoch instead of dividing by zero.
        updates_per_epoch = max(1, len(train[0]) // options["batch_size"])
        self.valid_freq = updates_per_epoch if options["validFreq"] == -1 else options["validFreq"]
        self.save_freq = updates_per_epoch if options["saveFreq"] == -1 else options["saveFreq"]
        self.history_errs: list = []
        self.best_p = None
        self.bad_counter = 0
        self.train_batches: list = []

    def checkpoint(self, model: LstmModel) -> dict:
        return self.best_p if self.best_p is not None else model.get_params()

    def start_epoch(self, model, progress: Progress) -> None:
        # The training error is measured over the epoch's own minibatches, as the original does,
        # unless they do not visit every sample once (sampling with replacement or by importance).
        self.train_batches = [index for index, _ in progress.batches]
        if not visits_each_once(self.train_batches, len(self.train[0])):
            self.train_batches = sequential_batches(len(self.train[0]), self.options["batch_size"])

    def diverged(self, model, progress: Progress) -> None:
        step = progress.step
        if np.isfinite(step.cost):
            say(f"bad parameters detected: at epoch {progress.epoch}, update {progress.updates} (cost {step.cost}) "
                f"made {', '.join(non_finite(model.get_params()))} NaN or infinite; that update could not be undone.")
        else:
            say("bad cost detected: ", step.cost)
            say(f"at epoch {progress.epoch}, update {progress.updates}; that update was not applied.")
        saveto = self.options["saveto"]
        if not saveto:
            return
        # The last good model is the best validated one. The current parameters are not: they have just
        # given a NaN/inf cost, or become NaN/inf; without a validation there is nothing known good to save,
        # and the file keeps what it held (this run's last periodic save, or an earlier run's model).
        if self.best_p is None:
            say(f"Not saved: no validation has measured a model of this run yet, and the current parameters "
                f"diverged; {model_path(saveto)} keeps what it held.")
            return
        save_model(saveto, self.best_p, self.history_errs, self.options)
        say(f"Saved the last good model (the best validated parameters) to {model_path(saveto)}")

    def after_update(self, model, progress: Progress) -> None:
        uidx, saveto = progress.updates, self.options["saveto"]
        if uidx % self.options["dispFreq"] == 0:
            say("Epoch ", progress.epoch, "Update ", uidx, "Cost ", progress.step.cost)

        if saveto and uidx % self.save_freq == 0:
            say("Saving...")
            save_model(saveto, self.checkpoint(model), self.history_errs, self.options)
            say("Done")

        if uidx % self.valid_freq == 0:
            train_err, valid_err, test_err = self.errors(model, self.train_batches)
            self.history_errs.append([valid_err, test_err])
            if self.best_p is None or valid_err <= np.array(self.history_errs)[:, 0].min():
                self.best_p = model.get_params()
                self.bad_counter = 0

            say("Train ", train_err, "Valid ", valid_err, "Test ", test_err)

            patience = self.options["patience"]
            if len(self.history_errs) > patience and valid_err >= np.array(self.history_errs)[:-patience, 0].min():
                self.bad_counter += 1
                if self.bad_counter > patience:
                    say("Early Stop!")
                    progress.stop = True

    def end_epoch(self, model, progress: Progress) -> None:
        say("Seen %d samples" % progress.samples)

    def errors(self, model: LstmModel, train_batches) -> tuple[float, float, float]:
        return (model.error(self.train, train_batches), model.error(self.valid, self.kf_valid),
                model.error(self.test, self.kf_test))


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def train_lstm(
    dim_proj=128,  # word embedding dimension and number of LSTM hidden units
    patience=10,  # validations without progress before early stopping
    max_epochs=5000,  # the maximum number of epochs to run
    dispFreq=10,  # print the training cost every N updates
    decay_c=0.0,  # weight decay on the classifier weights U
    lrate=0.0001,  # learning rate for sgd (adadelta and rmsprop ignore it)
    n_words=10000,  # vocabulary size
    optimizer="adadelta",  # sgd, adadelta or rmsprop
    saveto="lstm_model.npz",  # the best model is saved there ('' or None: never save)
    validFreq=370,  # compute the validation error every N updates (-1: once per epoch)
    saveFreq=1110,  # save the parameters every N updates (-1: once per epoch)
    maxlen=100,  # training reviews this long or longer are left out
    batch_size=16,  # the batch size during training
    valid_batch_size=64,  # the batch size for the validation and test sets
    noise_std=0.0,  # unused, as in the original
    use_dropout=True,  # dropout on the pooled LSTM output
    reload_model=None,  # path of a saved .npz model to start from
    test_size=-1,  # if > 0, evaluate on a random subset of this many test reviews
    protocol="tutorial",  # "tutorial" or "paper" (train and test swapped, Wang et al.)
    data_dir=None,  # folder holding imdb.pkl (default: the project's data folder)
    seed=123,  # seeds the numpy RandomState and the dropout MRG stream (the original's SEED)
    data_seed=None,  # if set, the validation split and test subsample come from RandomState(data_seed)
    # and W(0) and the shuffles from a fresh RandomState(seed), so runs of any seed see the same data
    # (the replication's convention); None: all from one RandomState(seed), as the original
    sampler="uniform",  # uniform, replacement or importance (see dltutorials_is.sampling.samplers)
    p=None,  # importance sampling probabilities, or an ImportanceProvider
    graph="fast",  # fast: the tutorial's function over packed minibatches (same numbers to rounding, faster);
    # tutorial: the original's scan graph over padded minibatches
):
    """Train the LSTM and return `(train_err, valid_err, test_err)` of the best model.

    Returns `DIVERGED` if the cost becomes NaN or infinite; the update that produced it is not
    applied and the last good parameters are saved to `saveto` first.
    """
    model_options = {name: value for name, value in locals().items() if name != "p"}
    say("model options", model_options)
    rng = np.random.RandomState(seed)

    say("Loading data")
    data_rng = rng if data_seed is None else np.random.RandomState(data_seed)
    train, valid, test = load_splits(protocol, imdb_paths(data_dir)[0], n_words, maxlen, test_size, data_rng)
    model_options["ydim"] = int(np.max(train[1])) + 1

    say("Building model")
    model = LstmModel(model_options, train, seed, rng)
    if reload_model:
        model.set_params(load_params(reload_model, model.get_params()))
    other_ps = None
    if callable(p):  # before compiling: getting P may take long, or fail
        p = p(train, model.get_params(), model_options)
        if isinstance(p, tuple):
            p, other_ps = p
    epoch_sampler = make_sampler(sampler, len(train[0]), batch_size, p)
    if sampler == "importance":
        say(format_p_summary(p))
        warning = uniform_p_warning(p, other_ps)
        if warning:
            say(warning)
    model.optimiser, model.f_pred  # compiled now, so the timings below are of training alone

    say("Optimization")
    say("%d train examples" % len(train[0]))
    say("%d valid examples" % len(valid[0]))
    say("%d test examples" % len(test[0]))

    hooks = TutorialLstmHooks(model_options, train, valid, test)
    start_time = time.time()
    try:
        progress = fit(model, epoch_sampler, rng, max_epochs, [hooks])
    except TrainingDiverged:
        return DIVERGED
    if progress.interrupted:
        say("Training interrupted")
    end_time = time.time()

    if hooks.best_p is not None:
        model.set_params(hooks.best_p)
    best_p = model.get_params()
    train_err, valid_err, test_err = hooks.errors(model, sequential_batches(len(train[0]), batch_size))
    say("Train ", train_err, "Valid ", valid_err, "Test ", test_err)
    if saveto:
        save_model(saveto, best_p, hooks.history_errs, model_options,
                   train_err=train_err, valid_err=valid_err, test_err=test_err)
    epochs_run = min(progress.epoch + 1, max_epochs)
    seconds_per_epoch = (end_time - start_time) / max(epochs_run, 1)
    say("The code run for %d epochs, with %f sec/epochs" % (epochs_run, seconds_per_epoch))
    print("Training took %.1fs" % (end_time - start_time), file=sys.stderr)
    return train_err, valid_err, test_err
