"""Command-line flags the scripts share: value types that refuse bad numbers at parse time, and each
model's flags defined once, so a FIM artefact, a variance probe and a training run built from the same
flags always describe the same training set and W(0).

Every numeric flag of every command goes through one of the types below, so the same mistake gets
the same message everywhere (argparse prints it as `error: argument --flag: ...` and exits with 2).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from dltutorials_is.datasets.imdb import PROTOCOLS
from dltutorials_is.models.rnnrbm import RnnRbmConfig

FLOAT_TYPES = ("float64", "float32")
#: The MRG generator (dropout, Gibbs chains) refuses seed 0 and seeds from this value on.
MRG_SEED_LIMIT = 2147462579
NUMPY_SEED_LIMIT = 2**32
#: Shortest piano-roll frame accepted: Nottingham at dt = 0.3 s is 150,000 frames; 0.01 s makes it 30x longer.
MIN_FRAME_SECONDS = 0.01
MIDI_PITCHES = 128


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_or_minus_one(name: str, what: str, minus_one: str):
    """A flag type called `name` (argparse names it in "invalid <name> value"): a positive number of
    `what`, or -1 meaning `minus_one`."""

    def parse(text: str) -> int:
        value = int(text)
        if value <= 0 and value != -1:
            raise argparse.ArgumentTypeError(f"must be a positive number of {what} or -1 ({minus_one}), got {text}")
        return value

    parse.__name__ = name
    return parse


#: A number of updates, or -1 for once per epoch.
period = _positive_or_minus_one("period", "updates", "once per epoch")


def non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):  # also rejects nan and inf
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


#: joblib workers: a positive number, or -1 for all cores.
n_jobs = _positive_or_minus_one("n_jobs", "workers", "all cores")


def lstm_seed(text: str) -> int:
    """Seeds both numpy's RandomState and the MRG dropout stream, which refuses 0."""
    value = int(text)
    if not 0 < value < MRG_SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in 1..{MRG_SEED_LIMIT - 1} (it also seeds the MRG random "
                                         f"stream, which refuses 0), got {text}")
    return value


def numpy_seed(text: str) -> int:
    """A numpy RandomState seed."""
    value = int(text)
    if not 0 <= value < NUMPY_SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in 0..{NUMPY_SEED_LIMIT - 1}, got {text}")
    return value


def reviews_or_all(text: str) -> int:
    """The LSTM's test subset: N > 0 reviews drawn at random, or 0 / -1 for all (as `load_splits` reads it)."""
    value = int(text)
    if value < -1:
        raise argparse.ArgumentTypeError(f"must be a positive number of reviews, or 0 or -1 for all, got {text}")
    return value


def frame_seconds(text: str) -> float:
    """Seconds per piano-roll frame."""
    value = float(text)
    if not (MIN_FRAME_SECONDS <= value and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= {MIN_FRAME_SECONDS} (shorter frames "
                                         f"make the piano-rolls too long to hold), got {text}")
    return value


def cell(text: str) -> tuple[int, float]:
    """A replication cell BATCH:STEP, e.g. 16:0.5."""
    try:
        batch, step = text.split(":")
        return positive_int(batch), positive_float(step)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"must be BATCH:STEP with a positive batch size and a finite step size > 0, "
                                         f"such as 16:0.5, got {text!r}") from None


class PitchRange(argparse.Action):
    """`--r LOW HIGH`: MIDI pitches LOW..HIGH-1, with 0 <= LOW < HIGH <= 128."""

    def __call__(self, parser, namespace, values, option_string=None):
        low, high = values
        if not 0 <= low < high <= MIDI_PITCHES:
            raise argparse.ArgumentError(self, f"must be LOW HIGH with 0 <= LOW < HIGH <= {MIDI_PITCHES} (MIDI "
                                               f"pitches LOW..HIGH-1), got {low} {high}")
        setattr(namespace, self.dest, (low, high))


def eval_splits(text: str) -> tuple[str, ...]:
    """A comma list of the splits evaluated besides train ('' for none)."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ("valid", "test")]
    if unknown:
        raise argparse.ArgumentTypeError(f"must be a comma list of valid and test (or '' for none), got {text!r}")
    return names


def add_on_bad_argument(group) -> None:
    """`--on-bad {error,skip}`: what loading Nottingham does with a MIDI file that does not read."""
    group.add_argument("--on-bad", choices=("error", "skip"), default="error",
                       help="unreadable MIDI files: stop with an error naming the file (default), or skip them "
                            "with a warning")


def vocabulary_size(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (0 is padding, 1 unknown), got {text}")
    return value


class TwoSpellingsParser(argparse.ArgumentParser):
    """An ArgumentParser for commands whose flags are spelt two ways (`--max-epochs` and the original's
    `--max_epochs`): an abbreviation of both, such as `--reload` or `--dim`, names one option, where
    Python 3.11's argparse calls it ambiguous between the two spellings of that one option."""

    def _get_option_tuples(self, option_string):
        by_action = {}
        for option_tuple in super()._get_option_tuples(option_string):
            by_action.setdefault(id(option_tuple[0]), option_tuple)
        return list(by_action.values())


