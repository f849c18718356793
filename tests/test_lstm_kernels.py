"""The fast LSTM graph (packed minibatches, `graphs.lstm_kernels`) against the tutorial's scan graph:
the same costs, per-sample losses, gradients, updates and predictions, on uneven minibatches with
dropout on and weights ≠ 1; the C kernels against their numpy `perform`; the packed layout."""
from __future__ import annotations

import numpy as np
import pytest
import aesara
import aesara.tensor as at

from dltutorials_is.datasets.imdb import pack_sequences, prepare_data
from dltutorials_is.graphs.lstm_kernels import PackedLSTMForward
from dltutorials_is.graphs.row_ops import gather_rows, scatter_add_rows
from dltutorials_is.models.lstm import LstmModel

N_WORDS, DIM = 40, 5
PY_MODE = aesara.compile.mode.Mode(linker="py", optimizer="fast_run")  # perform(): no C compiler needed


def relative_error(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


def reviews(n=24, seed=0, longest=17):
    rng = np.random.RandomState(seed)
    seqs = [list(rng.randint(1, N_WORDS, size=rng.randint(1, longest))) for _ in range(n)]
    return seqs, [int(v) for v in rng.randint(0, 2, size=n)]


def test_packing_lays_out_each_step_as_the_reviews_still_running():
    seqs = [[1, 2], [3, 4, 5], [6], [7, 8, 9]]
    tokens, batch_sizes, owner, lengths = pack_sequences(seqs)
    assert batch_sizes.tolist() == [4, 3, 2]
    assert owner.tolist() == [1, 3, 0, 2, 1, 3, 0, 1, 3]  # longest first, ties in minibatch order
    assert tokens.tolist() == [3, 7, 1, 6, 4, 8, 2, 5, 9]
    x, mask, _ = prepare_data(seqs, [0] * 4)
    np.testing.assert_array_equal(lengths, mask.sum(axis=0))
    np.testing.assert_array_equal(np.sort(tokens), np.sort(x[mask > 0]))


@pytest.mark.parametrize("batch_sizes", [[3, 3, 2, 2, 1], [1, 1, 1, 1], [4]])
def test_c_kernels_match_their_numpy_reference_and_the_numeric_gradient(batch_sizes):
    batch_sizes = np.array(batch_sizes, dtype="int64")
    xW, b, U, w, bs = at.matrix(), at.vector(), at.matrix(), at.matrix(), at.vector(dtype="int64")
    hidden = PackedLSTMForward()(xW, b, U, bs)[0]
    cost = (hidden * w).sum()
    inputs, wrt = [xW, b, U, bs, w], [xW, b, U]
    outputs = [hidden, *at.grad(cost, wrt)]
    f_c = aesara.function(inputs, outputs)
    f_py = aesara.function(inputs, outputs, mode=PY_MODE)
    rng = np.random.RandomState(0)
    n = int(batch_sizes.sum())
    args = [rng.randn(n, 4 * DIM), rng.randn(4 * DIM), 0.5 * rng.randn(DIM, 4 * DIM), batch_sizes, rng.randn(n, DIM)]
    for c_value, py_value in zip(f_c(*args), f_py(*args)):
        np.testing.assert_allclose(c_value, py_value, rtol=1e-12, atol=1e-14)
    f_cost = aesara.function(inputs, cost)
    for value, analytic in zip(args[:3], f_c(*args)[1:]):
        k = value.size // 2 + 1
        step = np.zeros_like(value)
        step.flat[k] = 1e-6
        value += step
        up = f_cost(*args)
        value -= 2 * step
        down = f_cost(*args)
        value += step
        assert (up - down) / 2e-6 == pytest.approx(analytic.flat[k], rel=1e-6, abs=1e-9)


def test_kernels_refuse_a_layout_that_is_not_packed():
    xW, b, U, bs = at.matrix(), at.vector(), at.matrix(), at.vector(dtype="int64")
    f = aesara.function([xW, b, U, bs], PackedLSTMForward()(xW, b, U, bs)[0])
    with pytest.raises(ValueError, match="non-increasing"):
        f(np.zeros((5, 4 * DIM)), np.zeros(4 * DIM), np.zeros((DIM, 4 * DIM)), np.array([2, 3], dtype="int64"))


def models(options, seqs, labels, mode=None):
    options = {"dim_proj": DIM, "n_words": N_WORDS, "ydim": 2, "use_dropout": True, "decay_c": 0.01,
               "optimizer": "adadelta", **options}
    with aesara.config.change_flags(**({"mode": mode} if mode else {})):
        return {g: LstmModel({**options, "graph": g}, (seqs, labels), seed=7) for g in ("fast", "tutorial")}


@pytest.mark.parametrize("floatX, tolerance", [("float64", 1e-10), ("float32", 2e-5)])
def test_fast_graph_computes_the_tutorials_function(floatX, tolerance):
    """float32: both graphs round each of a few hundred operations to 2^-24 ≈ 6e-8, in another order
    inside the matrix products; their relative differences stay within a few hundred of those."""
    seqs, labels = reviews()
    with aesara.config.change_flags(floatX=floatX):
        pair = models({}, seqs, labels)
        fast, tutorial = pair["fast"], pair["tutorial"]
        rng = np.random.RandomState(3)
        for _ in range(3):  # training steps: dropout on, uneven lengths, weights ≠ 1
            index = rng.choice(len(seqs), 9, replace=False)
            weights = rng.uniform(0.2, 3.0, size=9)
            a, b = fast.train_step(index, weights), tutorial.train_step(index, weights)
            assert a.cost == pytest.approx(b.cost, rel=tolerance)
            for name, value in tutorial.last_gradients().items():
                assert relative_error(fast.last_gradients()[name], value) < tolerance, name
        for name, value in tutorial.get_params().items():  # after the updates
            assert relative_error(fast.get_params()[name], value) < tolerance, name
        everyone = np.arange(len(seqs))
        assert relative_error(fast.losses(everyone), tutorial.losses(everyone)) < tolerance
        batches = [everyone[:10], everyone[10:]]
        assert fast.error((seqs, labels), batches) == tutorial.error((seqs, labels), batches)
        assert np.array_equal(fast.f_pred(*fast.minibatch(everyone)[0]),
                              tutorial.f_pred(*tutorial.minibatch(everyone)[0]))
        for name, value in tutorial.gradient(4).items():
            assert relative_error(fast.gradient(4)[name], value) < tolerance, name


def test_without_a_c_compiler_the_fast_graph_gives_the_same_numbers():
    seqs, labels = reviews(n=8, longest=6)
    pair = models({"use_dropout": False, "decay_c": 0.0}, seqs, labels, mode=PY_MODE)
    index, weights = np.arange(8), np.linspace(0.5, 2.0, 8)
    a, b = pair["fast"].train_step(index, weights), pair["tutorial"].train_step(index, weights)
    assert a.cost == pytest.approx(b.cost, rel=1e-12)
    for name, value in pair["tutorial"].last_gradients().items():
        assert relative_error(pair["fast"].last_gradients()[name], value) < 1e-10, name


def test_row_ops_equal_aesaras_indexing_bit_for_bit_and_refuse_bad_indices():
    matrix, index, values = at.matrix(), at.vector(dtype="int64"), at.matrix()

    def outputs(gathered, scattered):  # each op and its gradient
        return [gathered, scattered, at.grad((gathered * values).sum(), matrix),
                at.grad((scattered * matrix).sum(), values)]

    ours = outputs(gather_rows(matrix, index), scatter_add_rows(values, index, matrix.shape[0]))
    aesaras = outputs(matrix[index], at.inc_subtensor(at.zeros_like(matrix)[index], values))
    rng = np.random.RandomState(2)
    args = [rng.randn(6, 3), np.array([4, 0, 4, 5, 4, 1], dtype="int64"), rng.randn(6, 3)]  # repeated rows
    for mode in (None, PY_MODE):
        for a, b in zip(aesara.function([matrix, index, values], ours, mode=mode)(*args),
                        aesara.function([matrix, index, values], aesaras)(*args)):
            np.testing.assert_array_equal(a, b)
    f = aesara.function([matrix, index], ours[0])
    with pytest.raises(IndexError, match="out of range"):
        f(args[0], np.array([6], dtype="int64"))
