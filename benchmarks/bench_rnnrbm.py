"""Seconds per training epoch of the RNN-RBM: the fast graph, the tutorial's scan graph and the
tutorial's own rnnrbm.py side by side on the same chunks; IS epoch, evaluation and FIM of the port.

On the real Nottingham training set (694 songs), the tutorial's model (150 hidden, 100 recurrent,
CD-15, seed 0xbeef), for each --floatX and --batch-sizes:

* compile: seconds to build and compile each arm's training function;
* training epoch, side by side: one training update on each of --chunks chunks drawn at random
  without replacement, by each arm in turn: our `RnnRbmModel.train_step` (weight 1) with the fast
  graph (`--graph fast`, the default) and with the tutorial's graph (`--graph tutorial`), and the
  original's own `RnnRbm.train_function` (its rnnrbm.py from --original, run under Aesara through
  tools/original_shim). The arms take turns within each repeat (interleaved), so that a change in the
  machine's load hits all of them; seconds per epoch = the median over repeats of the arm's mean
  seconds per update x N (an epoch visits each of the N chunks once; extrapolated). Then the ratios;
* IS epoch: the fast step, with the IS weights, on the first --chunks of an `ImportanceSampler`
  epoch's N i.i.d. draws from P; seconds per epoch = mean seconds per update x N. P is a mined FIM
  artefact given with --importance when one matches the training set, otherwise the uniform P (then
  the arm only differs from the uniform one by sampling with replacement, which the line says);
* evaluation: the per-epoch no-update pass (`evaluate_function`) over the N training chunks, fast
  and tutorial graph interleaved, extrapolated the same way from the training arms' chunks;
* FIM: `rnnrbm/fim.py`'s private trainer (default eps, lr, max_iters, all bases scored, fast graph)
  on --fim-chunks random chunks; seconds per chunk (their mean), private steps per chunk, and the
  single-process wall time of FIM over all N chunks extrapolated from them.

Every figure is the median over --repeats repeats of the same chunks, and each is printed with the
load average at the time (`os.getloadavg`, what `uptime` shows): the machine may be shared.

    python benchmarks/bench_rnnrbm.py
    python benchmarks/bench_rnnrbm.py --floatX float64 float32 --batch-sizes 50 100 --chunks 100 --repeats 5
    python benchmarks/bench_rnnrbm.py --original ../shared/originals --no-fim
    python benchmarks/bench_rnnrbm.py --importance fim_rnnrbm_seed48879_b100_h150_u100_dt0.3_r21-109.pkl
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout
SHIM = REPO_ROOT / "tools" / "original_shim"
DEFAULT_ORIGINAL = REPO_ROOT.parent / "shared" / "originals"  # where tools/diff_against_original.py looks
GRAPHS = ("fast", "tutorial")

from dltutorials_is.datasets.download import default_data_dir  # noqa: E402  (configures Aesara's BLAS first)
from dltutorials_is.datasets.nottingham import load_nottingham  # noqa: E402
from dltutorials_is.datasets.chunks import chunk_arrays, training_fingerprint  # noqa: E402
from dltutorials_is.fim.driver import FIMError, load_importance  # noqa: E402
from dltutorials_is.fim.rnnrbm import RnnRbmFimSpec, init_fingerprint, run_options  # noqa: E402
from dltutorials_is.models.rnnrbm import RnnRbmConfig, RnnRbmModel, initial_values  # noqa: E402
from dltutorials_is.sampling.samplers import ImportanceSampler  # noqa: E402


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def median_seconds(work, repeats: int) -> float:
    return interleaved_medians({"work": work}, repeats)["work"]


def interleaved_medians(work: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each work over `repeats` rounds, the works taking turns within a round."""
    times: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(repeats):
        for name, run in work.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def original_module(folder: Path):
    """The tutorial's own rnnrbm.py from `folder`, importable under Aesara through the shim."""
    sys.path[:0] = [str(SHIM), str(SHIM / "fallback")]
    spec = importlib.util.spec_from_file_location("original_rnnrbm", folder / "rnnrbm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # it seeds numpy's global generator, which nothing here uses
    return module


def training_arms(config: RnnRbmConfig, arrays, original) -> dict[str, Callable[[np.ndarray], object]]:
    """Arm name -> one training update on a chunk, each arm compiled (the time printed)."""
    arms = {}
    for graph in GRAPHS:
        start = time.perf_counter()
        model = RnnRbmModel(replace(config, graph=graph), np.random.RandomState(config.seed), arrays)
        model.train_function, model.evaluate_function
        print(f"  compile, {graph} graph (training + evaluation functions): {time.perf_counter() - start:.1f} s   "
              f"[{load()}]", flush=True)
        arms[graph] = model
    if original is not None:
        start = time.perf_counter()
        rbm = original.RnnRbm(config.n_hidden, config.n_hidden_recurrent, config.lr, config.r, config.dt)
        print(f"  compile, the original's RnnRbm (training + generation functions): "
              f"{time.perf_counter() - start:.1f} s   [{load()}]", flush=True)
        arms["original"] = rbm
    return arms


def matching_p(paths: list[Path], songs, config: RnnRbmConfig, n: int) -> tuple[np.ndarray, str]:
    """P of the first artefact mined for this chunked training set and W(0), else the uniform P."""
    for path in paths:
        try:
            p = load_importance(path, training_fingerprint(songs, config.batch_size), n,
                                init_fingerprint=init_fingerprint(initial_values(config)), expected=run_options(config))
            return p, f"P from {path}"
        except FIMError:
            continue
    return np.full(n, 1.0 / n), "P uniform (no --importance artefact matches): draws i.i.d., weights 1"


def bench_training(config: RnnRbmConfig, songs, args, rng: np.random.RandomState, original) -> None:
    arrays = chunk_arrays(songs, config.batch_size)
    n = len(arrays)
    frames = np.array([len(a) for a in arrays])
    print(f"  {n} chunks of <= {config.batch_size} frames (mean {frames.mean():.1f} frames)")
    arms = training_arms(config, arrays, original)
    models = {graph: arms[graph] for graph in GRAPHS}
    one = np.ones(1)
    uniform = rng.choice(n, size=min(args.chunks, n), replace=False)

    def updates(arm):
        if arm == "original":
            return lambda: [arms[arm].train_function(arrays[i]) for i in uniform]
        return lambda: [arms[arm].train_step(np.array([i]), one) for i in uniform]

    per_update = {arm: seconds / len(uniform) for arm, seconds in
                  interleaved_medians({arm: updates(arm) for arm in arms}, args.repeats).items()}
    print(f"  training epoch, side by side ({n} updates, extrapolated from {len(uniform)} random chunks of mean "
          f"{frames[uniform].mean():.1f} frames, arms interleaved)   [{load()}]")
    for arm, seconds in per_update.items():
        print(f"    {arm:>8}: {seconds * n:6.1f} s per epoch  ({seconds * 1e3:.2f} ms per update)")
    pairs = [(a, b) for a, b in (("fast", "tutorial"), ("fast", "original"), ("tutorial", "original")) if b in arms]
    print("    ratios: " + ", ".join(f"{a} / {b} = {per_update[a] / per_update[b]:.3f}" for a, b in pairs))

    p, source = matching_p(args.importance, songs, config, n)
    sampler = ImportanceSampler(p, 1)
    draws = [(int(i[0]), float(w[0])) for i, w in sampler.epoch(rng)[: args.chunks]]
    fast = models["fast"]
    seconds = median_seconds(lambda: [fast.train_step(np.array([i]), np.array([w])) for i, w in draws], args.repeats)
    per_update = seconds / len(draws)
    drawn_frames = frames[[i for i, _ in draws]].mean()
    print(f"  IS epoch (fast graph): {per_update * n:.1f} s  ({per_update * 1e3:.2f} ms per update x {n} draws; "
          f"extrapolated from the first {len(draws)} draws, mean {drawn_frames:.1f} frames; E_P[frames] = "
          f"{p @ frames:.1f}; {source})   [{load()}]")

    per_chunk = {graph: seconds / len(uniform) for graph, seconds in interleaved_medians(
        {graph: (lambda m=model: [m.evaluate_function(arrays[i]) for i in uniform]) for graph, model in models.items()},
        args.repeats).items()}
    print(f"  evaluation pass over the training chunks (extrapolated from the training arms' chunks): " +
          ", ".join(f"{graph} {seconds * n:.1f} s ({seconds * 1e3:.2f} ms per chunk)" for graph, seconds in per_chunk.items())
          + f"; fast / tutorial = {per_chunk['fast'] / per_chunk['tutorial']:.3f}   [{load()}]")


def bench_fim(config: RnnRbmConfig, songs, args, rng: np.random.RandomState) -> None:
    spec = RnnRbmFimSpec(songs, initial_values(config), config)
    start = time.perf_counter()
    run = spec.build()
    print(f"  FIM compile (private trainer, all {len(spec.bases)} bases scored): "
          f"{time.perf_counter() - start:.1f} s   [{load()}]")
    chosen = rng.choice(spec.n_samples, size=min(args.fim_chunks, spec.n_samples), replace=False)
    steps = []
    seconds = median_seconds(lambda: steps.append(sum(run(int(i)).iterations for i in chosen)), args.repeats)
    per_chunk, steps_per_chunk = seconds / len(chosen), steps[0] / len(chosen)
    print(f"  FIM: {per_chunk:.2f} s per chunk ({steps_per_chunk:.1f} private steps per chunk, "
          f"{seconds / steps[0] * 1e3:.1f} ms per step; eps {spec.eps}, lr {spec.lr}, max {spec.max_iters} steps; "
          f"{len(chosen)} random chunks)   [{load()}]")
    print(f"  FIM over all {spec.n_samples} chunks, one process: ~{per_chunk * spec.n_samples / 3600:.2f} h "
          f"(extrapolated; divide by the number of workers)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--floatX", nargs="+", choices=("float64", "float32"), default=["float64"], help="(%(default)s)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[50, 100], help="frames per chunk (%(default)s)")
    p.add_argument("--chunks", type=int, default=60, help="timed updates per training arm (%(default)s)")
    p.add_argument("--fim-chunks", type=int, default=3, help="chunks mined per FIM repeat (%(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per figure; the median is printed (%(default)s)")
    p.add_argument("--importance", type=Path, nargs="*", default=[], help="FIM artefacts to take P from")
    p.add_argument("--original", type=Path, default=DEFAULT_ORIGINAL,
                   help="folder holding the tutorial's own rnnrbm.py (%(default)s; skipped when absent)")
    p.add_argument("--no-fim", dest="fim", action="store_false", help="skip the FIM figures")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="holds Nottingham/ (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the chunk choices (%(default)s)")
    args = p.parse_args(argv)
    if min(args.batch_sizes + [args.chunks, args.fim_chunks, args.repeats]) <= 0:
        p.error("batch sizes, --chunks, --fim-chunks and --repeats must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import aesara

    print(f"aesara {aesara.__version__}, blas__ldflags {aesara.config.blas__ldflags!r}, {os.cpu_count()} CPUs; "
          f"median of {args.repeats} repeats   [{load()}]")
    original = original_module(args.original) if (args.original / "rnnrbm.py").is_file() else None
    print(f"the original: {args.original / 'rnnrbm.py'}" if original else
          f"the original's arm skipped: no rnnrbm.py in {args.original} (give --original)")
    songs64 = load_nottingham(args.data_dir, "train")
    print(f"Nottingham train: {len(songs64)} songs, {sum(len(s) for s in songs64)} frames")
    for floatX in args.floatX:
        aesara.config.floatX = floatX
        songs = [s.astype(floatX) for s in songs64]
        for batch_size in args.batch_sizes:
            config = RnnRbmConfig(batch_size=batch_size, floatX=floatX)
            print(f"{floatX}, batch size {batch_size}:", flush=True)
            bench_training(config, songs, args, np.random.RandomState(args.seed), original)
            if args.fim:
                bench_fim(config, songs, args, np.random.RandomState(args.seed))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
