"""The LSTM training step, ours against the original tutorial's, side by side on the same minibatches.

Steps (the tutorial's defaults: dim_proj 128, batch 16, n_words 10000, adadelta, dropout on), each the
whole update as a training loop runs it, minibatch preparation included:

* `original`: the tutorial's own lstm.py (`prepare_data`, `f_grad_shared`, `f_update`), read from
  `--original` (default `../shared/originals`) and run unmodified through `tools/original_shim`;
* `fast`: our default step (`LstmModel(graph="fast")`: packed minibatches, the C recurrence);
* `tutorial`: our port of the original's scan graph (`--graph tutorial`), with `--steps`;
* `floor`: not a step but a lower bound on one: only the matrix products any exact step must do on
  the packed minibatch, with the BLAS Aesara links, less the measured cost of calling it (`floor_step`).
  Its ratio to the original is the best an exact step can reach on this machine's BLAS.

For each (protocol, floatX) one worker process builds the steps and times them in turns on every
minibatch (the order alternates from one minibatch to the next), `--repeats` times; a ratio is
ours / original over the same minibatches in the same repeat, and the median over repeats is printed,
so machine load that comes and goes hits both sides alike. Seconds per epoch are extrapolated from
the timed minibatches: by padded steps for the scan graphs, by tokens for the packed one.
Peak memory (ru_maxrss) comes from one more process per step, which runs the epoch's
`--memory-batches` largest minibatches alone.

The IS row times our step on `--updates` minibatches drawn by the importance sampler (P: FIM's
artefact when `--importance` names one, else P ∝ a random positive score) and by the uniform sampler,
in turns, and prints the ratio per token (IS draws other reviews, so other lengths) and per update.

    python benchmarks/bench_lstm.py                                  # every row, ~15 min
    python benchmarks/bench_lstm.py --protocols paper --floatX float64 --updates 10 --repeats 3
"""

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run from a checkout
SHIM = os.path.join(REPO_ROOT, "tools", "original_shim")
DEFAULT_ORIGINAL = os.path.join(os.path.dirname(REPO_ROOT), "shared", "originals")
OPTIONS = dict(dim_proj=128, batch_size=16, n_words=10000, maxlen=100, use_dropout=True, encoder="lstm", ydim=2)
SEED = 123
VALID_BATCH_SIZE = 64  # the tutorial's valid_batch_size: prediction is timed on minibatches this size


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def load_training_set(protocol, data_dir):
    from dltutorials_is.datasets.imdb import imdb_paths, load_splits

    maxlen = OPTIONS["maxlen"] if protocol == "tutorial" else None
    train, _, _ = load_splits(protocol, imdb_paths(data_dir)[0], OPTIONS["n_words"], maxlen, -1,
                              np.random.RandomState(SEED))
    return train


def port_step(train, graph):
    """`(update(indices), predict(indices))`: our model's training step and its classes (dropout off),
    the graph named by `graph`."""
    from dltutorials_is.models.lstm import LstmModel

    model = LstmModel(dict(OPTIONS, optimizer="adadelta", graph=graph), train, SEED)
    model.optimiser, model.f_pred  # compile now

    def predict(indices):
        model.graph.use_noise.set_value(np.asarray(0.0, dtype=model.floatX))
        return model.f_pred(*model.minibatch(indices)[0])

    return (lambda indices: model.train_step(indices, np.ones(len(indices))).cost), predict


def original_step(train, source):
    """`update(indices)` of the tutorial's own lstm.py from folder `source`, via the shim."""
    with tempfile.TemporaryDirectory(prefix="original_lstm_") as copy:
        for name in ("lstm.py", "imdb.py"):
            with open(os.path.join(source, name)) as original, open(os.path.join(copy, name), "w") as f:
                f.write(original.read())
        sys.path[:0] = [copy, SHIM, os.path.join(SHIM, "fallback")]
        import lstm as original  # the temporary copy, which imports its imdb.py and the shim's theano
        from imdb import prepare_data
    import theano.tensor as tensor

    tparams = original.init_tparams(original.init_params(dict(OPTIONS)))
    use_noise, x, mask, y, _, f_pred, cost = original.build_model(tparams, dict(OPTIONS))
    grads = tensor.grad(cost, wrt=list(tparams.values()))
    f_grad_shared, f_update = original.adadelta(tensor.scalar(name="lr"), tparams, grads, x, mask, y, cost)
    use_noise.set_value(original.numpy_floatX(1.0))

    def update(indices):
        x, mask, y = prepare_data([train[0][t] for t in indices], [train[1][t] for t in indices])
        cost = f_grad_shared(x, mask, y)
        f_update(0.0001)
        return cost

    def predict(indices):
        use_noise.set_value(original.numpy_floatX(0.0))
        x, mask, _ = prepare_data([train[0][t] for t in indices], [train[1][t] for t in indices])
        return f_pred(x, mask)

    return update, predict


