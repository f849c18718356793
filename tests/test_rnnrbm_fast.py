"""The RNN-RBM's fast graph (`RnnRbmConfig.graph = "fast"`) against the tutorial's scan graph, and
its compiled ops against their numpy `perform` and against Aesara's own MRG sampling.

Tolerances: float64 agrees to 1e-10 relative (the graphs differ only in the order of sums: BLAS
products over all frames instead of one frame at a time). float32 agrees to 1e-4 relative on the
parameters after a few steps (measured: 2e-7): each step's gradient carries a few float32 roundings
(~6e-8 each) of differently ordered sums, which the SGD updates add up. The random states must be
equal in both precisions (a draw advances the generator whatever it samples). The Gibbs samples are
the same here too; in general, in float32, a last-bit difference of a sigmoid flips a sample with a
probability of ~1e-7 per unit, after which the runs differ by one sample's worth of gradient."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

# dltutorials_is is imported before aesara on purpose: importing the package sets up Aesara's BLAS.
from dltutorials_is.graphs import rnnrbm_ops as ops
from dltutorials_is.models.rnnrbm import RnnRbmConfig, RnnRbmModel

import aesara  # noqa: E402
import aesara.tensor as at  # noqa: E402
from aesara.compile.mode import Mode  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from aesara.sandbox.rng_mrg import MRG_RandomStream  # noqa: E402

TINY = dict(n_hidden=6, n_hidden_recurrent=5, r=(40, 52), k=3, lr=0.05, seed=7)
STEPS = [(0, 1.0), (1, 0.5), (2, 2.0), (0, 1.0)]  # (chunk, weight); chunk 2 is a single frame
C_MODE, PY_MODE = Mode(linker="cvm", optimizer="fast_run"), Mode(linker="py", optimizer="fast_run")


def chunks(dtype: str) -> list[np.ndarray]:
    rng = np.random.RandomState(3)
    return [(rng.rand(frames, 12) < 0.3).astype(dtype) for frames in (9, 5, 1)]


def trained(graph: str, dtype: str) -> RnnRbmModel:
    """A tiny model after STEPS, its step results in `.results`."""
    with aesara.config.change_flags(floatX=dtype):
        config = RnnRbmConfig(**TINY, graph=graph, floatX=dtype)
        model = RnnRbmModel(config, np.random.RandomState(config.seed), chunks(dtype))
        model.results = [model.train_step(np.array([i]), np.array([w])) for i, w in STEPS]
    return model


@pytest.fixture(scope="module")
def float64_models():
    return trained("fast", "float64"), trained("tutorial", "float64")


def assert_same_run(fast: RnnRbmModel, tutorial: RnnRbmModel, rtol: float) -> None:
    for a, b in zip(fast.results, tutorial.results):
        np.testing.assert_allclose([a.cost, a.monitor], [b.cost, b.monitor], rtol=rtol)
        assert a.applied and b.applied
    for name, value in tutorial.get_params().items():
        np.testing.assert_allclose(fast.get_params()[name], value, rtol=rtol, atol=rtol * np.abs(value).max(),
                                   err_msg=name)
    fast_states, tutorial_states = fast.random_states(), tutorial.random_states()
    assert fast_states.keys() == tutorial_states.keys()
    for key, state in tutorial_states.items():
        np.testing.assert_array_equal(fast_states[key], state, err_msg=key)


def test_fast_graph_trains_as_the_tutorials_graph_in_float64(float64_models):
    assert_same_run(*float64_models, rtol=1e-10)


def test_fast_graph_without_a_c_compiler_trains_the_same(float64_models):
    """Where Aesara has no C compiler every op runs its `perform`: the same run, more slowly."""
    with aesara.config.change_flags(cxx=""):
        assert_same_run(trained("fast", "float64"), float64_models[1], rtol=1e-10)


def test_fast_graph_evaluates_and_takes_gradients_as_the_tutorials_graph(float64_models):
    fast, tutorial = float64_models
    data = chunks("float64")
    a, b = fast.evaluate(data), tutorial.evaluate(data)
    assert a.keys() == b.keys()
    np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-10)
    ga, gb = fast.gradient(0), tutorial.gradient(0)
    for name in gb:
        np.testing.assert_allclose(ga[name], gb[name], rtol=1e-10, atol=1e-10 * np.abs(gb[name]).max(), err_msg=name)
    assert_same_run(fast, tutorial, rtol=1e-10)  # evaluation draws from its own stream: training's is untouched


def test_fast_graph_trains_as_the_tutorials_graph_in_float32():
    assert_same_run(trained("fast", "float32"), trained("tutorial", "float32"), rtol=1e-4)


def test_a_run_continues_identically_across_graphs(float64_models):
    """A state saved by one graph restores into the other: the same random streams, in the same order."""
    fast, tutorial = float64_models
    state = tutorial.get_state()
    fast.set_state(state)
    for key, value in state["streams"].items():
        np.testing.assert_array_equal(fast.random_states()[key], value)
    a = fast.train_step(np.array([1]), np.array([1.0]))
    b = tutorial.train_step(np.array([1]), np.array([1.0]))
    np.testing.assert_allclose([a.cost, a.monitor], [b.cost, b.monitor], rtol=1e-10)


# -- the ops ---------------------------------------------------------------------------------------


def mrg_reference(pre: np.ndarray, draws: int, nstreams: int | None):
    """`draws` successive `srng.binomial(p=sigmoid(pre))` samples of Aesara's own MRG op, the state
    they start from and the state they leave (floatX is pre's type, as in a model: it sets the uniforms')."""
    srng = MRG_RandomStream(seed=1234)
    x = at.tensor(dtype=pre.dtype, shape=(None,) * pre.ndim)
    with aesara.config.change_flags(floatX=pre.dtype.name):
        sample = srng.binomial(size=x.shape, n=1, p=at.sigmoid(x), dtype=pre.dtype, nstreams=nstreams)
    (state, *_), = srng.state_updates
    start = state.get_value()
    draw = aesara.function([x], sample)
    samples = [draw(pre) for _ in range(draws)]
    return start, samples, state.get_value()


def chained_draws(start: np.ndarray, pre: np.ndarray, draws: int, mode: Mode):
    """The same draws by SigmoidBernoulli: by rows in, by columns between, by rows out."""
    x = at.tensor(dtype=pre.dtype, shape=(None,) * pre.ndim)
    state, samples = at.imatrix(), []
    current = state
    for i in range(draws):
        current, sample = ops.SigmoidBernoulli(rows_in=i == 0, rows_out=i == draws - 1)(current, x)
        samples.append(sample)
    outputs = aesara.function([state, x], [current, *samples], mode=mode)(start, pre)
    return outputs[1:], outputs[0]


def hard_pre_activations(start: np.ndarray, shape: tuple, dtype: str) -> np.ndarray:
    """Pre-activations whose sigmoid lies next to the first draw's uniforms (so the exact sigmoid
    decides), with saturated, infinite and NaN values among them."""
    n = int(np.prod(shape))
    draws = ops.mrg_draws(start.T.copy(), n).astype("float64") * 4.656612873077392578125e-10
    pre = np.log(draws / (1 - draws))
    pre[::7] = np.random.RandomState(0).normal(scale=3, size=pre[::7].shape)
    pre[1::11] = [-800.0, 800.0, -np.inf, np.inf, np.nan, 40.0, -40.0][: len(pre[1::11])]
    return pre.astype(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("nstreams", [None, 7])  # 7: fewer sub-streams than numbers, each serves several
def test_sigmoid_bernoulli_draws_what_aesaras_mrg_binomial_draws(dtype, nstreams):
    shape = (6, 9)
    start, _, _ = mrg_reference(np.zeros(shape, dtype), 1, nstreams)
    pre = hard_pre_activations(start, shape, dtype)
    start, expected, end = mrg_reference(pre, 3, nstreams)
    for mode in (C_MODE, PY_MODE):
        samples, state = chained_draws(start, pre, 3, mode)
        for a, b in zip(samples, expected):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(state, end)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rnn_recurrence_c_code_matches_perform_and_scan(dtype):
    rng = np.random.RandomState(5)
    A, W, dU = (rng.normal(size=s).astype(dtype) for s in ((7, 4), (4, 4), (7, 4)))
    a, w, du = at.matrix(dtype=dtype), at.matrix(dtype=dtype), at.matrix(dtype=dtype)
    u = ops.RnnRecurrence()(a, w)
    outputs = [u, *aesara.grad((u * du).sum(), [a, w])]
    c, py = (aesara.function([a, w, du], outputs, mode=mode)(A, W, dU) for mode in (C_MODE, PY_MODE))
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for x, y in zip(c, py):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)

    def step(a_t, u_tm1, w):
        return at.tanh(a_t + at.dot(u_tm1, w))

    u_scan, _ = aesara.scan(step, sequences=a, outputs_info=at.zeros((4,), dtype=dtype), non_sequences=w)
    scan = aesara.function([a, w, du], [u_scan, *aesara.grad((u_scan * du).sum(), [a, w])])(A, W, dU)
    for x, y in zip(c, scan):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)

