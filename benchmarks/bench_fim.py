"""How fast is FIM for the LSTM, and what does it cost next to training?

Prints, on the real IMDB data (default: the paper protocol, 25,000 training reviews):

1. private-training throughput (reviews/s, one process) of the fast trainer and of the tutorial's
   own compiled SGD step at batch size 1 ("plain"), on the same random reviews, same ε and λ,
   interleaved review by review so both see the same machine load; and the largest relative
   difference between their scores;
2. the fast trainer's throughput over --fim-samples random reviews with --n-jobs workers, the
   T_i distribution and P summaries there, and the wall time of FIM over all N reviews
   extrapolated from it;
3. the time of one uniform training epoch (the tutorial's adadelta step, batch 16, dropout on),
   extrapolated from --epoch-updates updates, and the ratio FIM / epoch;

each for every --floatX given, and with two, 4. how float32's P (from ‖W^c_i‖, the paper's score) differs
from float64's on the same reviews: the largest relative difference, the Spearman rank correlation and
each P's coefficient of variation (the paper's P varies by a CV of ~5e-6, so rounding can reorder it).

FIM over all N reviews is extrapolated as N / (reviews mined per second of wall time over the sample,
compilation included, with --n-jobs workers).

    python benchmarks/bench_fim.py --protocol paper --compare 8 --fim-samples 500 --n-jobs 2 --floatX float64 float32
"""
from __future__ import annotations

import dltutorials_is  # noqa: F401  (first: it points Aesara at a real BLAS before aesara loads)

import argparse
import time

import numpy as np
import aesara
from joblib import effective_n_jobs
from scipy.stats import spearmanr

from dltutorials_is.fim import driver as fim
from dltutorials_is.fim.lstm import LstmFimSpec, initial_state
from dltutorials_is.models.lstm import LstmModel
from dltutorials_is.sampling.samplers import UniformSampler


def compare_trainers(train, params, options, reviews, eps, lr):
    runs = {}
    seconds = {"fast": 0.0, "plain": 0.0}
    steps = {"fast": 0, "plain": 0}
    trainers = {name: LstmFimSpec(train, params, options, eps=eps, lr=lr, trainer=name).build()
                for name in ("fast", "plain")}
    for i in reviews:
        for name, run in trainers.items():
            start = time.perf_counter()
            runs[name, i] = run(int(i))
            seconds[name] += time.perf_counter() - start
            steps[name] += runs[name, i].iterations
    tokens = sum(len(train[0][i]) for i in reviews)
    print(f"1. private training of {len(reviews)} random reviews ({tokens / len(reviews):.0f} tokens on average), "
          f"ε = {eps}, λ = {lr}, {aesara.config.floatX}, one process:")
    for name in ("plain", "fast"):
        print(f"   {name:>5}: {len(reviews) / seconds[name]:.3f} reviews/s, "
              f"{seconds[name] / steps[name] * 1e3:.2f} ms per private SGD step")
    print(f"   speed-up of fast over plain: {seconds['plain'] / seconds['fast']:.2f}x")
    worst = max(abs(runs["fast", i].scores[k] - v) / abs(v)
                for i in reviews for k, v in runs["plain", i].scores.items() if v)
    same_t = all(runs["fast", i].iterations == runs["plain", i].iterations for i in reviews)
    print(f"   same T_i: {same_t}; largest relative score difference fast vs plain: {worst:.2e}")


def mine_sample(train, params, options, k, n_jobs, eps, lr):
    spec = LstmFimSpec(train, params, options, eps=eps, lr=lr)
    print(f"2. fast FIM on {k} random reviews, n_jobs={n_jobs}:")
    start = time.perf_counter()
    result = fim.mine(spec, None, n_jobs=n_jobs, pilot=k,
                      log=lambda s: print("   " + s.replace("\n", "\n   ")))
    wall = time.perf_counter() - start
    wc = result.scores["Wc"]["norm"]
    print(f"   ‖W^c_i‖ from {wc.min():.6f} to {wc.max():.6f}; T_i values: "
          f"{dict(zip(*np.unique(result.iterations, return_counts=True)))}")
    rate = k / wall
    fim_seconds = spec.n_samples / rate
    print(f"   throughput {rate:.3f} reviews/s (wall, compilation included); "
          f"FIM over all {spec.n_samples} reviews ≈ {fim_seconds / 60:.1f} min (extrapolated)")
    return fim_seconds, wc


def compare_precisions(wc64, wc32):
    """How P = ‖W^c_i‖ / Σ‖W^c_j‖ of the same reviews differs between float64 and float32 runs."""
    p64, p32 = wc64 / wc64.sum(), wc32 / wc32.sum()
    cv = lambda p: p.std() / p.mean()  # noqa: E731
    print(f"4. P from ‖W^c_i‖ on the same {len(p64)} reviews, float32 vs float64: largest relative difference "
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
    print(f"3. one uniform epoch (adadelta, batch {batch_size}, {len(batches)} updates, one process): "
          f"{per_update * 1e3:.1f} ms per update over {min(updates, len(batches))} updates "
          f"→ ≈ {epoch / 60:.1f} min per epoch (extrapolated)")
    return epoch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="paper")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--floatX", nargs="+", default=["float64"], choices=("float64", "float32"))
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--step-size", type=float, default=1.0)
    parser.add_argument("--compare", type=int, default=8, help="reviews for the fast-vs-plain comparison")
    parser.add_argument("--fim-samples", type=int, default=1000, help="reviews mined to extrapolate FIM")
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--epoch-updates", type=int, default=200)
    args = parser.parse_args(argv)
    options = {"protocol": args.protocol, "n_words": 10000, "maxlen": 100, "test_size": 500, "dim_proj": 128,
               "use_dropout": True, "seed": args.seed}
    scores = {}
    for floatX in args.floatX:
        print(f"== {floatX}")
        aesara.config.floatX = floatX  # W(0) as a run of this precision draws it
        train, params = initial_state(options, args.seed, args.data_dir)
        reviews = np.random.RandomState(1).choice(len(train[0]), args.compare, replace=False)
        if args.compare:
            compare_trainers(train, params, options, reviews, args.eps, args.step_size)
        fim_seconds = None
        if args.fim_samples:
            fim_seconds, scores[floatX] = mine_sample(train, params, options, args.fim_samples, args.n_jobs, args.eps,
                                                      args.step_size)
        if args.epoch_updates:
            epoch = time_uniform_epoch(train, params, options, args.epoch_updates)
            if fim_seconds:
                print(f"FIM wall time / one uniform epoch ≈ {fim_seconds / epoch:.1f} "
                      f"(FIM on {effective_n_jobs(args.n_jobs)} workers, the epoch on one process)")
    if len(scores) == 2:
        compare_precisions(scores["float64"], scores["float32"])


if __name__ == "__main__":
    main()
