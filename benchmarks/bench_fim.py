"""How fast is FIM for the LSTM, and what does it cost next to training?

Prints, on the real IMDB data (default: the paper protocol, 25,000 training reviews), for every --floatX:

1. the fast private trainer vs the tutorial's own compiled SGD step at batch size 1 ("plain", the
   reference) on the same --plain-reviews random reviews, same ε and λ, interleaved review by review
   in one process so both see the same machine load: seconds per review and per private step, the
   ratio, whether T_i are the same and the largest relative difference between their scores. The plain
   trainer runs on this subsample of the sample only, because it is several times slower;
2. the fast trainer on all --reviews random reviews (the plain subsample among them), one process:
   seconds per review, the T_i distribution;
3. the parallel efficiency E of --n-jobs workers: the sample in --blocks blocks, each run in one process
   (2.'s timings) and then on the workers (compiled beforehand), alternating, so both see the same load;
   E = one-process seconds / (workers × wall seconds) per block, the median is used. FIM over all N
   reviews is extrapolated as (mean one-process seconds per review) × N / workers / E. Each block is
   mined in chunks of --chunk reviews; the idle tail of a block's last chunks counts against E, so it is
   pessimistic next to a full run's (391 shards, one tail);
3b. a bound: each private step of an LSTM of width d does at least
   six products of 2·d·4d flops per token (forward: input and recurrent; backward: the gradients of W, U,
   the inputs and the previous state), so FIM over all N reviews needs Σ T_i·len_i × 12·d·4d flops
   (extrapolated from the sample); divided by this BLAS's best rate (a 1024³ product, CPU time, one
   thread) and the workers, that is the fewest minutes an exact FIM can take here unless its products
   run faster than this BLAS runs a large square one;
4. the time of one uniform training epoch (the tutorial's adadelta step, batch 16, dropout on),
   extrapolated from --epoch-updates updates, and the ratio FIM / epoch;

and with two --floatX, 5. how float32's P (from ‖W^c_i‖, the paper's score) differs from float64's on the
same reviews: the largest relative difference, the Spearman rank correlation and each P's coefficient of
variation (the paper's P varies by a CV of ~5e-6, so rounding could reorder it).

    python benchmarks/bench_fim.py --protocol paper --reviews 500 --plain-reviews 20 --n-jobs 2 --floatX float64 float32
"""
from __future__ import annotations

import dltutorials_is  # noqa: F401  (first: it points Aesara at a real BLAS before aesara loads)

import argparse
import os
import time

import numpy as np
import aesara
from joblib import effective_n_jobs
from scipy.stats import spearmanr

from dltutorials_is.fim import driver as fim
from dltutorials_is.fim.lstm import LstmFimSpec, initial_state
from dltutorials_is.models.lstm import LstmModel
from dltutorials_is.sampling.samplers import UniformSampler

from bench_lstm import RowMajorGemm  # this folder is on sys.path when a benchmark runs as a script


def timed_run(run, i: int) -> tuple[float, fim.PrivateRun, float]:
    """(wall seconds, the run, process CPU seconds) of one private run."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run(int(i))
    return time.perf_counter() - start, result, time.process_time() - cpu_start


def one_process(runs: dict, block, plain_reviews: set, timings: dict) -> None:
    """Mine `block` with the fast trainer, and the plain one right after it on the reviews of the plain
    subsample; record `timed_run`'s triple per trainer and review in `timings`."""
    for i in block:
        for name in ("fast", "plain") if i in plain_reviews else ("fast",):
            timings[name][int(i)] = timed_run(runs[name], i)


def on_workers(spec, block, n_jobs: int, chunk: int) -> tuple[float, float]:
    """Wall seconds of mining `block` on the workers (compiled beforehand), in chunks of `chunk`, and the
    workers' CPU seconds."""
    start = time.perf_counter()
    result = fim.run_samples(spec, block, n_jobs, chunk_size=chunk)
    return time.perf_counter() - start, result.cpu_seconds


def per_review(timings: dict) -> tuple[float, float]:
    """Mean wall seconds per review and per private step of `timings` ({i: `timed_run`'s triple})."""
    seconds = sum(s for s, _, _ in timings.values())
    return seconds / len(timings), seconds / sum(r.iterations for _, r, _ in timings.values())