class RowMajorGemm:
    """`c[:m*n] = op(a) · op(b)` (+ `beta` · c) on C-ordered buffers, by one call of `?gemm_` in the BLAS
    Aesara links (called through ctypes, whose overhead `call_overhead` measures)."""

    def __init__(self, dtype):
        from dltutorials_is import backend

        library, why = backend.choose()
        if library is None:
            raise SystemExit(f"floor: no BLAS library to call ({why})")
        self.dtype = np.dtype(dtype)
        self.pointer = backend.pointer
        self.gemm = getattr(ctypes.CDLL(library.path), ("d" if self.dtype == np.float64 else "s") + "gemm_")
        scalar = ctypes.c_double if self.dtype == np.float64 else ctypes.c_float
        self.one, self.beta = scalar(1.0), scalar(0.0)
        self.flags = {False: ctypes.c_char(b"N"), True: ctypes.c_char(b"T")}
        self.sizes = [ctypes.c_int(0) for _ in range(6)]  # m, n, k, lda, ldb, ldc

    def __call__(self, a, b, c, m, n, k, transpose_a=False, transpose_b=False, beta=0.0):
        # Row-major c (m x n) is column-major c^T (n x m) = op(b)^T op(a)^T: swap the operands.
        size_m, size_n, size_k, lda, ldb, ldc = self.sizes
        size_m.value, size_n.value, size_k.value = m, n, k
        lda.value, ldb.value, ldc.value = (m if transpose_a else k), (k if transpose_b else n), n
        self.beta.value = beta
        ref, pointer = ctypes.byref, self.pointer
        self.gemm(ref(self.flags[transpose_b]), ref(self.flags[transpose_a]), ref(size_n), ref(size_m), ref(size_k),
                  ref(self.one), pointer(b), ref(ldb), pointer(a), ref(lda), ref(self.beta), pointer(c), ref(ldc))

    def call_overhead(self, calls=20000):
        """Seconds per call of a 1 x 1 x 1 product: the price of calling, not of multiplying."""
        a = np.ones(1, self.dtype)
        start = time.perf_counter()
        for _ in range(calls):
            self(a, a, a, 1, 1, 1)
        return (time.perf_counter() - start) / calls


def floor_step(train, floatX):
    """`(update, predict)` doing only the products an exact LSTM step cannot avoid on the packed
    minibatch (dim d = dim_proj, 4 gates): forward, the input projection of all tokens at once
    (tokens x d)(d x 4d), then per time step the recurrent product of the rows still running
    (n_t x d)(d x 4d); backward, per time step (n_t x 4d)(4d x d) for the previous hidden state, then
    the gradients of W, U and the inputs as three whole-sequence products. No element-wise work,
    embedding, classifier or optimiser, and the ctypes cost of each call is subtracted: what is left
    is a lower bound for any step computing the tutorial's function with this BLAS, not a step."""
    gemm = RowMajorGemm(floatX)
    overhead = gemm.call_overhead()
    dim, gates = OPTIONS["dim_proj"], 4 * OPTIONS["dim_proj"]
    buffers = {}

    def buffer(name, size):
        if buffers.get(name, np.empty(0)).size < size:
            buffers[name] = np.random.RandomState(SEED).uniform(-0.1, 0.1, size).astype(floatX)
        return buffers[name]

    def products(indices, backward):
        lengths = np.sort([len(train[0][t]) for t in indices])[::-1]
        tokens = int(lengths.sum())
        running = [int(n) for n in np.searchsorted(-lengths, -np.arange(lengths[0]), side="left")]
        x, h = buffer("x", tokens * dim), buffer("h", tokens * dim)
        z, w, u = buffer("z", tokens * gates), buffer("w", dim * gates), buffer("u", dim * gates)
        start = time.perf_counter()
        gemm(x, w, z, tokens, gates, dim)
        for n in running:
            gemm(h, u, z, n, gates, dim, beta=1.0)
        calls = 1 + len(running)
        if backward:
            dx, dw = buffer("dx", tokens * dim), buffer("dw", dim * gates)
            for n in running:
                gemm(z, u, dx, n, dim, gates, transpose_b=True, beta=1.0)
            gemm(z, w, dx, tokens, dim, gates, transpose_b=True, beta=1.0)
            gemm(x, z, dw, dim, gates, tokens, transpose_a=True)
            gemm(h, z, dw, dim, gates, tokens, transpose_a=True)
            calls += len(running) + 3
        return np.float64(0.0), time.perf_counter() - start - calls * overhead

    return (lambda indices: products(indices, True)), (lambda indices: products(indices, False))


def build_step(name, train, args):
    if name == "floor":
        import aesara
        return floor_step(train, aesara.config.floatX)
    return original_step(train, args.original) if name == "original" else port_step(train, name)


