"""Training the RNN-RBM on piano-rolls like the tutorial: per-epoch evaluation, checkpoints, resuming.

A training sample is a *chunk*: up to `batch_size` consecutive frames of one song (the paper's
footnote 5). The tutorial's loop visits the songs in a fresh shuffle each epoch and each song's
chunks in order; `SongOrderSampler` reproduces exactly that, `make_chunk_sampler` gives the
with-replacement and importance-sampling arms over the same chunks, one chunk per update.

Random numbers follow the original: one numpy RandomState(seed) gives, in order, the MRG seed, the
initial parameters and the per-epoch song shuffles. Per-epoch evaluation (the paper's footnote 6:
mean cost over all chunks without updating) uses a separate MRG stream, so adding it does not change
a single random number of training.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from dltutorials_is.datasets.chunks import chunk_arrays
from dltutorials_is.errors import UserError
from dltutorials_is.graphs import rnnrbm as graph
from dltutorials_is.io import append_json_line, non_finite, require_finite, rewrite_json_lines, write_atomically
from dltutorials_is.loop import Hook, Progress, fit
from dltutorials_is.models.base import ModelStateError
from dltutorials_is.models.rnnrbm import RnnRbmConfig, RnnRbmModel

CHECKPOINT_FORMAT = "dltutorials-is/rnnrbm-checkpoint"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be loaded as asked."""


# -- checkpoints -----------------------------------------------------------------------------


@dataclass
class TrainingState:
    """What, besides the model's state, a run needs to continue exactly where it stopped."""

    epochs_done: int = 0
    rng_state: tuple = field(default_factory=tuple)
    sampler_state: dict = field(default_factory=dict)


def save_checkpoint(path: Path, model: RnnRbmModel, state: TrainingState) -> None:
    """Parameters (by the tutorial's names), options and resumption state in one .npz, written atomically.

    Parameters holding NaN or inf are never written (`io.NotSaved`; the file keeps what it held)."""
    params = model.get_params()
    require_finite(params, path)
    arrays = {f"param/{name}": value for name, value in params.items()}
    arrays.update({f"mrg/{key}": value for key, value in model.random_states().items()})
    arrays.update({f"sampler/{key}": np.asarray(value) for key, value in state.sampler_state.items()})
    kind, keys, pos, has_gauss, cached = state.rng_state
    arrays.update(
        {
            "format": np.array(CHECKPOINT_FORMAT),
            "config": np.array(model.config.to_json()),
            "epochs_done": np.array(state.epochs_done),
            "rng/keys": keys,
            "rng/scalars": np.array([pos, has_gauss]),
            "rng/cached_gaussian": np.array(cached),
        }
    )
    write_atomically(path, lambda f: np.savez(f, **arrays))


def _sampler_state(arrays: dict) -> dict:
    state = {key[len("sampler/"):]: value for key, value in arrays.items() if key.startswith("sampler/")}
    if "sampler_state" in arrays:  # checkpoints written before samplers shared one state protocol
        state["song_order"] = arrays["sampler_state"]
    return state