def report_fast_vs_plain(timings: dict, lengths: dict) -> None:
    plain = timings["plain"]
    fast = {i: timings["fast"][i] for i in plain}
    print(f"1. fast vs plain (the tutorial's step at batch 1) on the same {len(plain)} random reviews "
          f"({np.mean([lengths[i] for i in plain]):.0f} tokens on average), interleaved review by review, one process:")
    for name, runs in (("plain", plain), ("fast", fast)):
        seconds, step = per_review(runs)
        print(f"   {name:>5}: {seconds:.3f} s per review, {step * 1e3:.2f} ms per private SGD step")
    ratios = [plain[i][0] / fast[i][0] for i in plain]
    print(f"   plain / fast: {np.median(ratios):.2f} (median over reviews), "
          f"{per_review(plain)[0] / per_review(fast)[0]:.2f} (ratio of the means)")
    same_t = all(fast[i][1].iterations == plain[i][1].iterations for i in plain)
    worst = max(abs(fast[i][1].scores[k] - v) / abs(v) for i in plain for k, v in plain[i][1].scores.items() if v)
    print(f"   same T_i: {same_t}; largest relative score difference fast vs plain: {worst:.2e}")


def report_fast(fast: dict, lengths: dict) -> None:
    seconds, step = per_review(fast)
    iterations = np.array([r.iterations for _, r, _ in fast.values()])
    print(f"2. fast on {len(fast)} random reviews ({np.mean([lengths[i] for i in fast]):.0f} tokens on average), "
          f"one process: {seconds:.3f} s per review (median {np.median([t[0] for t in fast.values()]):.3f}), "
          f"{step * 1e3:.2f} ms per private step; T_i values {dict(zip(*np.unique(iterations, return_counts=True)))}")


def report_extrapolation(fast: dict, blocks, on_workers_seconds: list, n_jobs: int, n_samples: int) -> float:
    """Item 3, from wall time (this machine as loaded now) and from CPU time (the workers' cores to
    themselves: what another session's load takes from them is not counted); returns the wall figure."""
    workers = effective_n_jobs(n_jobs)
    print(f"3. {workers} workers vs one process, {len(blocks)} interleaved blocks of ~{len(blocks[0])} reviews:")
    minutes = {}
    for clock, column in (("wall", 0), ("CPU", 2)):
        one = [sum(fast[int(i)][column] for i in block) for block in blocks]
        # the workers' seconds of a block: its wall time on each worker, or their CPU seconds summed
        many = [workers * wall if clock == "wall" else cpu for wall, cpu in on_workers_seconds]
        efficiency = [x / y for x, y in zip(one, many)]
        e = float(np.median(efficiency))
        per = np.mean([t[column] for t in fast.values()])
        minutes[clock] = per * n_samples / workers / e / 60
        print(f"   {clock:>4} time: parallel efficiency {', '.join(f'{x:.2f}' for x in efficiency)} (median {e:.2f}); "
              f"FIM over all {n_samples} reviews on {workers} workers ≈ {per:.3f} s per review × {n_samples} / "
              f"{workers} / {e:.2f} = {minutes[clock]:.1f} min (extrapolated)")
    return minutes["wall"] * 60


def best_gemm_gflops(floatX: str, size: int = 1024, repeats: int = 5) -> float:
    """This BLAS's rate on a large square product (the best it does on any shape): median GFLOP/s by
    process CPU time, so another session's load does not lower it."""
    gemm = RowMajorGemm(floatX)  # the library Aesara links, as the LSTM step's floor calls it
    a, b = (np.random.RandomState(k).rand(size * size).astype(floatX) for k in (0, 1))
    c = np.empty_like(a)
    gemm(a, b, c, size, size, size)
    seconds = []
    for _ in range(repeats):
        start = time.process_time()
        gemm(a, b, c, size, size, size)
        seconds.append(time.process_time() - start)
    return 2 * size ** 3 / float(np.median(seconds)) / 1e9


def report_bound(fast: dict, lengths: dict, n_samples: int, dim: int, n_jobs: int) -> None:
    """Item 3b: the fewest minutes FIM over all reviews can take on this BLAS (see the docstring)."""
    token_steps = sum(run.iterations * lengths[i] for i, (_, run, _) in fast.items()) * n_samples / len(fast)
    flops = token_steps * 6 * 2 * dim * 4 * dim
    rate = best_gemm_gflops(aesara.config.floatX)
    workers = effective_n_jobs(n_jobs)
    print(f"3b. bound: FIM over all {n_samples} reviews needs ≥ {flops / 1e12:.0f} TFLOP (Σ T_i·len_i ≈ "
          f"{token_steps:.3g} token-steps); at this BLAS's best {rate:.1f} GFLOP/s per core (1024³ product) on "
          f"{workers} workers ≥ {flops / (rate * 1e9) / workers / 60:.1f} min", flush=True)


