"""Train the RNN-RBM on Nottingham like the deeplearning.net tutorial, optionally with importance sampling.

    python rnnrbm/train.py                       # the tutorial: 200 epochs, batch 100, lr 0.001
    python rnnrbm/train.py --is                  # IS-SGD with P from Fast Importance Mining
    python rnnrbm/train.py --reload              # continue the run saved at --saveto
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dltutorials_is.datasets.chunks import make_chunks
from dltutorials_is.datasets.download import default_data_dir
from dltutorials_is.datasets.nottingham import load_nottingham
from dltutorials_is.errors import entry_point
from dltutorials_is.fim.driver import SCORE_KINDS, other_score_kinds
from dltutorials_is.fim.rnnrbm import BASES, default_importance_path, load_or_mine_rnnrbm_importance
from dltutorials_is.flags import (add_on_bad_argument, add_rnnrbm_graph_argument, add_rnnrbm_model_arguments, eval_splits,
                                  positive_float, positive_int)
from dltutorials_is.io import check_writable
from dltutorials_is.loop import TrainingDiverged
from dltutorials_is.models.rnnrbm import RnnRbmConfig, RnnRbmModel, initial_values
from dltutorials_is.sampling.samplers import format_p_summary, make_chunk_sampler, uniform_p_warning
from dltutorials_is.tutorials.rnnrbm import CheckpointError, TrainingState, load_model, read_checkpoint, train

DEFAULTS = RnnRbmConfig()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_argument_group("model and training (defaults: the tutorial's)")
    add_rnnrbm_model_arguments(model)
    add_rnnrbm_graph_argument(model, reload=True)
    model.add_argument("--lr", type=positive_float, default=DEFAULTS.lr, help="SGD step size (%(default)s)")
    model.add_argument("--num-epochs", type=positive_int, default=DEFAULTS.num_epochs,
                       help="epochs in all; with --reload, more than the checkpoint has done (%(default)s)")
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, default=default_data_dir(), help="holds Nottingham/ (%(default)s)")
    add_on_bad_argument(data)
    data.add_argument("--max-songs", type=positive_int, default=None, help="use only the first N songs of each split (smoke tests)")
    data.add_argument("--eval-splits", type=eval_splits, default="valid,test",
                      help="splits evaluated after each epoch besides train (comma list of valid and test, '' for none)")
    sampling = p.add_argument_group("sampling")
    sampling.add_argument("--sampler", choices=("uniform", "replacement", "importance"), default=None,
                          help="uniform: the tutorial's song order (default); replacement: N chunks i.i.d. uniform per epoch; "
                               "importance: the same as --is")
    sampling.add_argument("--is", dest="use_is", action="store_true",
                          help="importance sampling: N chunks i.i.d. from FIM's P per epoch, step weights 1/(N p_i)")
    sampling.add_argument("--importance", type=Path, default=None,
                          help="with --is: the FIM artefact holding P (mined and saved there first if absent; "
                               "default: named after the options, see rnnrbm/fim.py)")
    sampling.add_argument("--score", choices=SCORE_KINDS, default=None, help="with --is: which FIM score makes P (default: norm)")
    sampling.add_argument("--base", choices=BASES, default="W", help="with --is: which matrix's score makes P (default: W, the paper's)")
    out = p.add_argument_group("checkpoints and logs")
    out.add_argument("--saveto", type=Path, default=Path("rnnrbm_model.npz"), help="checkpoint written after every epoch (%(default)s)")
    out.add_argument("--reload", action="store_true", help="continue the run saved at --saveto (its options win)")
    out.add_argument("--log", type=Path, default=None, help="JSON-lines metrics (default: <saveto>.jsonl)")
    args = p.parse_args(argv)
    if args.use_is and args.sampler not in (None, "importance"):
        p.error(f"--is samples by importance; it cannot be combined with --sampler {args.sampler}")
    args.sampler = "importance" if args.use_is else (args.sampler or "uniform")
    if args.sampler != "importance" and (args.importance is not None or args.score is not None):
        p.error("--importance and --score only apply with --is")
    args.log = args.log or args.saveto.with_suffix(".jsonl")
    return args


def config_from_args(args) -> RnnRbmConfig:
    return RnnRbmConfig(
        n_hidden=args.n_hidden, n_hidden_recurrent=args.n_hidden_recurrent, lr=args.lr, r=tuple(args.r), dt=args.dt,
        batch_size=args.batch_size, num_epochs=args.num_epochs, k=args.k, seed=args.seed, floatX=args.floatX,
        sampler=args.sampler, graph=args.graph or DEFAULTS.graph,
    )


def load_songs(args, config: RnnRbmConfig, split: str) -> list[np.ndarray]:
    songs = load_nottingham(args.data_dir, split, config.r, config.dt, on_bad=args.on_bad)
    return songs[: args.max_songs] if args.max_songs else songs


def importance_p(args, config: RnnRbmConfig, train_songs) -> np.ndarray:
    """FIM's P over the training chunks for this run's W(0) (mined first if the artefact is absent)."""
    return load_or_mine_rnnrbm_importance(args.importance, train_songs, initial_values(config), config,
                                          score=args.score, base=args.base)


def check_files(args) -> None:
    """Before any data is loaded: the checkpoint, the log and a FIM artefact to be mined can be written, and
    a run to continue is there and not finished."""
    check_writable(args.saveto, "--saveto")
    check_writable(args.log, "--log")
    if args.reload:
        state = read_checkpoint(args.saveto)[3]
        if state.epochs_done >= args.num_epochs:
            raise CheckpointError(f"{args.saveto} has already done {state.epochs_done} of --num-epochs "
                                  f"{args.num_epochs} — pass a larger --num-epochs to train on")
    elif args.sampler == "importance":  # mined and saved there first if absent
        importance = args.importance or default_importance_path(config_from_args(args))
        if not importance.exists():
            check_writable(importance, "--importance")


def kept_checkpoint(path: Path) -> str:
    """What the checkpoint file holds after a run stopped (it is only ever replaced by a good epoch)."""
    if not path.is_file():
        return f"nothing was saved to {path}"
    try:
        return f"{path} keeps its last good checkpoint ({read_checkpoint(path)[3].epochs_done} epoch(s) done)"
    except CheckpointError:
        return f"{path} keeps what it held"


@entry_point
def main(argv=None) -> int:
    args = parse_args(argv)
    import aesara  # here, after dltutorials_is has configured Aesara's BLAS

    check_files(args)
    if args.reload:
        model, state = load_model(args.saveto, graph=args.graph)
        config = model.config
        config.num_epochs = args.num_epochs
        print(f"Reloaded {args.saveto}: {state.epochs_done} epoch(s) done, options {config.to_json()}")
    else:
        config, state = config_from_args(args), TrainingState()
        if args.log.exists() or args.saveto.exists():
            print(f"Starting a new run: {args.saveto} and {args.log} are replaced after its first epoch")
    aesara.config.floatX = config.floatX
    train_songs = load_songs(args, config, "train")
    eval_sets = {s: load_songs(args, config, s) for s in args.eval_splits}
    rng = np.random.RandomState(config.seed)
    if not args.reload:
        model = RnnRbmModel(config, rng)
    chunks = make_chunks(train_songs, config.batch_size)
    print(f"Nottingham train: {len(train_songs)} songs, {sum(len(s) for s in train_songs)} frames, "
          f"{len(chunks)} chunks of <= {config.batch_size} frames; sampler {config.sampler}")
    p = importance_p(args, config, train_songs) if config.sampler == "importance" else None
    if p is not None:
        print(format_p_summary(p))
        others = other_score_kinds(args.importance or default_importance_path(config), args.base, args.score or "norm")
        warning = uniform_p_warning(p, others)
        if warning:
            print(warning)
    sampler = make_chunk_sampler(config.sampler, chunks, p)
    try:
        train(model, train_songs, rng, sampler, eval_sets, state, checkpoint=args.saveto, log_path=args.log,
              replace_log=not args.reload)
    except TrainingDiverged as error:
        what, _, advice = str(error).partition(" — ")
        raise TrainingDiverged(f"{what}; {kept_checkpoint(args.saveto)} — {advice or 'lower --lr and train again'}") from None
    print(f"Saved {args.saveto}; metrics in {args.log}. Generate with: python rnnrbm/generate.py --checkpoint {args.saveto}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