def epoch_batches(train, size=OPTIONS["batch_size"]):
    order = np.random.RandomState(SEED).permutation(len(train[0]))
    return [order[i:i + size] for i in range(0, len(order), size)]


def work_of(step, train, batches):
    """What a step's time grows with: tokens for the packed graph and the floor, padded steps × rows for
    scan graphs."""
    lengths = [np.array([len(train[0][t]) for t in b]) for b in batches]
    return sum(int(l.sum()) if step in ("fast", "floor") else int(l.max()) * len(l) for l in lengths)


def time_in_turns(steps: dict, batches_of: dict, repeats: int) -> dict:
    """Seconds per repeat of each step over its minibatches, the steps taking turns minibatch by minibatch.
    A step returning `(value, seconds)` times itself (the floor, which counts only its products)."""
    names = list(steps)
    seconds = {name: [] for name in names}
    for name in names:
        steps[name](batches_of[name][0])  # warm-up: first calls allocate
    for _ in range(repeats):
        totals = dict.fromkeys(names, 0.0)
        for k in range(len(batches_of[names[0]])):
            for name in names if k % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                out = steps[name](batches_of[name][k])
                elapsed = time.perf_counter() - start
                if isinstance(out, tuple):
                    out, elapsed = out
                totals[name] += elapsed
                if not np.all(np.isfinite(out)):
                    raise SystemExit(f"{name}: non-finite cost during the benchmark")
        for name in names:
            seconds[name].append(totals[name])
    return seconds


def run_speed_worker(args):
    """Time the steps on the same minibatches, in turns; print one JSON line."""
    import dltutorials_is  # noqa: F401  (first: it points Aesara at a real BLAS)

    train = load_training_set(args.protocol, args.data_dir)
    batches = epoch_batches(train)
    timed = batches[:args.updates] if args.updates else batches
    built = {name: build_step(name, train, args) for name in args.steps}
    seconds = time_in_turns({n: b[0] for n, b in built.items()}, dict.fromkeys(built, timed), args.repeats)
    predicted = epoch_batches(train, VALID_BATCH_SIZE)[:max(1, len(timed) // 4)]
    predicting = time_in_turns({n: b[1] for n, b in built.items()}, dict.fromkeys(built, predicted), args.repeats)
    result = {"updates": len(timed), "updates_per_epoch": len(batches)}
    for name, values in seconds.items():
        per_epoch = work_of(name, train, batches) / work_of(name, train, timed)
        result[name] = {"seconds_per_update": float(np.median(values)) / len(timed),
                        "seconds_per_epoch": float(np.median(values)) * per_epoch,
                        "ratio": None, "epoch_ratio": None, "predict_ratio": None}
    if "original" in seconds:
        for name in seconds:
            result[name].update(
                ratio=float(np.median(np.array(seconds[name]) / np.array(seconds["original"]))),
                epoch_ratio=result[name]["seconds_per_epoch"] / result["original"]["seconds_per_epoch"],
                predict_ratio=float(np.median(np.array(predicting[name]) / np.array(predicting["original"]))))
    print(json.dumps(result), flush=True)


def run_memory_worker(args):
    """Peak memory of one step over the epoch's largest minibatches; print one JSON line."""
    import dltutorials_is  # noqa: F401

    train = load_training_set(args.protocol, args.data_dir)
    batches = sorted(epoch_batches(train), key=lambda b: -max(len(train[0][t]) for t in b))
    step = build_step(args.steps[0], train, args)[0]
    before = peak_rss_mb()
    for indices in batches[:args.memory_batches]:
        step(indices)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "rss_before_mb": before}), flush=True)


def importance_p(train, args):
    """P of the IS row: the artefact's (checked against this training set), else a random one."""
    n = len(train[0])
    if args.importance:
        from dltutorials_is.fim.driver import load_importance
        from dltutorials_is.fim.lstm import train_fingerprint
        return load_importance(args.importance, train_fingerprint(train), n)
    score = np.random.RandomState(1).lognormal(sigma=0.5, size=n)
    return score / score.sum()


def run_sampler_worker(args):
    """Our step on importance-sampled vs uniformly sampled minibatches, in turns; print one JSON line."""
    import dltutorials_is  # noqa: F401
    from dltutorials_is.models.lstm import LstmModel
    from dltutorials_is.sampling.samplers import make_sampler

    train = load_training_set(args.protocol, args.data_dir)
    n = len(train[0])
    model = LstmModel(dict(OPTIONS, optimizer="adadelta"), train, SEED)
    model.optimiser
    draws = {}
    for kind, p in (("uniform", None), ("importance", importance_p(train, args))):
        sampler = make_sampler(kind, n, OPTIONS["batch_size"], p)
        draws[kind] = list(sampler.epoch(np.random.RandomState(SEED)))[:args.updates]
    steps = {kind: (lambda draw: model.train_step(*draw).cost) for kind in draws}
    seconds = time_in_turns(steps, draws, args.repeats)
    tokens = {kind: sum(len(train[0][t]) for indices, _ in draws[kind] for t in indices) for kind in draws}
    per_update = np.array(seconds["importance"]) / np.array(seconds["uniform"])
    print(json.dumps({"per_update": float(np.median(per_update)),
                      "per_token": float(np.median(per_update)) * tokens["uniform"] / tokens["importance"],
                      "tokens": tokens}), flush=True)


