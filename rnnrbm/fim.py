"""Fast Importance Mining for the RNN-RBM: P over the training chunks, saved for `rnnrbm/train.py --is`.

    python rnnrbm/fim.py --pilot 20              # 20 random chunks: T_i, P summary, time estimate; saves nothing
    python rnnrbm/fim.py                          # all chunks -> fim_rnnrbm_seed48879_b100_...pkl (resumable)
    python rnnrbm/train.py --is --importance FILE

The model options must match the training run's (same seed: same W(0); same batch size: same chunks).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dltutorials_is.cluster import SCHEDULER_HELP, parallel_backend
from dltutorials_is.datasets.download import default_data_dir
from dltutorials_is.datasets.nottingham import load_nottingham
from dltutorials_is.errors import entry_point
from dltutorials_is.fim import driver as fim
from dltutorials_is.fim.rnnrbm import BASES, DEFAULTS, RnnRbmFimSpec, default_importance_path
from dltutorials_is.flags import (add_on_bad_argument, add_rnnrbm_graph_argument, add_rnnrbm_model_arguments, n_jobs,
                                  positive_float, positive_int)
from dltutorials_is.models.rnnrbm import RnnRbmConfig, initial_values


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_argument_group("the training run's options (they fix the chunks and W(0))")
    add_rnnrbm_model_arguments(model)
    add_rnnrbm_graph_argument(model)
    model.add_argument("--data-dir", type=Path, default=default_data_dir(), help="(%(default)s)")
    model.add_argument("--max-songs", type=positive_int, default=None, help="only the first N training songs (smoke tests)")
    add_on_bad_argument(model)
    mining = p.add_argument_group("FIM")
    mining.add_argument("--eps", type=positive_float, default=DEFAULTS["eps"], help="stop a private run at per-frame cross-entropy < eps, nats (%(default)s)")
    mining.add_argument("--lr", type=positive_float, default=DEFAULTS["lr"], help="private SGD step size (%(default)s)")
    mining.add_argument("--max-iters", type=positive_int, default=DEFAULTS["max_iters"], help="(%(default)s)")
    mining.add_argument("--norm", choices=fim.NORM_KINDS, default=DEFAULTS["norm"], help="(%(default)s)")
    mining.add_argument("--bases", nargs="+", choices=BASES, default=list(BASES),
                        help="matrices to score; the first is the artefact's default (%(default)s)")
    mining.add_argument("--n-jobs", "--jobs", dest="jobs", type=n_jobs, default=-1, help="parallel workers, -1 = all cores (%(default)s)")
    mining.add_argument("--backend", default=None,
                        help="joblib backend: loky (default), threading, dask (a local dask cluster)")
    mining.add_argument("--scheduler", metavar="ADDRESS", default=None, help=SCHEDULER_HELP)
    mining.add_argument("--shard-size", type=positive_int, default=32, help="chunks per resumable shard (%(default)s)")
    mining.add_argument("--pilot", type=positive_int, default=None, help="mine only N random chunks and print the summary")
    mining.add_argument("--out", type=Path, default=None, help="artefact path (default: named after the options)")
    return p.parse_args(argv)


@entry_point
def main(argv=None) -> int:
    args = parse_args(argv)
    config = RnnRbmConfig(n_hidden=args.n_hidden, n_hidden_recurrent=args.n_hidden_recurrent, r=tuple(args.r),
                          dt=args.dt, batch_size=args.batch_size, k=args.k, seed=args.seed, floatX=args.floatX,
                          graph=args.graph)
    out = args.out or default_importance_path(config)
    if not args.pilot:  # a pilot saves nothing
        fim.check_outputs(out, "--out")
    with parallel_backend(args.backend, args.scheduler, args.jobs) as backend:  # a bad --scheduler fails first
        songs = load_nottingham(args.data_dir, "train", config.r, config.dt, on_bad=args.on_bad, dtype=config.floatX)
        songs = songs[: args.max_songs] if args.max_songs else songs
        spec = RnnRbmFimSpec(songs, initial_values(config), config, eps=args.eps, lr=args.lr,
                             max_iters=args.max_iters, norm=args.norm, bases=args.bases)
        fim.mine(spec, None if args.pilot else out, n_jobs=args.jobs, backend=backend,
                 shard_size=args.shard_size, pilot=args.pilot)
    if not args.pilot:
        print(f"Train with it: python rnnrbm/train.py --is --importance {out} (and the same model options)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
