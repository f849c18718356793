"""python -m dltutorials_is.replicate: run a figure's grid, plot it, or write REPLICATION.md.

    python -m dltutorials_is.replicate fig4 --epochs 5 --train-subset 2000 --seeds 1 2 3 --n-jobs 2
    python -m dltutorials_is.replicate fig6 --epochs 20 --n-jobs 2
    python -m dltutorials_is.replicate report --fig4 runs/paper_scale/fig4 --fig6 runs/paper_scale/fig6 --summary docs/replication/summary.md
    python -m dltutorials_is.replicate fig6 --scheduler tcp://HOST:8786 --n-jobs -1   # on a dask cluster
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dltutorials_is.cluster import SCHEDULER_HELP, parallel_backend
from dltutorials_is.errors import entry_point
from dltutorials_is.flags import (
    FLOAT_TYPES,
    add_on_bad_argument,
    cell,
    lstm_seed,
    n_jobs,
    numpy_seed,
    positive_float,
    positive_int,
)
from dltutorials_is.io import check_writable, check_writable_dir
from dltutorials_is.replicate.backends import make_backend
from dltutorials_is.replicate.grid import run_grid
from dltutorials_is.replicate.plots import plot_grid
from dltutorials_is.replicate.report import write_report
from dltutorials_is.replicate.runs import load_grid
from dltutorials_is.replicate.specs import ARMS, DEFAULT_ARMS, FIGURES, FigureConfig, grid_specs

#: where the grids go when --out is not given, and where report looks for them
DEFAULT_GRIDS = Path("runs/replication")
#: fig4's seeds also seed the LSTM's MRG dropout stream (1 and up); fig6's a numpy RandomState.
SEED_TYPES = {"fig4": lstm_seed, "fig6": numpy_seed}


def _parse_cells(args, config: FigureConfig) -> list[tuple[int, float]]:
    if args.cells:
        return list(args.cells)
    batch_sizes = args.batch_sizes or sorted({b for b, _ in config.cells})
    if args.step_sizes:
        return [(b, lr) for b in batch_sizes for lr in args.step_sizes]
    return [(b, lr) for b, lr in config.cells if b in batch_sizes]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dltutorials_is.replicate",
                                     description="Replicate the paper's Figures 4 and 6 as resumable grids.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, config in FIGURES.items():
        p = sub.add_parser(name, help=config.title)
        p.add_argument("--epochs", type=positive_int, default=config.epochs)
        p.add_argument("--train-subset", type=positive_int, default=None, metavar="N",
                       help="train on N samples only (default: the whole training set)")
        p.add_argument("--subset-mode", choices=("random", "first"), default="random",
                       help="which N: fixed random ones (RandomState(0), the same for every run) or the first N")
        p.add_argument("--eval-subset", type=positive_int, default=None, metavar="N",
                       help="evaluate each per-epoch metric on N fixed random samples of its set (default: all)")
        p.add_argument("--seeds", type=SEED_TYPES[name], nargs="+", default=[1, 2, 3],
                       help="(fig4: positive, they seed MRG streams too)")
        p.add_argument("--step-sizes", type=positive_float, nargs="+", help="override the step sizes (every batch size)")
        p.add_argument("--batch-sizes", type=positive_int, nargs="+", help="restrict/override the batch sizes")
        p.add_argument("--cells", type=cell, nargs="+", metavar="BATCH:STEP", help="explicit cells, e.g. 50:0.3 100:0.003")
        p.add_argument("--arms", nargs="+", choices=ARMS, default=list(DEFAULT_ARMS), metavar="ARM",
                       help=f"of {', '.join(ARMS)} (default: {' '.join(DEFAULT_ARMS)})")
        p.add_argument("--n-jobs", type=n_jobs, default=1,
                       help="runs trained at once: processes here, or tasks on the --scheduler's workers "
                            "(-1: as many as there are cores or workers) (default: %(default)s)")
        p.add_argument("--scheduler", metavar="ADDRESS", default=None, help=SCHEDULER_HELP)
        p.add_argument("--out", type=Path, default=DEFAULT_GRIDS / name)
        p.add_argument("--data-dir", type=Path, default=None)
        p.add_argument("--floatX", choices=FLOAT_TYPES, default="float64")
        p.add_argument("--no-plots", action="store_true")
        if name == "fig6":
            add_on_bad_argument(p)
    p = sub.add_parser("plot", help="plot a finished (or partial) grid")
    p.add_argument("out", type=Path)
    p.add_argument("--figures", type=Path, default=None, help="PNG directory (default: <out>/plots)")
    p = sub.add_parser("report", help="write REPLICATION.md and its figures from the grids' logs")
    for name in FIGURES:
        p.add_argument(f"--{name}", type=Path, nargs="+", default=None, metavar="GRID",
                       help=f"the grid folder(s), a section each, in this order (default: {DEFAULT_GRIDS / name}, "
                            "reported as not run if it has no logs)")
    p.add_argument("--output", type=Path, default=Path("REPLICATION.md"))
    p.add_argument("--figures", type=Path, default=Path("docs/replication"))
    p.add_argument("--summary", type=Path, default=None,
                   help="hand-written markdown placed before the generated sections (e.g. docs/replication/summary.md)")
    return parser


def _report_grids(parser: argparse.ArgumentParser, args) -> dict[str, list[Path]]:
    """Each figure's grid folders; a mistyped folder, or no logs anywhere, stops the report before it
    overwrites REPLICATION.md with sections that say "not run"."""
    grids = {}
    for name in FIGURES:
        given = getattr(args, name)
        for out in given or []:
            if not out.is_dir():
                parser.error(f"--{name} {out}: no such grid folder")
        grids[name] = given or [DEFAULT_GRIDS / name]
    if not any(load_grid(out) for outs in grids.values() for out in outs):
        parser.error(f"no run logs under {', '.join(str(o) for outs in grids.values() for o in outs)}: nothing to "
                     f"report ({args.output} left as it was); name the grids with --fig4 and --fig6")
    return grids


@entry_point
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "plot":
        if not args.out.is_dir():
            parser.error(f"{args.out}: no such grid folder")
        figures = check_writable_dir(args.figures or args.out / "plots", "--figures")
        if not load_grid(args.out):
            parser.error(f"no run logs under {args.out}: nothing to plot (a grid folder holds runs/<run>/log.jsonl)")
        for path in plot_grid(args.out, figures):
            print(path)
        return 0
    if args.command == "report":
        if args.summary is not None and not args.summary.is_file():
            parser.error(f"--summary {args.summary}: no such file")
        check_writable(args.output, "--output")
        check_writable_dir(args.figures, "--figures")
        write_report(_report_grids(parser, args), args.output, args.figures, args.summary)
        print(f"wrote {args.output} and figures in {args.figures}")
        return 0

    config = FIGURES[args.command]
    check_writable_dir(args.out, "--out")
    if not args.no_plots:
        check_writable_dir(args.out / "plots", "--out")
    backend = make_backend(args.command, data_dir=args.data_dir, floatX=args.floatX,
                           on_bad=getattr(args, "on_bad", "error"))
    backend.check_data()
    specs = grid_specs(args.command, _parse_cells(args, config), args.arms, args.seeds, args.epochs,
                       args.train_subset, args.subset_mode, args.eval_subset)
    command = "python -m dltutorials_is.replicate " + " ".join(shlex.quote(a) for a in argv)
    with parallel_backend(None, args.scheduler, args.n_jobs) as parallel:
        statuses = run_grid(backend, specs, args.out, n_jobs=args.n_jobs, command=command, parallel=parallel)
    failed = {k: v for k, v in statuses.items() if v.startswith("failed")}
    runs = [v for k, v in statuses.items() if not k.startswith("fim:")]
    print(f"{args.out}: {len(specs)} runs: {runs.count('done')} finished now, "
          f"{runs.count('skipped')} finished before, {len(failed)} failed")
    for status in failed.values():
        print("  " + status, file=sys.stderr)
    if not args.no_plots:
        for path in plot_grid(args.out, args.out / "plots"):
            print(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
