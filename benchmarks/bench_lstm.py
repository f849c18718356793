"""Seconds per update and per epoch, and peak memory, of the LSTM training step: our port vs the original.

The step is the tutorial's defaults (dim_proj 128, batch 16, n_words 10000, adadelta, dropout):
one `f_grad_shared(x, mask, y[, weights])` plus one `f_update(lr)`, on real IMDB minibatches.
Every (graph, protocol, floatX, BLAS) runs in its own subprocess, so peak memory
(`ru_maxrss`) is that configuration's alone:

* protocol `tutorial`: the tutorial's training set (reviews shorter than maxlen 100, ~2,000 of them);
* protocol `paper`: Wang et al.'s, the 25,000 official test reviews as training set, full length.

A run times `--updates` minibatches drawn from a shuffled epoch (the same ones for both graphs),
`--repeats` times; seconds per update is the median over repeats. Seconds per epoch is
*extrapolated*: the timed batches' seconds scaled by the epoch's padded time steps over theirs.

The original graph is the tutorial's own `lstm.py` and `imdb.py`, read from a git clone of the
tutorials (`--original-git-dir`, e.g. `.../DeepLearningTutorials/.git`) into a temporary folder and run
through `tools/original_shim` under Aesara; they are never copied into this repository.

    python benchmarks/bench_lstm.py --original-git-dir ~/src/DeepLearningTutorials/.git
    python benchmarks/bench_lstm.py --graphs port --protocols tutorial --floatX float32 --blas default mkl-1
"""

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

USER_ENVIRONMENT = dict(os.environ)  # before dltutorials_is adds its BLAS choice to AESARA_FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run from a checkout
SHIM = os.path.join(REPO_ROOT, "tools", "original_shim")
OPTIONS = dict(dim_proj=128, batch_size=16, n_words=10000, maxlen=100, use_dropout=True, encoder="lstm", ydim=2)
SEED = 123


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def load_training_set(protocol, data_dir):
    from dltutorials_is.datasets.imdb import imdb_paths, load_splits

    maxlen = OPTIONS["maxlen"] if protocol == "tutorial" else None
    train, _, _ = load_splits(protocol, imdb_paths(data_dir)[0], OPTIONS["n_words"], maxlen, -1,
                              np.random.RandomState(SEED))
    return train


def port_step(floatX):
    """``(update(x, mask, y), seconds to build and compile)`` for our port's training step: the
    model's own compiled pair, fed the same prepared minibatches as the original's."""
    from dltutorials_is.graphs.lstm import floatx
    from dltutorials_is.models.lstm import LstmModel

    start = time.perf_counter()
    model = LstmModel(dict(OPTIONS, optimizer="adadelta"), ([], []), SEED)
    f_grad_shared, f_update = model.optimiser.f_grad_shared, model.optimiser.f_update
    model.graph.use_noise.set_value(floatx(1.0))

    def update(x, mask, y):
        cost = f_grad_shared(x, mask, y, np.ones(len(y), dtype=floatX))
        f_update(floatx(0.0001))
        return cost

    return update, time.perf_counter() - start


def original_step(floatX, git_dir):
    """The same for the tutorial's own graph: its lstm.py/imdb.py from ``git_dir``, via the shim."""
    with tempfile.TemporaryDirectory(prefix="original_lstm_") as source:
        for name in ("lstm.py", "imdb.py"):
            text = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:code/{name}"],
                                  check=True, capture_output=True, text=True).stdout
            with open(os.path.join(source, name), "w") as f:
                f.write(text)
        sys.path[:0] = [source, SHIM, os.path.join(SHIM, "fallback")]
        import lstm as original  # the temporary copy, which imports its imdb.py and the shim's theano
    import theano.tensor as tensor

    start = time.perf_counter()
    tparams = original.init_tparams(original.init_params(dict(OPTIONS)))
    use_noise, x, mask, y, _, _, cost = original.build_model(tparams, dict(OPTIONS))
    grads = tensor.grad(cost, wrt=list(tparams.values()))
    f_grad_shared, f_update = original.adadelta(tensor.scalar(name="lr"), tparams, grads, x, mask, y, cost)
    use_noise.set_value(original.numpy_floatX(1.0))

    def update(x, mask, y):
        cost = f_grad_shared(x, mask, y)
        f_update(0.0001)
        return cost

    return update, time.perf_counter() - start


