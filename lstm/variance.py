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
from collections import OrderedDict
from pathlib import Path

import numpy as np
import aesara
import aesara.tensor as at

from dltutorials_is import fim
from dltutorials_is.datasets.download import DataError
from dltutorials_is.datasets.imdb import PROTOCOLS
from dltutorials_is.fim_lstm import (
    BASES,
    LstmFimSpec,
    default_importance_path,
    init_fingerprint,
    initial_state,
    train_fingerprint,
)
from dltutorials_is.graphs.lstm import ModelFileError, build_model, cell_input_weights, load_params, random_stream, to_shared
from dltutorials_is.variance import format_variance, gradient_variance


def per_review_gradient(train, params: OrderedDict, options: dict):
    """i → {parameter name: gradient of review i's loss}, from the tutorial's graph at batch 1."""
    tparams = to_shared(params)
    model = build_model(tparams, options, random_stream(options["seed"]))
    model.use_noise.set_value(np.asarray(0.0, dtype=aesara.config.floatX))
    f_grad = aesara.function(model.inputs, at.grad(model.cost, wrt=list(tparams.values())), name="f_grad")
    one = np.ones(1, dtype=aesara.config.floatX)

    def gradient(i):
        x = np.asarray(train[0][i], dtype="int64")[:, None]
        mask = np.ones(x.shape, dtype=aesara.config.floatX)
        return OrderedDict(zip(tparams, f_grad(x, mask, np.array([train[1][i]], dtype="int64"), one)))

    return gradient


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="tutorial")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--dim-proj", type=int, default=128)
    parser.add_argument("--n-words", type=int, default=10000)
    parser.add_argument("--maxlen", type=int, default=100)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--use-dropout", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--floatX", choices=("float64", "float32"), default="float64")
    parser.add_argument("--importance", type=Path, default=None, help="FIM file (default: lstm/fim.py's name)")
    parser.add_argument("--score", choices=fim.SCORE_KINDS, nargs="+", default=["norm"],
                        help="one or more score kinds, one table each (default: norm)")
    parser.add_argument("--base", default="Wc", help="which base matrix's scores make P (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=None,
                        help="a saved model (.npz from lstm/train.py) to take gradients at (default: W(0))")
    parser.add_argument("--samples", type=int, default=500, help="M random training reviews (default: %(default)s)")
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--mine-subset", action="store_true",
                        help="no importance file: mine FIM's scores of the M reviews now (default ε, λ; all cores)")
    args = parser.parse_args(argv)
    aesara.config.floatX = args.floatX

    options = {"protocol": args.protocol, "n_words": args.n_words, "maxlen": args.maxlen,
               "test_size": args.test_size, "dim_proj": args.dim_proj, "use_dropout": args.use_dropout,
               "seed": args.seed}
    try:
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
            ps = {score: fim.load_importance(path, train_fingerprint(train), len(train[0]), score=score,
                                             base=args.base, init_fingerprint=init_fingerprint(params))
                  for score in args.score}
            subset = np.random.RandomState(args.subset_seed).choice(len(train[0]), m, replace=False)
        where = "W(0)"
        if args.params:
            params = load_params(args.params, params)
            where = str(args.params)
    except (DataError, fim.FIMError, ModelFileError, ValueError) as error:
        sys.exit(f"error: {error}")
    dim = args.dim_proj
    views = {"Wc": lambda g: cell_input_weights(g["lstm_W"], dim), "lstm_W": lambda g: g["lstm_W"],
             "lstm_U": lambda g: g["lstm_U"], "Wemb": lambda g: g["Wemb"], "U": lambda g: g["U"]}
    gradient = per_review_gradient(train, params, options)
    for score, p in ps.items():
        rows = gradient_variance(gradient, subset, p, blocks=views, progress=True)
        print(f"gradients at {where}; P = {score} scores of {args.base}")
        print(format_variance(rows, m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
