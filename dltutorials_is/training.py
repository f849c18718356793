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
import aesara.tensor as at
from tqdm import tqdm

from dltutorials_is.datasets.imdb import imdb_paths, load_splits, prepare_data
from dltutorials_is.graphs.lstm import (
    build_model,
    floatx,
    get_values,
    init_params,
    load_params,
    random_stream,
    set_values,
    to_shared,
)
from dltutorials_is.optimisers import get_optimiser
from dltutorials_is.samplers import cut_minibatches, format_p_summary, make_sampler
from dltutorials_is.atomic import write_atomically

#: What `train_lstm` returns for a run whose cost became NaN or infinite (the original's sentinel).
DIVERGED = (1.0, 1.0, 1.0)

Split = tuple[list, list]
#: `p` may be given late: called as `p(train, initial_params, model_options)` once both exist.
ImportanceProvider = Callable[[Split, dict, dict], np.ndarray]


def say(*parts) -> None:
    """Print a progress line to stdout without breaking a progress bar on stderr."""
    tqdm.write(" ".join(str(part) for part in parts), file=sys.stdout)


def sequential_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """All samples in order, in minibatches (the original's `get_minibatches_idx` without shuffle)."""
    return cut_minibatches(np.arange(n, dtype="int32"), batch_size)


def visits_each_once(batches: Sequence[np.ndarray], n: int) -> bool:
    indices = np.concatenate(batches) if len(batches) else np.array([], dtype="int32")
    return len(indices) == n and np.array_equal(np.sort(indices), np.arange(n))


def pred_error(f_pred, data: Split, batches: Sequence[np.ndarray]):
    """Error rate of `f_pred` over `data`, classified minibatch by minibatch."""
    labels = np.array(data[1])
    correct = 0
    for index in batches:
        x, mask, _ = prepare_data([data[0][t] for t in index], labels[index], maxlen=None)
        correct += (f_pred(x, mask) == labels[index]).sum()
    return 1.0 - floatx(correct) / len(data[0])


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def model_path(saveto: str) -> Path:
    """Where `np.savez(saveto)` writes (it appends `.npz` when missing)."""
    return Path(saveto if str(saveto).endswith(".npz") else f"{saveto}.npz")


def options_path(saveto: str) -> Path:
    return Path(f"{saveto}.pkl")