def bench_fim(train, params, options, args) -> tuple[float, dict]:
    """Items 1-3 for the current floatX; returns FIM's extrapolated seconds and ‖W^c_i‖ per sampled review."""
    specs = {name: LstmFimSpec(train, params, options, eps=args.eps, lr=args.step_size, trainer=name)
             for name in ("fast", "plain")}
    runs = {name: spec.build() for name, spec in specs.items()}  # compiled before any clock starts
    sample = np.random.RandomState(1).choice(len(train[0]), args.reviews, replace=False)
    blocks = np.array_split(sample, args.blocks)
    plain_reviews = {int(i) for block in blocks for i in block[: -(-args.plain_reviews // args.blocks)]}
    fim.run_samples(specs["fast"], sample[: 2 * effective_n_jobs(args.n_jobs)], args.n_jobs, chunk_size=1)  # compile
    timings, parallel, loads = {"fast": {}, "plain": {}}, [], []
    for block in blocks:
        one_process(runs, block, plain_reviews, timings)
        parallel.append(on_workers(specs["fast"], block, args.n_jobs, args.chunk))
        loads.append(os.getloadavg()[0])
    lengths = {int(i): len(train[0][i]) for i in sample}
    report_fast_vs_plain(timings, lengths)
    report_fast(timings["fast"], lengths)
    fim_seconds = report_extrapolation(timings["fast"], blocks, parallel, args.n_jobs, len(train[0]))
    print(f"   machine load (1-minute average) after each block: {', '.join(f'{x:.1f}' for x in loads)}", flush=True)
    report_bound(timings["fast"], lengths, len(train[0]), options["dim_proj"], args.n_jobs)
    return fim_seconds, {i: r.scores["Wc", "norm"] for i, (_, r, _) in timings["fast"].items()}


def compare_precisions(wc64: dict, wc32: dict) -> None:
    """How P = ‖W^c_i‖ / Σ‖W^c_j‖ of the same reviews differs between float64 and float32 runs."""
    reviews = sorted(wc64)
    p64, p32 = (np.array([wc[i] for i in reviews]) for wc in (wc64, wc32))
    p64, p32 = p64 / p64.sum(), p32 / p32.sum()
    cv = lambda p: p.std() / p.mean()  # noqa: E731
    print(f"5. P from ‖W^c_i‖ on the same {len(p64)} reviews, float32 vs float64: largest relative difference "
          f"{np.max(np.abs(p32 - p64) / p64):.2e}, Spearman rank correlation {spearmanr(p64, p32)[0]:.4f}, "
          f"CV {cv(p64):.3g} (float64) and {cv(p32):.3g} (float32)")


def time_uniform_epoch(train, params, options, updates, batch_size=16):
    model = LstmModel({**options, "use_dropout": True, "ydim": params["U"].shape[1], "optimizer": "adadelta"},
                      train, options["seed"])
    model.set_params(params)
    model.optimiser  # compiled before the clock starts
    batches = UniformSampler(len(train[0]), batch_size).epoch(np.random.RandomState(0))
    start = time.perf_counter()
    for index, weights in batches[:updates]:
        model.train_step(index, weights)
    per_update = (time.perf_counter() - start) / min(updates, len(batches))
    epoch = per_update * len(batches)
    print(f"4. one uniform epoch (adadelta, batch {batch_size}, {len(batches)} updates, one process): "
          f"{per_update * 1e3:.1f} ms per update over {min(updates, len(batches))} updates "
          f"→ ≈ {epoch / 60:.1f} min per epoch (extrapolated)")
    return epoch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="paper")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--floatX", nargs="+", default=["float64"], choices=("float64", "float32"))
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--step-size", type=float, default=1.0)
    parser.add_argument("--reviews", type=int, default=500, help="random reviews timed (%(default)s)")
    parser.add_argument("--plain-reviews", type=int, default=20,
                        help="of them, timed with the plain trainer too (%(default)s)")
    parser.add_argument("--blocks", type=int, default=5, help="interleaved one-process/worker blocks (%(default)s)")
    parser.add_argument("--chunk", type=int, default=2, help="reviews per worker task (%(default)s)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--epoch-updates", type=int, default=200)
    args = parser.parse_args(argv)
    if not 0 < args.blocks <= args.reviews or not 0 < args.plain_reviews <= args.reviews or args.chunk < 1:
        parser.error("need 0 < --blocks <= --reviews, 0 < --plain-reviews <= --reviews and --chunk >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    options = {"protocol": args.protocol, "n_words": 10000, "maxlen": 100, "test_size": 500, "dim_proj": 128,
               "use_dropout": True, "seed": args.seed}
    scores = {}
    for floatX in args.floatX:
        print(f"== {floatX}", flush=True)
        aesara.config.floatX = floatX  # W(0) as a run of this precision draws it
        train, params = initial_state(options, args.seed, args.data_dir)
        fim_seconds, scores[floatX] = bench_fim(train, params, options, args)
        if args.epoch_updates:
            epoch = time_uniform_epoch(train, params, options, args.epoch_updates)
            print(f"FIM wall time / one uniform epoch ≈ {fim_seconds / epoch:.1f} "
                  f"(FIM on {effective_n_jobs(args.n_jobs)} workers, the epoch on one process)", flush=True)
    if len(scores) == 2:
        compare_precisions(scores["float64"], scores["float32"])


if __name__ == "__main__":
    main()
