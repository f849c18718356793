"""Training the RNN-RBM on piano-rolls: chunks, samplers, per-epoch evaluation, checkpoints.

A training sample is a *chunk*: up to `batch_size` consecutive frames of one song (the paper's
footnote 5). The tutorial's loop visits the songs in a fresh shuffle each epoch and each song's
chunks in order; `SongOrderSampler` reproduces exactly that, `samplers.make_sampler` gives the
with-replacement and importance-sampling arms over the same chunks, one chunk per update.

Random numbers follow the original: one numpy RandomState(seed) gives, in order, the MRG seed, the
initial parameters and the per-epoch song shuffles. Per-epoch evaluation (the paper's footnote 6:
mean cost over all chunks without updating) uses a separate MRG stream, so adding it does not change
a single random number of training.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import aesara
import aesara.tensor as at
from tqdm import tqdm

from dltutorials_is.fim import fingerprint
from dltutorials_is.graphs import rnnrbm as graph
from dltutorials_is.samplers import make_sampler
from dltutorials_is.atomic import write_atomically

CHECKPOINT_FORMAT = "dltutorials-is/rnnrbm-checkpoint"


class TrainingDiverged(RuntimeError):
    """The cost became NaN or infinite; the last checkpoint on disk is still the last good one."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as asked."""