def save_model(saveto: str, params: dict, history_errs: list, model_options: dict, **results) -> None:
    """The parameters and validation history in `saveto` (.npz), the options in `saveto.pkl`."""
    write_atomically(model_path(saveto), lambda f: np.savez(f, history_errs=history_errs, **results, **params))
    write_atomically(options_path(saveto), lambda f: pickle.dump(model_options, f, -1))


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
    sampler="uniform",  # uniform, replacement or importance (see dltutorials_is.samplers)
    p=None,  # importance sampling probabilities, or an ImportanceProvider
):
    """Train the LSTM and return `(train_err, valid_err, test_err)` of the best model.

    Returns `DIVERGED` if the cost becomes NaN or infinite; the update that produced it is not
    applied and the last good parameters are saved to `saveto` first.
    """
    model_options = {name: value for name, value in locals().items() if name != "p"}
    say("model options", model_options)
    rng = np.random.RandomState(seed)

    say("Loading data")
    train, valid, test = load_splits(protocol, imdb_paths(data_dir)[0], n_words, maxlen, test_size, rng)
    model_options["ydim"] = int(np.max(train[1])) + 1

    say("Building model")
    params = init_params(model_options, rng)
    if reload_model:
        load_params(reload_model, params)
    if callable(p):  # before compiling ours: getting P may take long, or fail
        p = p(train, params, model_options)
    epoch_sampler = make_sampler(sampler, len(train[0]), batch_size, p)
    if sampler == "importance":
        say(format_p_summary(p))

    tparams = to_shared(params)
    model = build_model(tparams, model_options, random_stream(seed))
    grads = at.grad(model.cost, wrt=list(tparams.values()))
    lr = at.scalar(name="lr")
    f_grad_shared, f_update = get_optimiser(optimizer)(lr, tparams, grads, model.inputs, model.cost)
    f_pred = model.f_pred  # compiled now, so the timings below are of training alone

    say("Optimization")
    kf_valid = sequential_batches(len(valid[0]), valid_batch_size)
    kf_test = sequential_batches(len(test[0]), valid_batch_size)
    say("%d train examples" % len(train[0]))
    say("%d valid examples" % len(valid[0]))
    say("%d test examples" % len(test[0]))

    history_errs = []
    best_p = None
    bad_counter = 0
    if validFreq == -1:
        validFreq = len(train[0]) // batch_size
    if saveFreq == -1:
        saveFreq = len(train[0]) // batch_size

    def checkpoint():
        return best_p if best_p is not None else get_values(tparams)

    uidx = 0  # the number of updates done
    epochs_run = 0
    estop = False
    start_time = time.time()
    try:
        for eidx in range(max_epochs):
            epochs_run = eidx + 1
            n_samples = 0
            batches = epoch_sampler.epoch(rng)
            train_batches = [index for index, _ in batches]
            if not visits_each_once(train_batches, len(train[0])):
                train_batches = sequential_batches(len(train[0]), batch_size)

            for train_index, weights in tqdm(batches, desc=f"epoch {eidx}", unit="update", leave=False,
                                             file=sys.stderr, disable=None):
                uidx += 1
                model.use_noise.set_value(1.0)
                x, mask, y = prepare_data([train[0][t] for t in train_index], [train[1][t] for t in train_index])
                n_samples += x.shape[1]

                cost = f_grad_shared(x, mask, y, floatx(weights))
                if not np.isfinite(cost):
                    say("bad cost detected: ", cost)
                    say(f"at epoch {eidx}, update {uidx}; that update was not applied.")
                    if saveto:
                        save_model(saveto, checkpoint(), history_errs, model_options)
                        say(f"Saved the last good model to {model_path(saveto)}")
                    return DIVERGED
                f_update(lrate)

                if uidx % dispFreq == 0:
                    say("Epoch ", eidx, "Update ", uidx, "Cost ", cost)

                if saveto and uidx % saveFreq == 0:
                    say("Saving...")
                    save_model(saveto, checkpoint(), history_errs, model_options)
                    say("Done")

                if uidx % validFreq == 0:
                    model.use_noise.set_value(0.0)
                    train_err = pred_error(f_pred, train, train_batches)
                    valid_err = pred_error(f_pred, valid, kf_valid)
                    test_err = pred_error(f_pred, test, kf_test)
                    history_errs.append([valid_err, test_err])

                    if best_p is None or valid_err <= np.array(history_errs)[:, 0].min():
                        best_p = get_values(tparams)
                        bad_counter = 0

                    say("Train ", train_err, "Valid ", valid_err, "Test ", test_err)

                    if len(history_errs) > patience and valid_err >= np.array(history_errs)[:-patience, 0].min():
                        bad_counter += 1
                        if bad_counter > patience:
                            say("Early Stop!")
                            estop = True
                            break

            say("Seen %d samples" % n_samples)
            if estop:
                break
    except KeyboardInterrupt:
        say("Training interrupted")

    end_time = time.time()
    if best_p is not None:
        set_values(tparams, best_p)
    else:
        best_p = get_values(tparams)

    model.use_noise.set_value(0.0)
    train_err = pred_error(f_pred, train, sequential_batches(len(train[0]), batch_size))
    valid_err = pred_error(f_pred, valid, kf_valid)
    test_err = pred_error(f_pred, test, kf_test)
    say("Train ", train_err, "Valid ", valid_err, "Test ", test_err)
    if saveto:
        save_model(saveto, best_p, history_errs, model_options,
                   train_err=train_err, valid_err=valid_err, test_err=test_err)
    seconds_per_epoch = (end_time - start_time) / max(epochs_run, 1)
    say("The code run for %d epochs, with %f sec/epochs" % (epochs_run, seconds_per_epoch))
    print("Training took %.1fs" % (end_time - start_time), file=sys.stderr)
    return train_err, valid_err, test_err
