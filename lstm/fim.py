"""Fast Importance Mining (Wang et al., Algorithm 2) for the LSTM sentiment classifier.

Trains a private copy of the classifier on each training review alone, from the same W(0) as
`lstm/train.py` with the same seed and model flags, and saves the importance file that
`lstm/train.py --is` loads (same default file name, so `--is` finds it). Killed or interrupted,
the same command resumes where it stopped. `--pilot K` mines K random reviews only and prints
the P summary and a time estimate, without saving anything.

    python lstm/fim.py --protocol paper --pilot 200     # look before committing
    python lstm/fim.py --protocol paper                 # all reviews, both cores
    python lstm/train.py --protocol paper --is          # train with P
"""
from __future__ import annotations

import dltutorials_is  # noqa: F401  (first: it points Aesara at a real BLAS before aesara loads)

import argparse
import sys
from pathlib import Path

import aesara

from dltutorials_is.cluster import SCHEDULER_HELP, parallel_backend
from dltutorials_is.errors import entry_point
from dltutorials_is.fim import driver as fim
from dltutorials_is.fim.lstm import BASES, DEFAULTS, TRAINERS, LstmFimSpec, default_importance_path, initial_state
from dltutorials_is.flags import (TwoSpellingsParser, add_lstm_model_arguments, lstm_run_options, n_jobs, positive_float,
                                  positive_int)


def build_parser() -> argparse.ArgumentParser:
    parser = TwoSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("the training run whose P this is (same flags and defaults as lstm/train.py)")
    add_lstm_model_arguments(model, model)

    mining = parser.add_argument_group("FIM")
    mining.add_argument("--eps", type=positive_float, default=DEFAULTS["eps"],
                        help="private training stops after the first step with loss < eps (default: %(default)s)")
    mining.add_argument("--step-size", type=positive_float, default=DEFAULTS["lr"],
                        help="private SGD step size λ (default: %(default)s)")
    mining.add_argument("--max-iters", type=positive_int, default=DEFAULTS["max_iters"], help="(default: %(default)s)")
    mining.add_argument("--base", choices=BASES, default="Wc",
                        help="base matrix of the paper's P (all are scored; U is the classifier's) (default: %(default)s)")
    mining.add_argument("--norm", choices=fim.NORM_KINDS, default=DEFAULTS["norm"], help="(default: %(default)s)")
    mining.add_argument("--trainer", choices=TRAINERS, default="fast",
                        help="fast, or plain: the tutorial's graph at batch 1 (same numbers, slower)")
    mining.add_argument("--out", type=Path, default=None,
                        help="importance file (default: the name lstm/train.py --is looks for)")
    mining.add_argument("--pilot", type=positive_int, default=None, metavar="K", help="mine K random reviews only")

    parallel = parser.add_argument_group("parallelism")
    parallel.add_argument("--n-jobs", type=n_jobs, default=-1, help="joblib workers, -1: all cores (default: all cores)")
    parallel.add_argument("--backend", default=None,
                          help="joblib backend: loky (default), threading, dask (a local dask cluster), …")
    parallel.add_argument("--scheduler", "--dask-scheduler", metavar="ADDRESS", default=None, help=SCHEDULER_HELP)
    parallel.add_argument("--shard-size", type=positive_int, default=64,
                          help="reviews per saved shard, the most a crash can lose per worker (default: %(default)s)")
    return parser


@entry_point
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    aesara.config.floatX = args.floatX
    options = lstm_run_options(args)
    out = args.out or default_importance_path(options)
    if args.pilot is None:  # a pilot saves nothing
        fim.check_outputs(out, "--out")
    with parallel_backend(args.backend, args.scheduler, args.n_jobs) as backend:  # a bad --scheduler fails first
        train, params = initial_state(options, args.seed, args.data_dir)
        bases = (args.base, *[b for b in BASES if b != args.base])
        spec = LstmFimSpec(train, params, options, eps=args.eps, lr=args.step_size, max_iters=args.max_iters,
                           norm=args.norm, trainer=args.trainer, bases=bases)
        print(f"FIM over {spec.n_samples} training reviews ({args.protocol} protocol), ε = {args.eps}, "
              f"λ = {args.step_size}, base {args.base}, {args.norm} norm, {args.trainer} trainer")
        fim.mine(spec, out, n_jobs=args.n_jobs, backend=backend, shard_size=args.shard_size, pilot=args.pilot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