@dataclass
class RnnRbmConfig:
    """Everything that defines a run; the defaults are the tutorial's."""

    n_hidden: int = 150
    n_hidden_recurrent: int = 100
    lr: float = 0.001
    r: tuple[int, int] = (21, 109)
    dt: float = 0.3
    batch_size: int = 100
    num_epochs: int = 200
    k: int = graph.TRAIN_GIBBS_STEPS
    seed: int = 0xBEEF  # the tutorial's numpy.random.seed(0xbeef)
    floatX: str = "float64"
    sampler: str = "uniform"

    @property
    def n_visible(self) -> int:
        return self.r[1] - self.r[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RnnRbmConfig":
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.r = tuple(config.r)
        return config


def add_model_arguments(group) -> None:
    """The command-line flags that fix a run's chunks and W(0) (tutorial defaults), shared by
    rnnrbm/train.py and rnnrbm/fim.py so that a mined P always matches the run that uses it."""
    d = RnnRbmConfig()
    group.add_argument("--n-hidden", type=int, default=d.n_hidden, help="RBM hidden units (%(default)s)")
    group.add_argument("--n-hidden-recurrent", type=int, default=d.n_hidden_recurrent,
                       help="RNN hidden units (%(default)s)")
    group.add_argument("--r", type=int, nargs=2, default=d.r, metavar=("LOW", "HIGH"),
                       help="MIDI pitch range [LOW, HIGH) (%(default)s)")
    group.add_argument("--dt", type=float, default=d.dt, help="seconds per piano-roll frame (%(default)s)")
    group.add_argument("--batch-size", type=int, default=d.batch_size, help="frames per training chunk (%(default)s)")
    group.add_argument("--k", type=int, default=d.k, help="Gibbs steps of CD-k in training (%(default)s)")
    group.add_argument("--seed", type=int, default=d.seed,
                       help="numpy seed; the MRG seed, W(0) and shuffles follow from it (%(default)s = 0xbeef)")
    group.add_argument("--floatX", choices=("float64", "float32"), default=d.floatX, help="(%(default)s)")


def evaluation_seed(seed: int) -> int:
    """MRG seed of the evaluation stream: derived from the run seed without touching its RandomState."""
    return int(np.random.RandomState([seed, 1]).randint(1, 1 << 30))


def draw_initial_state(config: RnnRbmConfig, rng: np.random.RandomState) -> tuple[int, dict[str, np.ndarray]]:
    """The tutorial's first draws from its numpy generator: the MRG seed, then W(0)."""
    mrg_seed = int(rng.randint(1 << 30))
    return mrg_seed, graph.initial_params(config.n_visible, config.n_hidden, config.n_hidden_recurrent, rng, config.floatX)


def initial_values(config: RnnRbmConfig) -> dict[str, np.ndarray]:
    """W(0) of a run (what `RnnRbmModel` starts from), without building a model."""
    return draw_initial_state(config, np.random.RandomState(config.seed))[1]


class RnnRbmModel:
    """Parameters, random streams and (lazily) compiled functions of one RNN-RBM.

    `rng` is the run's RandomState; the model takes its first draws exactly as the tutorial did.
    """

    def __init__(self, config: RnnRbmConfig, rng: np.random.RandomState):
        self.config = config
        with aesara.config.change_flags(floatX=config.floatX):
            mrg_seed, values = draw_initial_state(config, rng)
            self.params = graph.shared_params(values)
            self.srng = graph.random_stream(mrg_seed)
            self.training, self.generation = graph.build_rnnrbm(self.params, self.srng, config.k)
            self.eval_srng = graph.random_stream(evaluation_seed(config.seed))
            self.evaluation = graph.build_training(self.params, self.eval_srng, config.k)
            self.weight = at.scalar("weight")
            self.learning_rate = aesara.shared(np.asarray(config.lr, dtype=config.floatX), name="lr")

    # -- compiled functions ------------------------------------------------------------------

    def _compile(self, inputs, outputs, updates) -> Callable:
        with aesara.config.change_flags(floatX=self.config.floatX):
            return aesara.function(inputs, outputs, updates=updates)

    @cached_property
    def train_function(self) -> Callable:
        """(chunk, weight) -> (cost, monitor) before the update; applies one plain SGD step
        p <- p - lr * weight * dcost/dp, with the negative particles held constant.

        The weight multiplies the gradient, not the cost: differentiating `weight * cost` gives the
        same numbers up to rounding, but with weight 1 only this form is the original's bit for bit."""
        t = self.training
        params = [self.params[n] for n in graph.PARAM_NAMES]
        grads = [self.weight * g for g in aesara.grad(t.cost, params, consider_constant=[t.v_sample])]
        updates = dict(t.updates)
        updates.update((p, p - self.learning_rate * g) for p, g in zip(params, grads))
        return self._compile([t.v, self.weight], [t.cost, t.monitor], updates)

    @cached_property
    def evaluate_function(self) -> Callable:
        """chunk -> (cost, monitor) without changing the parameters (own random stream)."""
        e = self.evaluation
        return self._compile([e.v], [e.cost, e.monitor], e.updates)

    @cached_property
    def gradient_function(self) -> Callable:
        """chunk -> the CD-k gradient of every parameter (tutorial order), parameters untouched.

        Its Gibbs chain draws from the evaluation stream, so training's draws stay the same."""
        e = self.evaluation
        params = [self.params[n] for n in graph.PARAM_NAMES]
        return self._compile([e.v], aesara.grad(e.cost, params, consider_constant=[e.v_sample]), e.updates)

    @cached_property
    def generate_function(self) -> Callable:
        """() -> a generated piano-roll (200 frames, k=25 Gibbs steps per frame)."""
        return self._compile([], self.generation.v_t, self.generation.updates)

    # -- state ---------------------------------------------------------------------------------

    def get_params(self) -> dict[str, np.ndarray]:
        return {name: p.get_value() for name, p in self.params.items()}

    def set_params(self, values: dict[str, np.ndarray]) -> None:
        for name, p in self.params.items():
            current = p.get_value(borrow=True)
            value = np.asarray(values[name])
            if value.shape != current.shape:
                raise CheckpointError(f"parameter {name} has shape {value.shape}, the model expects {current.shape}")
            p.set_value(value.astype(current.dtype))

    def random_states(self) -> dict[str, np.ndarray]:
        """Every MRG sub-stream state (training/generation and evaluation), for exact resumption."""
        states = {}
        for prefix, srng in (("train", self.srng), ("eval", self.eval_srng)):
            for i, (state, *_) in enumerate(srng.state_updates):
                states[f"{prefix}/{i}"] = state.get_value()
        return states

    def set_random_states(self, states: dict[str, np.ndarray]) -> None:
        for prefix, srng in (("train", self.srng), ("eval", self.eval_srng)):
            for i, (state, *_) in enumerate(srng.state_updates):
                key = f"{prefix}/{i}"
                if key in states:
                    state.set_value(np.asarray(states[key], dtype=state.dtype))

    def generate(self) -> np.ndarray:
        return self.generate_function()


# -- chunks and samplers ---------------------------------------------------------------------


def make_chunks(songs: Sequence[np.ndarray], batch_size: int) -> list[tuple[int, int]]:
    """(song index, first frame) of every chunk, song by song, as the tutorial's loop cut them."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    return [(s, start) for s, song in enumerate(songs) for start in range(0, len(song), batch_size)]


def chunk_arrays(songs: Sequence[np.ndarray], chunks: Sequence[tuple[int, int]], batch_size: int) -> list[np.ndarray]:
    return [songs[s][start : start + batch_size] for s, start in chunks]


def training_fingerprint(songs: Sequence[np.ndarray], batch_size: int) -> str:
    """Identifies the chunked training set (independent of floatX), for FIM artefacts."""
    lengths = np.array([len(s) for s in songs], dtype="int64")
    return fingerprint("rnnrbm-chunks", batch_size, lengths, np.concatenate(songs).astype("uint8"))


class SongOrderSampler:
    """The tutorial's order: songs reshuffled in place every epoch, each song's chunks in order.

    The shuffle permutes the previous epoch's order (the tutorial shuffled its song list in place),
    so the order is state that checkpoints keep. Every minibatch is one chunk, with weight 1.
    """

    name = "uniform"

    def __init__(self, chunks: Sequence[tuple[int, int]]):
        if not chunks:
            raise ValueError("the training set is empty")
        n_songs = max(s for s, _ in chunks) + 1
        self.chunks_of_song = [[] for _ in range(n_songs)]
        for index, (s, _) in enumerate(chunks):
            self.chunks_of_song[s].append(index)
        self.song_order = np.arange(n_songs)

    def epoch(self, rng: np.random.RandomState) -> list[tuple[np.ndarray, np.ndarray]]:
        rng.shuffle(self.song_order)
        return [
            (np.array([c], dtype="int32"), np.ones(1))
            for s in self.song_order
            for c in self.chunks_of_song[s]
        ]

    def get_state(self) -> np.ndarray:
        return self.song_order.copy()

    def set_state(self, order: np.ndarray) -> None:
        order = np.asarray(order)
        if sorted(order.tolist()) != list(range(len(self.chunks_of_song))):
            raise CheckpointError("the checkpoint's song order does not match this training set")
        self.song_order = order.astype(self.song_order.dtype)


def make_chunk_sampler(kind: str, chunks: Sequence[tuple[int, int]], p: np.ndarray | None = None):
    """'uniform' is the tutorial's song order; 'replacement' and 'importance' draw N chunks i.i.d."""
    if kind == "uniform":
        return SongOrderSampler(chunks)
    return make_sampler(kind, len(chunks), 1, p)


# -- evaluation ------------------------------------------------------------------------------


def evaluate(model: RnnRbmModel, chunks: Sequence[np.ndarray], desc: str = "eval") -> dict[str, float]:
    """Mean cost and monitor over chunks (each chunk's values are per-frame means), no update."""
    costs, monitors = [], []
    for chunk in tqdm(chunks, desc=desc, leave=False, file=sys.stderr, unit="chunk"):
        cost, monitor = model.evaluate_function(chunk)
        costs.append(float(cost))
        monitors.append(float(monitor))
    return {"cost": float(np.mean(costs)), "monitor": float(np.mean(monitors))}


# -- checkpoints -----------------------------------------------------------------------------


@dataclass
class TrainingState:
    """What, besides the parameters, a run needs to continue exactly where it stopped."""

    epochs_done: int = 0
    rng_state: tuple = field(default_factory=tuple)
    sampler_state: np.ndarray | None = None


def save_checkpoint(path: Path, model: RnnRbmModel, state: TrainingState) -> None:
    """Parameters (by the tutorial's names), options and resumption state in one .npz, written atomically."""
    arrays = {f"param/{name}": value for name, value in model.get_params().items()}
    arrays.update({f"mrg/{key}": value for key, value in model.random_states().items()})
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
    if state.sampler_state is not None:
        arrays["sampler_state"] = state.sampler_state
    write_atomically(path, lambda f: np.savez(f, **arrays))


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
    config = RnnRbmConfig.from_json(str(arrays["config"]))
    params = {name: arrays[f"param/{name}"] for name in graph.PARAM_NAMES}
    mrg = {key[len("mrg/") :]: value for key, value in arrays.items() if key.startswith("mrg/")}
    pos, has_gauss = (int(x) for x in arrays["rng/scalars"])
    state = TrainingState(
        epochs_done=int(arrays["epochs_done"]),
        rng_state=("MT19937", arrays["rng/keys"], pos, has_gauss, float(arrays["rng/cached_gaussian"])),
        sampler_state=arrays.get("sampler_state"),
    )
    return config, params, mrg, state


def restore_checkpoint(model: RnnRbmModel, path: Path) -> TrainingState:
    """Put a checkpoint's parameters and random states into `model` (built with the same config)."""
    config, params, mrg, state = read_checkpoint(path)
    if (config.n_visible, config.n_hidden, config.n_hidden_recurrent) != (
        model.config.n_visible, model.config.n_hidden, model.config.n_hidden_recurrent
    ):
        raise CheckpointError(f"{path} holds a model of another size: {config.to_json()}")
    model.set_params(params)
    model.set_random_states(mrg)
    return state


def load_model(path: Path) -> tuple[RnnRbmModel, TrainingState]:
    """Rebuild the model a checkpoint came from (same seed, so the same random sub-streams) and restore it."""
    config = read_checkpoint(path)[0]
    model = RnnRbmModel(config, np.random.RandomState(config.seed))
    return model, restore_checkpoint(model, path)


# -- training loop ---------------------------------------------------------------------------


@dataclass
class SplitData:
    """A split's chunk arrays (all chunks of all songs, in song order)."""

    name: str
    chunks: list[np.ndarray]


def prepare_split(name: str, songs: Sequence[np.ndarray], batch_size: int, dtype: str) -> SplitData:
    songs = [np.asarray(s, dtype=dtype) for s in songs]
    return SplitData(name, chunk_arrays(songs, make_chunks(songs, batch_size), batch_size))


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
) -> list[dict]:
    """SGD over chunks for config.num_epochs epochs (continuing after `state.epochs_done`).

    After each epoch: mean cost/monitor over all chunks of the training set and of `eval_splits`
    without updating (footnote 6), a line `Epoch i/n  <train monitor>`, a JSON line in `log_path`,
    and the checkpoint. A NaN/inf cost raises TrainingDiverged before anything is saved; Ctrl+C
    stops after the last finished epoch, like the tutorial.
    """
    config = model.config
    train_data = prepare_split("train", train_songs, config.batch_size, config.floatX)
    splits = {"train": train_data}
    for name, songs in (eval_splits or {}).items():
        splits[name] = prepare_split(name, songs, config.batch_size, config.floatX)
    state = state or TrainingState()
    if state.epochs_done:
        rng.set_state(state.rng_state)
        if state.sampler_state is not None and hasattr(sampler, "set_state"):
            sampler.set_state(state.sampler_state)
    start = time.perf_counter()
    model.train_function, model.evaluate_function  # compile now, so epoch times measure training
    print_fn(f"Compiled the training and evaluation functions in {time.perf_counter() - start:.0f} s")
    history = []
    try:
        for epoch in range(state.epochs_done, config.num_epochs):
            record = _train_epoch(model, train_data, rng, sampler, epoch)
            start = time.perf_counter()
            for name, data in splits.items():
                for key, value in evaluate(model, data.chunks, desc=f"eval {name}").items():
                    record[f"{name}_{key}"] = value
            record["seconds_eval"] = time.perf_counter() - start
            extra = "  ".join(f"{n} {record[n + '_monitor']:.4f}" for n in splits if n != "train")
            print_fn(
                f"Epoch {epoch + 1}/{config.num_epochs}  {record['train_monitor']:.6f}"
                f"  (cost {record['train_cost']:.4f}; during epoch {record['train_monitor_during_epoch']:.4f}"
                f"{'; ' + extra if extra else ''}; {record['seconds_train']:.0f}+{record['seconds_eval']:.0f} s)"
            )
            state = TrainingState(epoch + 1, rng.get_state(), getattr(sampler, "get_state", lambda: None)())
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, state)
            if log_path is not None:
                _append_json_line(log_path, record)
            history.append(record)
    except KeyboardInterrupt:
        print_fn(f"Interrupted by user after {state.epochs_done} finished epoch(s).")
    return history