def read_checkpoint(path: Path) -> tuple[RnnRbmConfig, dict[str, np.ndarray], dict[str, np.ndarray], TrainingState]:
    """(config, params, random states, training state) from a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train one with `python rnnrbm/train.py --saveto {path}`")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt: {error!r})") from error
    if str(arrays.get("format", "")) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is an .npz file but not an RNN-RBM checkpoint of this project")
    try:
        config, params, mrg, state = _checkpoint_contents(arrays)
    except (KeyError, ValueError, TypeError) as error:
        what = f"has no entry {error}" if isinstance(error, KeyError) else f"has a malformed entry ({error})"
        raise CheckpointError(f"{path} is an incomplete or damaged RNN-RBM checkpoint: it {what} — "
                              "train a new one") from error
    bad = non_finite(params)
    if bad:
        raise CheckpointError(f"{path}: {', '.join(bad)} hold NaN or inf (written by a run that diverged) — "
                              "train a new one")
    return config, params, mrg, state


def _checkpoint_contents(arrays: dict):
    """`read_checkpoint`'s result from the checkpoint's arrays, checking every entry it reads."""
    config = RnnRbmConfig.from_json(str(arrays["config"]))
    positive = ("n_hidden", "n_hidden_recurrent", "batch_size", "k")
    if not all(type(getattr(config, key)) is int and getattr(config, key) > 0 for key in positive) \
            or not (len(config.r) == 2 and all(type(v) is int for v in config.r) and config.r[0] < config.r[1]) \
            or not (isinstance(config.dt, (int, float)) and config.dt > 0) or type(config.seed) is not int \
            or config.floatX not in ("float32", "float64"):
        raise ValueError(f"config {config.to_json()}")
    nv, nh, nu = config.n_visible, config.n_hidden, config.n_hidden_recurrent
    shapes = {"W": (nv, nh), "bv": (nv,), "bh": (nh,), "Wuh": (nu, nh), "Wuv": (nu, nv), "Wvu": (nv, nu),
              "Wuu": (nu, nu), "bu": (nu,)}
    params = {name: arrays[f"param/{name}"] for name in graph.PARAM_NAMES}
    for name, value in params.items():
        if value.shape != shapes[name] or value.dtype.kind != "f":
            raise ValueError(f"parameter {name} is {value.dtype} of shape {value.shape}, the config says "
                             f"floats of shape {shapes[name]}")
    mrg = {key[len("mrg/") :]: value for key, value in arrays.items() if key.startswith("mrg/")}
    if not all(value.dtype.kind in "iu" and value.ndim == 2 and value.shape[1] == 6 for value in mrg.values()):
        raise ValueError("a random stream state is not an (n, 6) integer array")
    keys, scalars, epochs = arrays["rng/keys"], arrays["rng/scalars"], arrays["epochs_done"]
    if keys.shape != (624,) or keys.dtype.kind not in "iu" or scalars.shape != (2,) or scalars.dtype.kind not in "iu" \
            or epochs.shape != () or epochs.dtype.kind not in "iu" or epochs < 0:
        raise ValueError("the numpy random state or the epoch count")
    pos, has_gauss = (int(x) for x in scalars)
    state = TrainingState(
        epochs_done=int(epochs),
        rng_state=("MT19937", keys, pos, has_gauss, float(arrays["rng/cached_gaussian"])),
        sampler_state=_sampler_state(arrays),
    )
    return config, params, mrg, state


def restore_checkpoint(model: RnnRbmModel, path: Path) -> TrainingState:
    """Put a checkpoint's parameters and random states into `model` (built with the same config)."""
    config, params, mrg, state = read_checkpoint(path)
    if (config.n_visible, config.n_hidden, config.n_hidden_recurrent) != (
        model.config.n_visible, model.config.n_hidden, model.config.n_hidden_recurrent
    ):
        raise CheckpointError(f"{path} holds a model of another size: {config.to_json()}")
    try:
        model.set_state({"params": params, "streams": mrg})
    except ModelStateError as error:
        raise CheckpointError(f"{path}: {error}") from error
    return state


def load_model(path: Path, graph: str | None = None) -> tuple[RnnRbmModel, TrainingState]:
    """Rebuild the model a checkpoint came from (same seed, so the same random sub-streams) and restore it;
    `graph` (`RnnRbmConfig.graph`) replaces the checkpoint's: it changes how, not what, the model computes."""
    config = read_checkpoint(path)[0]
    config.graph = graph or config.graph
    model = RnnRbmModel(config, np.random.RandomState(config.seed))
    return model, restore_checkpoint(model, path)


# -- the tutorial's per-epoch work, as a hook of the one loop ---------------------------------


