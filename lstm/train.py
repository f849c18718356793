"""Train the LSTM sentiment classifier on IMDB: the deeplearning.net tutorial's lstm.py, ported to Aesara.

Defaults are the original's (`max_epochs=100, test_size=500` from its __main__). With the uniform
sampler, float64 and the same data it prints the same lines and numbers as the original.
`--is` trains with Fast Importance Mining's sampling distribution (Wang et al.) instead.
Every flag also accepts the original's parameter name, e.g. --max_epochs or --dispFreq.
"""
from __future__ import annotations

import dltutorials_is  # noqa: F401  (first: it points Aesara at a real BLAS before aesara loads)

import argparse
import sys
from pathlib import Path

import aesara

from dltutorials_is.datasets.download import DataError
from dltutorials_is.datasets.imdb import PROTOCOLS
from dltutorials_is.fim import SCORE_KINDS, FIMError
from dltutorials_is.graphs.lstm import ModelFileError
from dltutorials_is.optimisers import OPTIMISERS
from dltutorials_is.training import DIVERGED, train_lstm

SAMPLERS = ("uniform", "replacement")  # --is gives the third, "importance"


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


def period(text: str) -> int:
    """A number of updates, or -1 for once per epoch."""
    value = int(text)
    if value <= 0 and value != -1:
        raise argparse.ArgumentTypeError(f"must be a positive number of updates or -1 (once per epoch), got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def vocabulary_size(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (0 is padding, 1 unknown), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    def hyper(flag: str, original: str, **kwargs):
        """A train_lstm hyperparameter: `--flag`, also spelt `--<original name>`."""
        names = [flag] if flag == f"--{original}" else [flag, f"--{original}"]
        kwargs["help"] += " (default: %(default)s)"
        model.add_argument(*names, dest=original, **kwargs)

    model = parser.add_argument_group("hyperparameters of the original train_lstm")
    hyper("--dim-proj", "dim_proj", type=positive_int, default=128,
          help="word embedding dimension and number of LSTM hidden units")
    hyper("--patience", "patience", type=non_negative_int, default=10,
          help="validations without improvement before early stopping (the original calls them epochs)")
    hyper("--max-epochs", "max_epochs", type=positive_int, default=100, help="the maximum number of epochs to run")
    hyper("--disp-freq", "dispFreq", type=positive_int, default=10,
          help="display the training cost every N updates")
    hyper("--decay-c", "decay_c", type=non_negative_float, default=0.0,
          help="weight decay for the classifier, applied to the U weights")
    hyper("--lrate", "lrate", type=positive_float, default=0.0001,
          help="learning rate for sgd (not used by adadelta and rmsprop)")
    hyper("--n-words", "n_words", type=vocabulary_size, default=10000, help="vocabulary size")
    hyper("--optimizer", "optimizer", choices=list(OPTIMISERS), default="adadelta",
          help="sgd is very hard to use and not recommended")
    hyper("--saveto", "saveto", default="lstm_model.npz",
          help="the best model is saved there (its options in <saveto>.pkl); '' saves nothing")
    hyper("--valid-freq", "validFreq", type=period, default=370,
          help="compute the validation error every N updates (-1: once per epoch)")
    hyper("--save-freq", "saveFreq", type=period, default=1110,
          help="save the parameters every N updates (-1: once per epoch)")
    hyper("--maxlen", "maxlen", type=non_negative_int, default=100,
          help="training reviews this long or longer are left out (0: keep all)")
    hyper("--batch-size", "batch_size", type=positive_int, default=16, help="the batch size during training")
    hyper("--valid-batch-size", "valid_batch_size", type=positive_int, default=64,
          help="the batch size for the validation and test sets")
    hyper("--noise-std", "noise_std", type=float, default=0.0, help="unused, as in the original")
    hyper("--use-dropout", "use_dropout", action=argparse.BooleanOptionalAction, default=True,
          help="dropout on the pooled LSTM output (without: slightly faster, worse test error)")
    hyper("--reload-model", "reload_model", type=Path, default=None,
          help="path of a saved .npz model to start from")
    hyper("--test-size", "test_size", type=int, default=500,
          help="if > 0, evaluate on a random subset of this many test reviews")

    run = parser.add_argument_group("data, randomness and precision")
    run.add_argument("--protocol", choices=PROTOCOLS, default="tutorial",
                     help="tutorial: the original's splits (default); paper: train and test swapped (Wang et al., footnote 4)")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="folder holding imdb.pkl (default: $DLTUTORIALS_DATA or the project's data/)")
    run.add_argument("--seed", type=positive_int, default=123, help="seed of the numpy RandomState and of the dropout stream, > 0: the MRG stream refuses 0 (default: 123, the original's)")
    run.add_argument("--floatX", choices=("float64", "float32"), default="float64", help="Aesara float type (default: float64)")

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--sampler", choices=SAMPLERS, default=None,
                          help="uniform: a fresh shuffle per epoch (the original); replacement: N i.i.d. uniform "
                               "draws per epoch (default: uniform)")
    sampling.add_argument("--is", dest="importance_sampling", action="store_true",
                          help="importance sampling with Fast Importance Mining's distribution P, weights 1/(N p_i)")
    sampling.add_argument("--importance", type=Path, default=None,
                          help="with --is: the FIM importance file to load (mined and saved there if absent)")
    sampling.add_argument("--score", choices=SCORE_KINDS, default=None,
                          help="with --is: which FIM score makes P (default: norm, the paper's eq. 28)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.importance_sampling and args.sampler not in (None, "importance"):
        parser.error(f"--is samples by importance; it cannot be combined with --sampler {args.sampler}")
    if not args.importance_sampling and (args.importance is not None or args.score is not None):
        parser.error("--importance and --score only apply with --is")
    args.sampler = "importance" if args.importance_sampling else (args.sampler or "uniform")
    return args


HYPERPARAMETERS = (
    "dim_proj", "patience", "max_epochs", "dispFreq", "decay_c", "lrate", "n_words", "optimizer", "saveto",
    "validFreq", "saveFreq", "maxlen", "batch_size", "valid_batch_size", "noise_std", "use_dropout",
    "reload_model", "test_size", "protocol", "data_dir", "seed", "sampler",
)


def fim_importance(args: argparse.Namespace):
    """The `--is` hook: an `ImportanceProvider` giving FIM's P once the training set and W(0) exist.

    FIM for the LSTM lives in `dltutorials_is.fim_lstm` (not in this script).
    """
    try:
        from dltutorials_is.fim_lstm import load_or_mine_lstm_importance
    except ImportError as error:
        if error.name not in ("dltutorials_is.fim_lstm", None):
            raise
        sys.exit("error: --is needs Fast Importance Mining for the LSTM (dltutorials_is/fim_lstm.py), "
                 "which this version does not have yet; train without --is")

    def provider(train, initial_params, model_options):
        return load_or_mine_lstm_importance(
            args.importance, train=train, initial_params=initial_params, options=model_options, score=args.score
        )

    return provider


def main(argv=None) -> int:
    args = parse_args(argv)
    aesara.config.floatX = args.floatX  # before any graph is built
    hyperparameters = {name: getattr(args, name) for name in HYPERPARAMETERS}
    hyperparameters["reload_model"] = args.reload_model and str(args.reload_model)
    p = fim_importance(args) if args.importance_sampling else None
    try:
        errors = train_lstm(**hyperparameters, p=p)
    except (DataError, ModelFileError, FIMError) as error:
        sys.exit(f"error: {error}")
    return 1 if errors == DIVERGED else 0


if __name__ == "__main__":
    sys.exit(main())
