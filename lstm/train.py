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
from functools import partial
from pathlib import Path

import aesara

from dltutorials_is.errors import OutputError, entry_point
from dltutorials_is.fim.driver import SCORE_KINDS, other_score_kinds
from dltutorials_is.fim.lstm import default_importance_path, load_or_mine_lstm_importance
from dltutorials_is.flags import (
    TwoSpellingsParser,
    add_both_spellings,
    add_lstm_model_arguments,
    lstm_run_options,
    non_negative_float,
    period,
    positive_float,
    positive_int,
)
from dltutorials_is.graphs.lstm import ENCODERS, ModelFileError
from dltutorials_is.io import check_writable
from dltutorials_is.loop import TrainingDiverged
from dltutorials_is.optimisers import OPTIMISERS
from dltutorials_is.tutorials.lstm import DIVERGED, model_path, options_path, train_lstm

SAMPLERS = ("uniform", "replacement")  # --is gives the third, "importance"


def build_parser() -> argparse.ArgumentParser:
    parser = TwoSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("hyperparameters of the original train_lstm")
    run = parser.add_argument_group("data, randomness and precision")
    add_lstm_model_arguments(model, run)
    hyper = partial(add_both_spellings, model)  # a train_lstm hyperparameter, spelt both ways
    hyper("--patience", "patience", type=positive_int, default=10,
          help="validations without improvement before early stopping (the original calls them epochs)")
    hyper("--max-epochs", "max_epochs", type=positive_int, default=100, help="the maximum number of epochs to run")
    hyper("--disp-freq", "dispFreq", type=positive_int, default=10,
          help="display the training cost every N updates")
    hyper("--lrate", "lrate", type=positive_float, default=0.0001,
          help="learning rate for sgd (not used by adadelta and rmsprop)")
    hyper("--optimizer", "optimizer", choices=list(OPTIMISERS), default="adadelta",
          help="sgd is very hard to use and not recommended")
    hyper("--saveto", "saveto", default="lstm_model.npz",
          help="the best model is saved there (its options in <saveto>.pkl); '' saves nothing")
    hyper("--valid-freq", "validFreq", type=period, default=370,
          help="compute the validation error every N updates (-1: once per epoch)")
    hyper("--save-freq", "saveFreq", type=period, default=1110,
          help="save the parameters every N updates (-1: once per epoch)")
    hyper("--batch-size", "batch_size", type=positive_int, default=16, help="the batch size during training")
    hyper("--valid-batch-size", "valid_batch_size", type=positive_int, default=64,
          help="the batch size for the validation and test sets")
    hyper("--noise-std", "noise_std", type=non_negative_float, default=0.0, help="unused, as in the original")
    hyper("--reload-model", "reload_model", type=Path, default=None,
          help="path of a saved .npz model to start from")
    hyper("--graph", "graph", choices=list(ENCODERS), default="fast",
          help="fast: the tutorial's LSTM over packed minibatches, no padded step computed (the same numbers to "
               "rounding); tutorial: the original's scan graph over padded minibatches")

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
    "reload_model", "test_size", "protocol", "data_dir", "seed", "sampler", "graph",
)


def fim_importance(args: argparse.Namespace):
    """The `--is` hook: an `ImportanceProvider` giving FIM's P once the training set and W(0) exist."""

    def provider(train, initial_params, model_options):
        p = load_or_mine_lstm_importance(
            args.importance, train=train, initial_params=initial_params, options=model_options, score=args.score
        )
        path = args.importance or default_importance_path(model_options)
        return p, other_score_kinds(path, "Wc", args.score or "norm")  # named if P is uniform

    return provider


def check_files(args: argparse.Namespace) -> None:
    """Before any data is loaded: every output can be written, and the model to reload exists."""
    if args.saveto:
        if args.saveto.endswith("/") or Path(args.saveto).is_dir():  # savez would write <folder>/.npz, hidden
            raise OutputError(f"cannot write --saveto {args.saveto}: it is a folder — give the name of a file, "
                              f"such as {Path(args.saveto) / 'lstm_model.npz'}")
        check_writable(model_path(args.saveto), "--saveto")
        check_writable(options_path(args.saveto), "--saveto")
    if args.importance_sampling:  # mined and saved there if absent
        importance = args.importance or default_importance_path(lstm_run_options(args))
        if not importance.exists():
            check_writable(importance, "--importance")
    if args.reload_model is not None and not args.reload_model.is_file():
        raise ModelFileError(f"--reload-model {args.reload_model}: no such file — give the path of a model saved "
                             "by lstm/train.py (--saveto)")


@entry_point
def main(argv=None) -> int:
    args = parse_args(argv)
    aesara.config.floatX = args.floatX  # before any graph is built
    check_files(args)
    hyperparameters = {name: getattr(args, name) for name in HYPERPARAMETERS}
    hyperparameters["reload_model"] = args.reload_model and str(args.reload_model)
    p = fim_importance(args) if args.importance_sampling else None
    if train_lstm(**hyperparameters, p=p) == DIVERGED:
        raise TrainingDiverged("the training diverged: the cost or the parameters became NaN or infinite (the "
                               "lines above say where, and what was saved) — lower --lrate (sgd), or train with "
                               "another --optimizer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
