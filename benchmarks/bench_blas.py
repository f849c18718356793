"""GFLOP/s of Aesara-compiled dot products on the LSTM's shapes, under each BLAS this machine has.

Set-ups: ``default`` (an empty ``blas__ldflags``: the NumPy C-API loops Aesara 2.9.4 falls back to
with pip-installed NumPy) and, for each LP64 BLAS found (Intel MKL from the ``mkl`` wheel, SciPy's
bundled OpenBLAS, Debian's OpenBLAS and BLIS), that library on 1 and on 2 threads. Each set-up runs
in its own subprocess with its own ``AESARA_FLAGS`` and its own ``compiledir``, so no set-up reuses
another's compiled modules; set-ups are interleaved over ``--rounds`` to spread a shared machine's
load over all of them. Every product is checked against NumPy (float64 reference) and flagged WRONG
if it differs. A time is the median of ``--repeats`` loops of calls to the compiled function's VM
(the Python ``Function.__call__`` wrapper is left out, as inside ``scan``); tables show the median
over rounds, in GFLOP/s by wall time and by process CPU time.

    python benchmarks/bench_blas.py                    # every set-up found, float64 and float32
    python benchmarks/bench_blas.py --setups default mkl-1 scipy-openblas-1 --floatX float32
"""

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

SEQUENCE_LENGTH = 100  # T, the tutorial's maxlen: the input projection covers all steps in one product
DIM_PROJ = 128
GATES = 4 * DIM_PROJ
BATCHES = (16, 64)


def products(batch):
    """``name -> (shapes of the two operands, whether the first is transposed)``; all are forward or
    backward products of one LSTM layer (dim_proj 128, 4 gates) with this batch size."""
    steps = SEQUENCE_LENGTH * batch
    return {
        f"B={batch} input projection (T*B x 128)(128 x 512)": ((steps, DIM_PROJ), (DIM_PROJ, GATES), False),
        f"B={batch} weight gradient (128 x T*B)(T*B x 512)": ((steps, DIM_PROJ), (steps, GATES), True),
        f"B={batch} recurrent gemm (B x 128)(128 x 512)+C": ((batch, DIM_PROJ), (DIM_PROJ, GATES), False),
        f"B={batch} recurrent gradient (B x 512)(512 x 128)": ((batch, GATES), (GATES, DIM_PROJ), False),
    }


def all_products():
    cases = {}
    for batch in BATCHES:
        cases.update(products(batch))
    cases["B=1 gemv (128)(128 x 512)"] = ((DIM_PROJ,), (DIM_PROJ, GATES), False)
    return cases


def time_calls(call, repeats, min_seconds=0.05):
    """Median (wall, CPU) seconds per call, over ``repeats`` loops each lasting ``min_seconds`` or more.

    CPU time (all threads of this process) is far less disturbed than wall time when other jobs
    share the cores; for a one-thread BLAS it is close to the wall time on an idle machine.
    """
    call()
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            call()
        if time.perf_counter() - start >= min_seconds:
            break
        loops *= 2
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(loops):
            call()
        wall.append((time.perf_counter() - start_wall) / loops)
        cpu.append((time.process_time() - start_cpu) / loops)
    return float(np.median(wall)), float(np.median(cpu))


def run_worker(repeats):
    """Compile and time every product with the BLAS that ``AESARA_FLAGS`` names; print JSON lines."""
    from dltutorials_is import backend

    import aesara
    import aesara.tensor as at

    floatX = aesara.config.floatX
    rng = np.random.RandomState(1234)
    print(json.dumps({"blas": backend.describe()}), flush=True)
    for name, (shape_a, shape_b, transpose_a) in all_products().items():
        a_value = rng.uniform(-1, 1, shape_a).astype(floatX)
        b_value = rng.uniform(-1, 1, shape_b).astype(floatX)
        a, b = aesara.shared(a_value), aesara.shared(b_value)
        product = at.dot(a.T if transpose_a else a, b)
        expected = (a_value.T if transpose_a else a_value).astype(np.float64) @ b_value.astype(np.float64)
        if name.endswith("+C"):
            c_value = rng.uniform(-1, 1, expected.shape).astype(floatX)
            product = product + aesara.shared(c_value)
            expected = expected + c_value
        function = aesara.function([], product)
        ops = sorted({type(node.op).__name__ for node in function.maker.fgraph.apply_nodes})
        got = function()
        tolerance = 1e-10 if floatX == "float64" else 1e-4
        error = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
        wall, cpu = time_calls(function.vm, repeats)
        flops = 2 * np.prod(expected.shape) * (shape_a[0] if transpose_a else shape_a[-1])
        print(json.dumps(dict(product=name, wall_gflops=flops / wall / 1e9, cpu_gflops=flops / cpu / 1e9,
                              correct=error < tolerance, rel_error=error, ops=ops)), flush=True)