def add_both_spellings(group, flag: str, original: str, **kwargs) -> None:
    """`--flag`, also spelt `--<the original's parameter name>`, stored under the original's name."""
    names = [flag] if flag == f"--{original}" else [flag, f"--{original}"]
    kwargs["help"] += " (default: %(default)s)"
    group.add_argument(*names, dest=original, **kwargs)


# -- the LSTM ---------------------------------------------------------------------------------

#: The options that fix the LSTM's training set and W(0), and FIM's private model.
LSTM_RUN_OPTIONS = ("protocol", "n_words", "maxlen", "test_size", "dim_proj", "use_dropout", "decay_c", "seed")


def add_lstm_model_arguments(model, run) -> None:
    """The LSTM's model flags into group `model` and its data/seed/precision flags into group `run`
    (tutorial defaults, the original's `__main__` for `test_size`)."""
    add_both_spellings(model, "--dim-proj", "dim_proj", type=positive_int, default=128,
                       help="word embedding dimension and number of LSTM hidden units")
    add_both_spellings(model, "--n-words", "n_words", type=vocabulary_size, default=10000, help="vocabulary size")
    add_both_spellings(model, "--maxlen", "maxlen", type=non_negative_int, default=100,
                       help="training reviews this long or longer are left out (0: keep all)")
    add_both_spellings(model, "--test-size", "test_size", type=reviews_or_all, default=500,
                       help="if > 0, evaluate on a random subset of this many test reviews (drawn before W(0), so "
                            "it changes W(0)); 0 or -1: all")
    add_both_spellings(model, "--decay-c", "decay_c", type=non_negative_float, default=0.0,
                       help="weight decay for the classifier, applied to the U weights")
    add_both_spellings(model, "--use-dropout", "use_dropout", action=argparse.BooleanOptionalAction, default=True,
                       help="dropout on the pooled LSTM output (without: slightly faster, worse test error)")
    run.add_argument("--protocol", choices=PROTOCOLS, default="tutorial",
                     help="tutorial: the original's splits (default); paper: train and test swapped (Wang et al., "
                          "footnote 4)")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="folder holding imdb.pkl (default: $DLTUTORIALS_DATA or the project's data/)")
    run.add_argument("--seed", type=lstm_seed, default=123,
                     help="seed of the numpy RandomState and of the dropout stream, > 0: the MRG stream refuses 0 "
                          "(default: 123, the original's)")
    run.add_argument("--floatX", choices=FLOAT_TYPES, default="float64", help="Aesara float type (default: float64)")


def lstm_run_options(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in LSTM_RUN_OPTIONS}


# -- the RNN-RBM ------------------------------------------------------------------------------


def add_rnnrbm_model_arguments(group) -> None:
    """The flags that fix a run's chunks and W(0) (tutorial defaults), shared by rnnrbm/train.py and
    rnnrbm/fim.py so that a mined P always matches the run that uses it."""
    d = RnnRbmConfig()
    group.add_argument("--n-hidden", type=positive_int, default=d.n_hidden, help="RBM hidden units (%(default)s)")
    group.add_argument("--n-hidden-recurrent", type=positive_int, default=d.n_hidden_recurrent,
                       help="RNN hidden units (%(default)s)")
    group.add_argument("--r", type=int, nargs=2, default=d.r, metavar=("LOW", "HIGH"), action=PitchRange,
                       help="MIDI pitch range [LOW, HIGH) (%(default)s)")
    group.add_argument("--dt", type=frame_seconds, default=d.dt, help="seconds per piano-roll frame (%(default)s)")
    group.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                       help="frames per training chunk (%(default)s)")
    group.add_argument("--k", type=positive_int, default=d.k, help="Gibbs steps of CD-k in training (%(default)s)")
    group.add_argument("--seed", type=numpy_seed, default=d.seed,
                       help="numpy seed; the MRG seed, W(0) and shuffles follow from it (%(default)s = 0xbeef)")
    group.add_argument("--floatX", choices=FLOAT_TYPES, default=d.floatX, help="(%(default)s)")


def add_rnnrbm_graph_argument(group, reload: bool = False) -> None:
    """`--graph {fast,tutorial}`: which graph computes the training step and the evaluation (the same
    numbers up to rounding, so a run, a checkpoint or a FIM artefact does not depend on it). With
    `reload`, its default is None: the config's (a checkpoint's) graph, else "fast"."""
    default = RnnRbmConfig.graph
    group.add_argument("--graph", choices=("fast", "tutorial"), default=None if reload else default,
                       help="fast: the Gibbs chain unrolled and the RNN recurrence as compiled ops, no scan "
                            "(~3x faster); tutorial: the tutorial's scan graph (default: " + default +
                            ("; with --reload, the checkpoint's)" if reload else ")"))