def _train_epoch(model: RnnRbmModel, data: SplitData, rng, sampler, epoch: int) -> dict:
    minibatches = sampler.epoch(rng)
    costs, monitors = [], []
    start = time.perf_counter()
    floatX = model.config.floatX
    for indices, weights in tqdm(minibatches, desc=f"epoch {epoch + 1}", leave=False, file=sys.stderr, unit="chunk"):
        for index, weight in zip(indices, weights):
            cost, monitor = model.train_function(data.chunks[index], np.asarray(weight, dtype=floatX))
            if not (math.isfinite(float(cost)) and math.isfinite(float(monitor))):
                raise TrainingDiverged(
                    f"epoch {epoch + 1}, update {len(costs) + 1}: cost {float(cost)}, monitor {float(monitor)} "
                    f"(chunk {int(index)}, weight {float(weight):.4g}); the parameters are no longer usable. "
                    "The last checkpoint on disk is from the last finished epoch; try a smaller --lr"
                )
            costs.append(float(cost))
            monitors.append(float(monitor))
    return {
        "epoch": epoch + 1,
        "sampler": getattr(sampler, "name", type(sampler).__name__),
        "updates": len(costs),
        "train_cost_during_epoch": float(np.mean(costs)),
        "train_monitor_during_epoch": float(np.mean(monitors)),  # what the tutorial printed
        "seconds_train": time.perf_counter() - start,
    }


def _append_json_line(path: Path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
