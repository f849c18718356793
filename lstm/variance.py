"""Does FIM's P reduce the LSTM's gradient variance? An exact check on M training reviews.

Computes each review's gradient with the tutorial's graph at batch size 1 (dropout in its
evaluation mode, so only the *sampling* variance is measured), at W(0) of the run with these
flags or at a saved model (--params), and prints the trace of the one-sample stochastic
gradient's variance under uniform sampling, under P (restricted to the M reviews) and under the
optimal P ∝ ‖g_i‖, for the whole parameter vector and for each base matrix.

    python lstm/variance.py --protocol paper                  # P from lstm/fim.py's default file
    python lstm/variance.py --protocol paper --mine-subset    # P of the M reviews, mined now
"""
from __future__ import annotations

import dltutorials_is  # noqa: F401  (first: it points Aesara at a real BLAS before aesara loads)

import argparse
import sys
from pathlib import Path

import numpy as np
import aesara

from dltutorials_is.errors import entry_point
from dltutorials_is.fim import driver as fim
from dltutorials_is.fim.lstm import (
    BASES,
    LstmFimSpec,
    default_importance_path,
    expected_options,
    init_fingerprint,
    initial_state,
    train_fingerprint,
)
from dltutorials_is.flags import TwoSpellingsParser, add_lstm_model_arguments, lstm_run_options, numpy_seed, positive_int
from dltutorials_is.graphs.lstm import load_params
from dltutorials_is.models.lstm import LstmModel
from dltutorials_is.sampling.variance import format_variance, gradient_variance


def build_parser() -> argparse.ArgumentParser:
    parser = TwoSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("the training run (same flags and defaults as lstm/train.py)")
    add_lstm_model_arguments(model, model)
    parser.add_argument("--importance", type=Path, default=None, help="FIM file (default: lstm/fim.py's name)")
    parser.add_argument("--score", choices=fim.SCORE_KINDS, nargs="+", default=["norm"],
                        help="one or more score kinds, one table each (default: norm)")
    parser.add_argument("--base", choices=BASES, default="Wc", help="which base matrix's scores make P (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=None,
                        help="a saved model (.npz from lstm/train.py) to take gradients at (default: W(0))")
    parser.add_argument("--samples", type=positive_int, default=500,
                        help="M random training reviews (default: %(default)s; all if fewer)")
    parser.add_argument("--subset-seed", type=numpy_seed, default=0, help="which M reviews (default: %(default)s)")
    parser.add_argument("--mine-subset", action="store_true",
                        help="no importance file: mine FIM's scores of the M reviews now (default ε, λ; all cores)")
    return parser


@entry_point
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    aesara.config.floatX = args.floatX

    options = lstm_run_options(args)
    train, params = initial_state(options, args.seed, args.data_dir)
    m = min(args.samples, len(train[0]))
    if args.mine_subset:
        spec = LstmFimSpec(train, params, options, bases=(args.base, *[b for b in BASES if b != args.base]))
        mined = fim.mine(spec, None, pilot=m, pilot_seed=args.subset_seed)
        subset, ps = mined.indices, {}
        for score in args.score:
            ps[score] = np.zeros(len(train[0]))
            ps[score][subset] = mined.p(args.base, score)
    else:
        path = args.importance or default_importance_path(options)
        art = fim.read_artefact(path)
        ps = {score: fim.importance_from(art, path, train_fingerprint(train), len(train[0]), score=score,
                                         base=args.base, init_fingerprint=init_fingerprint(params),
                                         expected=expected_options(options, params))
              for score in args.score}
        print(f"P from {path} ({fim.describe_fim_settings(art['config'])})")
        subset = np.random.RandomState(args.subset_seed).choice(len(train[0]), m, replace=False)
    for score, p in ps.items():
        unusable = int(np.sum(~(np.isfinite(p[subset]) & (p[subset] > 0))))
        if unusable:
            raise fim.FIMError(f"{unusable} of the {m} reviews have a {score} score of {args.base} that is NaN, inf or 0, "
                               "so P cannot weigh them — choose another --score or --base")
    where = "W(0)"
    if args.params:
        params = load_params(args.params, params)
        where = str(args.params)
    model = LstmModel({**options, "ydim": int(np.max(train[1])) + 1}, train, args.seed)
    model.set_params(params)
    views = {base: (lambda g, base=base: model.base_matrices(g)[base]) for base in BASES}
    for score, p in ps.items():
        rows = gradient_variance(model.gradient, subset, p, blocks=views, progress=True)
        print(f"gradients at {where}; P = {score} scores of {args.base}")
        print(format_variance(rows, m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