def setups():
    """``name -> (blas__ldflags, extra environment)`` for every set-up this machine can run."""
    from dltutorials_is import backend

    system_blis = backend._newest(glob.glob("/usr/lib/*-linux-gnu/libblis.so.4"))
    candidates = [
        ("mkl", backend._find_mkl(), "MKL_NUM_THREADS"),
        ("scipy-openblas", backend._find_scipy_openblas(), "OPENBLAS_NUM_THREADS"),
        ("system-openblas", backend._find_system_openblas(), "OPENBLAS_NUM_THREADS"),
        ("system-blis", system_blis and backend.BlasLibrary("BLIS (system)", system_blis), "BLIS_NUM_THREADS"),
    ]
    found = {"default": ("", {})}
    for short, library, thread_variable in candidates:
        if library is not None:
            for threads in (1, 2):
                found[f"{short}-{threads}"] = (library.ldflags, {thread_variable: str(threads)})
    return found


def run_setup(ldflags, extra_env, floatX, compiledir, repeats):
    """Run the worker in a subprocess for one set-up; return its JSON records."""
    env = dict(os.environ, **extra_env)
    # Only these flags: nothing else from the caller's AESARA_FLAGS should differ between set-ups.
    env["AESARA_FLAGS"] = ",".join([
        f"blas__ldflags={shlex.quote(ldflags)}", f"compiledir={compiledir}", f"floatX={floatX}",
    ])
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--repeats", str(repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last_line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no message"
        return [{"error": f"exit code {done.returncode}: {last_line}"}]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def print_table(title, names, results, key):
    """One row per product, one column per set-up: the median over rounds of ``key``."""
    print(f"\n{title}")
    print(f"{'':<52}" + "".join(f"{name:>18}" for name in names))
    for product in all_products():
        cells = []
        for name in names:
            values = [r[key] for r in results[name] if r.get("product") == product]
            wrong = any(not r["correct"] for r in results[name] if r.get("product") == product)
            cells.append("WRONG" if wrong else f"{np.median(values):.1f}" if values else "-")
        print(f"{product:<52}" + "".join(f"{cell:>18}" for cell in cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--setups", nargs="*", help="names to run (default: all found)")
    parser.add_argument("--floatX", nargs="*", default=["float64", "float32"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs of every set-up")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops per product in one run")
    args = parser.parse_args()
    if args.worker:
        run_worker(args.repeats)
        return
    available = setups()
    names = [name for name in (args.setups or available) if name in available]
    for name in set(args.setups or []) - set(available):
        print(f"{name}: not available here (available: {', '.join(available)})")
    print("OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s (left as they are)" % (
        os.environ.get("OPENBLAS_CORETYPE"), os.environ.get("OPENBLAS_L2_SIZE")))
    for name in names:
        ldflags, extra_env = available[name]
        print(f"{name:<20} {' '.join(f'{k}={v}' for k, v in extra_env.items()):<24} blas__ldflags={ldflags!r}")
    with tempfile.TemporaryDirectory(prefix="bench_blas_") as scratch:
        for floatX in args.floatX:
            results = {name: [] for name in names}
            loads = [os.getloadavg()[0]]
            for round_number in range(args.rounds):
                for name in names:
                    ldflags, extra_env = available[name]
                    compiledir = os.path.join(scratch, f"{name}-{floatX}")  # one per set-up, kept over rounds
                    records = run_setup(ldflags, extra_env, floatX, compiledir, args.repeats)
                    results[name].extend(records)
                    loads.append(os.getloadavg()[0])
                    for record in records:
                        if "error" in record:
                            print(f"{name} {floatX} round {round_number}: FAILED {record['error']}")
                        elif "blas" in record and round_number == 0:
                            print(f"{name} {floatX}: in use: {record['blas']}")
            print(f"\n### {floatX}: {args.rounds} rounds; 1-minute load average during the runs "
                  f"{min(loads):.2f}..{max(loads):.2f} (median {np.median(loads):.2f}) on {os.cpu_count()} cores")
            print_table(f"{floatX} GFLOP/s by wall time (median over rounds of the median of {args.repeats} loops)",
                        names, results, "wall_gflops")
            print_table(f"{floatX} GFLOP/s by process CPU time (all threads; robust to load)",
                        names, results, "cpu_gflops")


if __name__ == "__main__":
    main()