def run_worker(args):
    """Time one configuration (set by the caller through AESARA_FLAGS); print one JSON line."""
    from dltutorials_is import backend  # first: it configures Aesara's BLAS before Aesara is imported
    from dltutorials_is.datasets.imdb import prepare_data

    import aesara

    floatX = aesara.config.floatX
    start = time.perf_counter()
    train = load_training_set(args.protocol, args.data_dir)
    load_seconds, rss_after_load = time.perf_counter() - start, peak_rss_mb()
    if args.graph == "port":
        update, compile_seconds = port_step(floatX)
    else:
        update, compile_seconds = original_step(floatX, args.original_git_dir)

    order = np.random.RandomState(SEED).permutation(len(train[0]))
    batches = [order[i:i + OPTIONS["batch_size"]] for i in range(0, len(order), OPTIONS["batch_size"])]
    minibatches = [prepare_data([train[0][t] for t in index], [train[1][t] for t in index])
                   for index in batches[:args.updates + 1]]
    epoch_steps = sum(max(len(train[0][t]) for t in index) for index in batches)
    timed_steps = sum(x.shape[0] for x, _, _ in minibatches[1:])

    update(*minibatches[0])  # the first call allocates scan's buffers
    wall, cpu = [], []
    for _ in range(args.repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        costs = [update(*minibatch) for minibatch in minibatches[1:]]
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    if not np.all(np.isfinite(costs)):
        raise SystemExit(f"non-finite cost during the benchmark: {costs}")
    seconds = float(np.median(wall))
    print(json.dumps(dict(
        blas=backend.describe(), n_train=len(train[0]), updates_per_epoch=len(batches),
        mean_steps_timed=timed_steps / args.updates, mean_steps_epoch=epoch_steps / len(batches),
        seconds_per_update=seconds / args.updates, cpu_seconds_per_update=float(np.median(cpu)) / args.updates,
        min_seconds_per_update=float(min(wall)) / args.updates,
        seconds_per_epoch=seconds * epoch_steps / timed_steps,
        cpu_seconds_per_epoch=float(np.median(cpu)) * epoch_steps / timed_steps, load_seconds=load_seconds,
        compile_seconds=compile_seconds, rss_after_load_mb=rss_after_load, peak_rss_mb=peak_rss_mb(),
    )), flush=True)


def run_configuration(graph, protocol, floatX, blas_name, args):
    """One worker subprocess; returns its result dict, or one with an ``error``."""
    from bench_blas import setups

    from dltutorials_is.backend import parse_aesara_flags

    ldflags, extra_env = setups()[blas_name] if blas_name != "auto" else (None, {})
    env = dict(USER_ENVIRONMENT, **extra_env)
    flags = parse_aesara_flags(env.get("AESARA_FLAGS", ""))
    flags["floatX"] = floatX
    if ldflags is not None:
        flags["blas__ldflags"] = ldflags
    env["AESARA_FLAGS"] = ",".join(f"{key}={shlex.quote(value)}" for key, value in flags.items())
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--graph", graph, "--protocol", protocol,
               "--updates", str(args.updates), "--repeats", str(args.repeats)]
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += ["--original-git-dir", args.original_git_dir] if args.original_git_dir else []
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no message"])[-1]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = (load_before, os.getloadavg()[0])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", nargs="*", default=["port", "original"], choices=["port", "original"])
    parser.add_argument("--protocols", nargs="*", default=["tutorial", "paper"], choices=["tutorial", "paper"])
    parser.add_argument("--floatX", nargs="*", default=["float64", "float32"], choices=["float64", "float32"])
    parser.add_argument("--blas", nargs="*", default=["auto"],
                        help="'auto' (what dltutorials_is chooses) and/or set-up names of bench_blas.py")
    parser.add_argument("--updates", type=int, default=20, help="minibatches per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops per run (the median is reported)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every configuration, interleaved")
    parser.add_argument("--data-dir", help="folder holding imdb.pkl (default: the project's data folder)")
    parser.add_argument("--original-git-dir", help="git directory of a DeepLearningTutorials clone")
    # Used by the subprocesses only.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--graph", help=argparse.SUPPRESS)
    parser.add_argument("--protocol", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    graphs = args.graphs
    if "original" in graphs and not args.original_git_dir:
        print("original graph skipped: give --original-git-dir (a clone of the tutorials' repository)")
        graphs = [graph for graph in graphs if graph != "original"]

    print(f"{args.updates} updates x {args.repeats} repeats per run, {args.rounds} round(s) of every configuration "
          f"(order reversed every other round); load: 1-minute load average before/after a run, {os.cpu_count()} cores")
    print(HEADER)
    configurations = [(protocol, floatX, blas_name, graph) for protocol in args.protocols for floatX in args.floatX
                      for blas_name in args.blas for graph in graphs]
    results = {configuration: [] for configuration in configurations}
    for round_number in range(args.rounds):
        for configuration in configurations[::-1] if round_number % 2 else configurations:  # no fixed order
            protocol, floatX, blas_name, graph = configuration
            result = run_configuration(graph, protocol, floatX, blas_name, args)
            print_row(configuration, result, f"run {round_number + 1}")
            if "error" not in result:
                results[configuration].append(result)
    if args.rounds > 1:
        print(f"\nmedians over the {args.rounds} rounds")
        print(HEADER)
        for configuration, runs in results.items():
            if runs:
                median = {key: float(np.median([run[key] for run in runs])) for key in MEDIAN_KEYS}
                print_row(configuration, dict(runs[0], **median, load=(min(r["load"][0] for r in runs),
                                                                         max(r["load"][1] for r in runs))), "median")
    print("s/update: median wall time over the repeats ((min): the fastest); cpu: process CPU time, close to the\n"
          "wall time an idle machine would take with a one-thread BLAS; s/epoch, cpu s/ep: extrapolated from them;\n"
          "steps: mean padded length of the timed minibatches / of all the epoch's; peak MB: ru_maxrss of the run")


HEADER = (f"{'protocol':<9}{'floatX':<8}{'BLAS':<17}{'graph':<9}{'':<7}{'s/update':>9}{'(min)':>8}{'cpu s/upd':>10}"
          f"{'s/epoch':>9}{'cpu s/ep':>9}{'upd/epoch':>10}{'steps':>10}{'compile s':>10}{'peak MB':>8}{'load':>12}")
MEDIAN_KEYS = ("seconds_per_update", "min_seconds_per_update", "cpu_seconds_per_update", "seconds_per_epoch",
               "cpu_seconds_per_epoch", "compile_seconds", "peak_rss_mb")


def print_row(configuration, r, label):
    protocol, floatX, blas_name, graph = configuration
    prefix = f"{protocol:<9}{floatX:<8}{blas_name:<17}{graph:<9}{label:<7}"
    if "error" in r:
        print(prefix + f"FAILED: {r['error']}", flush=True)
        return
    steps = f"{r['mean_steps_timed']:.0f}/{r['mean_steps_epoch']:.0f}"
    print(prefix + f"{r['seconds_per_update']:9.4f}{r['min_seconds_per_update']:8.4f}"
          f"{r['cpu_seconds_per_update']:10.4f}{r['seconds_per_epoch']:9.1f}"
          f"{r['cpu_seconds_per_epoch']:9.1f}{r['updates_per_epoch']:10d}{steps:>10}"
          f"{r['compile_seconds']:10.1f}{r['peak_rss_mb']:8.0f}"
          f"{r['load'][0]:7.2f}/{r['load'][1]:.2f}", flush=True)
    if label != "median":
        print(f"{'':<50}BLAS in use: {r['blas']}", flush=True)


if __name__ == "__main__":
    main()
