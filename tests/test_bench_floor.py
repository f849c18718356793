"""The LSTM benchmark's floor calls the BLAS directly: its products must be the ones it claims to time.

The floor (`benchmarks/bench_lstm.py`) backs README claims that some speed goals lie below what this
machine's BLAS allows; a wrong leading dimension or operand order would time other products (or read out
of bounds) and the claim would rest on nothing.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_lstm.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lstm_floor_tests", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_row_major_gemm_computes_the_product_it_times(bench, dtype, transpose_a, transpose_b):
    rng = np.random.RandomState(0)
    m, n, k = 5, 7, 3
    a = rng.uniform(-1, 1, (k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.uniform(-1, 1, (n, k) if transpose_b else (k, n)).astype(dtype)
    c = rng.uniform(-1, 1, (m, n)).astype(dtype)
    expected = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b) + c
    bench.RowMajorGemm(dtype)(a, b, c, m, n, k, transpose_a, transpose_b, beta=1.0)
    tolerance = 1e-6 if dtype == "float32" else 1e-14  # sums of 3 products of numbers within ±1, plus one
    np.testing.assert_allclose(c, expected, rtol=0, atol=tolerance)


def test_the_floor_runs_one_recurrent_product_per_time_step_over_the_rows_still_running(bench, monkeypatch):
    train = ([[1] * 3, [1] * 5, [1] * 2], [0, 1, 0])
    shapes = []
    original_call = bench.RowMajorGemm.__call__

    def recording(self, a, b, c, m, n, k, transpose_a=False, transpose_b=False, beta=0.0):
        shapes.append((m, n, k, transpose_a, transpose_b))
        return original_call(self, a, b, c, m, n, k, transpose_a, transpose_b, beta)

    monkeypatch.setattr(bench.RowMajorGemm, "__call__", recording)
    update, _ = bench.floor_step(train, "float64")
    shapes.clear()
    update([0, 1, 2])
    d, g = 128, 512
    running = [3, 3, 2, 1, 1]  # lengths 5, 3, 2
    assert shapes == ([(10, g, d, False, False)] + [(r, g, d, False, False) for r in running]
                      + [(r, d, g, False, True) for r in running]
                      + [(10, d, g, False, True), (d, g, 10, True, False), (d, g, 10, True, False)])