def worker(kind, protocol, floatX, steps, args) -> dict:
    """One worker subprocess; returns its JSON result, or a dict with an `error`."""
    env = dict(os.environ)
    env["AESARA_FLAGS"] = ",".join(filter(None, [env.get("AESARA_FLAGS", ""), f"floatX={floatX}"]))
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--protocol", protocol,
               "--steps", *steps, "--updates", str(args.updates_of[protocol]), "--repeats", str(args.repeats),
               "--memory-batches", str(args.memory_batches), "--original", args.original]
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += ["--importance", args.importance] if args.importance else []
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no message"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", nargs="*", default=["paper", "tutorial"], choices=["tutorial", "paper"])
    parser.add_argument("--floatX", nargs="*", default=["float64", "float32"], choices=["float64", "float32"])
    parser.add_argument("--steps", nargs="*", default=["original", "fast", "floor"],
                        choices=["original", "fast", "tutorial", "floor"])
    parser.add_argument("--updates", type=int, default=None,
                        help="minibatches timed per repeat (default: 20 for the paper protocol, the whole epoch for "
                             "the tutorial's; 0: the whole epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the minibatches (median reported)")
    parser.add_argument("--memory-batches", type=int, default=3, help="largest minibatches run for peak memory")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--no-sampler", action="store_true", help="skip the IS / uniform row")
    parser.add_argument("--importance", help="FIM artefact whose P the IS row samples with (default: a random P)")
    parser.add_argument("--original", default=DEFAULT_ORIGINAL, help="folder with the original lstm.py and imdb.py")
    parser.add_argument("--data-dir", help="folder holding imdb.pkl (default: the project's data folder)")
    parser.add_argument("--worker", choices=["speed", "memory", "sampler"], help=argparse.SUPPRESS)
    parser.add_argument("--protocol", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        {"speed": run_speed_worker, "memory": run_memory_worker, "sampler": run_sampler_worker}[args.worker](args)
        return
    args.updates_of = {"paper": 20, "tutorial": 0} if args.updates is None else dict.fromkeys(args.protocols, args.updates)

    print(f"{args.repeats} repeats, steps in turns on the same minibatches; {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'protocol':<9}{'floatX':<8}{'step':<10}{'updates':>8}{'s/update':>10}{'s/epoch':>9}"
          f"{'÷ original':>11}{'epoch ÷':>9}{'predict ÷':>10}{'peak MB':>9}")
    for protocol in args.protocols:
        for floatX in args.floatX:
            speed = worker("speed", protocol, floatX, args.steps, args)
            if "error" in speed:
                print(f"{protocol:<9}{floatX:<8}FAILED: {speed['error']}", flush=True)
                continue
            for step in args.steps:
                memory = {} if args.no_memory or step == "floor" else worker("memory", protocol, floatX, [step], args)
                r = speed[step]
                ratio = "" if r["ratio"] is None else \
                    f"{r['ratio']:11.3f}{r['epoch_ratio']:9.3f}{r['predict_ratio']:10.3f}"
                print(f"{protocol:<9}{floatX:<8}{step:<10}{speed['updates']:8d}{r['seconds_per_update']:10.4f}"
                      f"{r['seconds_per_epoch']:9.1f}{ratio:<30}{memory.get('peak_rss_mb', float('nan')):9.0f}",
                      flush=True)
            if not args.no_sampler and protocol == "paper":
                sampled = worker("sampler", protocol, floatX, ["fast"], args)
                print(f"{protocol:<9}{floatX:<8}IS ÷ uniform, our step: "
                      + (f"FAILED: {sampled['error']}" if "error" in sampled else
                         f"{sampled['per_token']:.3f} per token, {sampled['per_update']:.3f} per update "
                         f"(tokens {sampled['tokens']})"), flush=True)
    print("÷ original: median over repeats of (this step's seconds / the original's) on the same minibatches; "
          "epoch ÷: the same for\nthe extrapolated epoch; predict ÷: the same for predicting classes (dropout off) "
          f"on {VALID_BATCH_SIZE}-review minibatches; peak MB: ru_maxrss of a process running the epoch's "
          f"{args.memory_batches} largest minibatches with that step alone")


if __name__ == "__main__":
    main()