class EpochReport(Hook):
    """After each epoch: the no-update evaluation of every split (footnote 6), the tutorial's line
    `Epoch i/n <mean monitor>`, a JSON line in `log_path` and the checkpoint."""

    def __init__(self, splits: dict[str, list[np.ndarray]], sampler, rng, num_epochs: int,
                 checkpoint: Path | None, log_path: Path | None, print_fn: Callable[[str], None],
                 replace_log: bool = False):
        self.splits, self.sampler, self.rng, self.num_epochs = splits, sampler, rng, num_epochs
        self.checkpoint, self.log_path, self.print_fn = checkpoint, log_path, print_fn
        self.replace_log = replace_log  # the first record replaces what `log_path` held (a new run)
        self.history: list[dict] = []
        self.epochs_done = 0

    def start_epoch(self, model, progress: Progress) -> None:
        self.costs, self.monitors = [], []
        self.start = time.perf_counter()

    def after_update(self, model, progress: Progress) -> None:
        self.costs.append(progress.step.cost)
        self.monitors.append(progress.step.monitor)

    def end_epoch(self, model: RnnRbmModel, progress: Progress) -> None:
        epoch = progress.epoch
        record = {
            "epoch": epoch + 1,
            "sampler": getattr(self.sampler, "name", type(self.sampler).__name__),
            "updates": len(self.costs),
            "train_cost_during_epoch": float(np.mean(self.costs)),
            "train_monitor_during_epoch": float(np.mean(self.monitors)),  # what the tutorial printed
            "seconds_train": time.perf_counter() - self.start,
        }
        start = time.perf_counter()
        for name, chunks in self.splits.items():
            bar = lambda items, name=name: tqdm(items, desc=f"eval {name}", leave=False, file=sys.stderr, unit="chunk")  # noqa: E731
            values = model.evaluate(chunks, progress=bar)
            record[f"{name}_cost"], record[f"{name}_monitor"] = values["cost"], values["monitor"]
        record["seconds_eval"] = time.perf_counter() - start
        extra = "  ".join(f"{n} {record[n + '_monitor']:.4f}" for n in self.splits if n != "train")
        self.print_fn(
            f"Epoch {epoch + 1}/{self.num_epochs}  {record['train_monitor']:.6f}"
            f"  (cost {record['train_cost']:.4f}; during epoch {record['train_monitor_during_epoch']:.4f}"
            f"{'; ' + extra if extra else ''}; {record['seconds_train']:.0f}+{record['seconds_eval']:.0f} s)"
        )
        self.epochs_done = epoch + 1
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, model, TrainingState(epoch + 1, self.rng.get_state(), self.sampler.get_state()))
        if self.log_path is not None:
            if self.replace_log:  # together with the first checkpoint of a new run, not before
                rewrite_json_lines(self.log_path, [record])
                self.replace_log = False
            else:
                append_json_line(self.log_path, record)
        self.history.append(record)


def train(
    model: RnnRbmModel,
    train_songs: Sequence[np.ndarray],
    rng: np.random.RandomState,
    sampler,
    eval_splits: dict[str, Sequence[np.ndarray]] | None = None,
    state: TrainingState | None = None,
    checkpoint: Path | None = None,
    log_path: Path | None = None,
    print_fn: Callable[[str], None] = print,
    replace_log: bool = False,
) -> list[dict]:
    """SGD over chunks for config.num_epochs epochs (continuing after `state.epochs_done`).

    After each epoch: mean cost/monitor over all chunks of the training set and of `eval_splits`
    without updating (footnote 6), a line `Epoch i/n  <train monitor>`, a JSON line in `log_path`,
    and the checkpoint. A NaN/inf cost, or a step making a parameter NaN/inf, raises
    `loop.TrainingDiverged` (the checkpoint on disk is the last finished epoch's); Ctrl+C stops after
    the current update, like the tutorial. `replace_log`: a new run's first epoch replaces what the log
    held (an earlier run's records stay until this run has a checkpoint to go with its own).
    """
    config = model.config
    splits = {name: chunk_arrays(songs, config.batch_size, config.floatX)
              for name, songs in {"train": train_songs, **(eval_splits or {})}.items()}
    model.use_data(splits["train"])
    state = state or TrainingState()
    if state.epochs_done:
        rng.set_state(state.rng_state)
        if state.sampler_state:
            sampler.set_state(state.sampler_state)
    start = time.perf_counter()
    model.train_function, model.evaluate_function  # compile now, so epoch times measure training
    print_fn(f"Compiled the training and evaluation functions in {time.perf_counter() - start:.0f} s")
    report = EpochReport(splits, sampler, rng, config.num_epochs, checkpoint, log_path, print_fn, replace_log)
    progress = fit(model, sampler, rng, config.num_epochs, [report], start_epoch=state.epochs_done)
    if progress.interrupted:
        print_fn(f"Interrupted by user after {max(report.epochs_done, state.epochs_done)} finished epoch(s).")
    return report.history
