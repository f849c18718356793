"""The one engine, through the compiled models: IS weights keep the gradient unbiased, every weight
reaches the step with its own sample, a diverged step is not applied, FIM's score tracker, and the
loop's hooks."""
from __future__ import annotations

import numpy as np
import pytest

from dltutorials_is.fim.driver import ScoreTracker, matrix_norm
from dltutorials_is.graphs import rnnrbm as rnnrbm_graph
from dltutorials_is.loop import Hook, TrainingDiverged, fit
from dltutorials_is.models import lstm as lstm_models
from dltutorials_is.models.base import stream_states
from dltutorials_is.models.lstm import LstmModel
from dltutorials_is.models.rnnrbm import RnnRbmConfig, RnnRbmModel
from dltutorials_is.optimisers import Optimiser
from dltutorials_is.sampling.samplers import ImportanceSampler

import aesara  # noqa: E402

pytestmark = pytest.mark.skipif(aesara.config.floatX != "float64", reason="these checks are written for float64")

# Six reviews of uneven lengths over a 9-word vocabulary, both labels.
REVIEWS = ([[1, 4, 2, 8], [3, 6], [2, 2, 5, 7, 1], [8], [5, 3, 3], [6, 1, 4, 2, 2, 7]], [0, 1, 1, 0, 1, 0])
P = np.array([0.05, 0.3, 0.1, 0.25, 0.2, 0.1])
LSTM_OPTIONS = {"dim_proj": 3, "n_words": 9, "ydim": 2, "use_dropout": False, "decay_c": 0.25, "optimizer": "sgd",
                "lrate": 0.1}


@pytest.fixture(scope="module")
def lstm():
    model = LstmModel(LSTM_OPTIONS, REVIEWS, seed=3)
    params = model.get_params()
    params["Wemb"] = params["Wemb"] * 50.0  # larger inputs, so every gate matters
    params["b"] = np.array([0.3, -0.2])
    model.set_params(params)
    return model


def _step_gradient(model, indices, weights):
    """The gradient `train_step` computes for (indices, weights); the model is put back afterwards."""
    params = model.get_params()
    model.train_step(np.asarray(indices), np.asarray(weights, dtype="float64"))
    gradient = model.last_gradients()
    model.set_params(params)
    return gradient


def test_lstm_weighted_steps_are_an_unbiased_estimate_of_the_full_batch_gradient(lstm):
    """E_P[w_i ∇ℓ_i] with w_i = 1/(N p_i) is the mean gradient over all N reviews (paper eq. 7)."""
    n = len(P)
    full = _step_gradient(lstm, np.arange(n), np.ones(n))
    expected = {name: sum(P[i] * g for i, g in enumerate(
        _step_gradient(lstm, [i], [1.0 / (n * P[i])])[name] for i in range(n))) for name in full}
    for name, value in full.items():
        assert np.abs(value).max() > 1e-6, name  # a real check, not 0 == 0
        np.testing.assert_allclose(expected[name], value, rtol=1e-10, atol=1e-14, err_msg=name)
    # The one-sample gradient of the probe is the same function at batch size 1, weight 1.
    for name, value in lstm.gradient(2).items():
        np.testing.assert_allclose(value, _step_gradient(lstm, [2], [1.0])[name], rtol=1e-10, atol=1e-14)


def test_rnnrbm_weighted_steps_are_unbiased_with_fixed_gibbs_noise():
    config = RnnRbmConfig(n_hidden=5, n_hidden_recurrent=4, batch_size=6, k=2, lr=0.01, seed=11)
    rng = np.random.RandomState(0)
    chunks = [(rng.rand(6, 88) < 0.15).astype("float64") for _ in range(len(P))]
    model = RnnRbmModel(config, np.random.RandomState(config.seed), chunks)
    params, streams = model.get_params(), model.random_states()
    n_eval = len(model.eval_srng.state_updates)

    def step_gradient(i, weight):
        model.set_params(params)
        model.set_random_states(streams)  # the same Gibbs noise for every chunk
        return model.train_step_with_gradients(np.array([i]), np.array([weight]))[1]

    weighted = {name: sum(P[i] * step_gradient(i, 1.0 / (len(P) * P[i]))[name] for i in range(len(P)))
                for name in rnnrbm_graph.PARAM_NAMES}
    # The full-batch gradient from the other compiled path, `gradient`, its chains fed the same noise:
    # the evaluation graph's random states are the first ones of the training stream.
    model.set_params(params)
    model.set_random_states({f"eval/{k}": streams[f"train/{k}"] for k in range(n_eval)})
    full = {name: np.mean([model.gradient(i)[name] for i in range(len(P))], axis=0) for name in weighted}
    for name in rnnrbm_graph.PARAM_NAMES:
        assert np.abs(full[name]).max() > 1e-8, name
        np.testing.assert_allclose(weighted[name], full[name], rtol=1e-10, atol=1e-14, err_msg=name)


def test_a_diverged_step_is_not_applied_and_stops_the_loop():
    config = RnnRbmConfig(n_hidden=5, n_hidden_recurrent=4, batch_size=6, k=1, lr=0.01, seed=11)
    chunk = (np.random.RandomState(0).rand(6, 88) < 0.15).astype("float64")
    model = RnnRbmModel(config, np.random.RandomState(config.seed), [chunk, chunk])
    good = model.get_params()
    poisoned = dict(good, bh=np.full_like(good["bh"], np.inf))
    model.set_params(poisoned)
    seen = []

    class Record(Hook):
        def diverged(self, model, progress):
            seen.append((progress.updates, model.get_params()))

    with pytest.raises(TrainingDiverged, match="update 1 .*not applied"):
        fit(model, ImportanceSampler(np.array([0.5, 0.5]), 1), np.random.RandomState(0), 1, [Record()])
    (updates, params), = seen
    assert updates == 1
    for name, value in poisoned.items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)  # the step was undone


def words_by_column(graph: str, sequences) -> list:
    """Each minibatch column's words, from the graph's layout (padded x and mask, or packed)."""
    if graph == "tutorial":
        x, mask = sequences
        return [x[mask[:, column] > 0, column].tolist() for column in range(x.shape[1])]
    tokens, _, owner, lengths = sequences
    return [tokens[owner == column].tolist() for column in range(len(lengths))]


@pytest.mark.parametrize("graph", ["fast", "tutorial"])
def test_every_weight_reaches_the_step_with_its_own_sample(monkeypatch, graph):
    """Record what the compiled step is fed: each column's words, label and weight belong to one review."""
    fed = []

    def recording_optimiser(name):
        def build(lr, tparams, grads, inputs, cost):
            def f_grad_shared(*arguments):
                *sequences, y, weights = arguments
                fed.append((words_by_column(graph, sequences), np.asarray(y).copy(), weights.copy()))
                return np.asarray(0.5)

            return Optimiser(f_grad_shared, lambda lrate: None, [], [])

        return build

    monkeypatch.setattr(lstm_models, "get_optimiser", recording_optimiser)
    model = LstmModel({**LSTM_OPTIONS, "graph": graph}, REVIEWS, seed=3)
    drawn = []

    class Record(Hook):
        def after_update(self, model, progress):
            drawn.append((progress.indices, progress.weights))

    fit(model, ImportanceSampler(P, 4), np.random.RandomState(5), 3, [Record()])
    assert len(fed) == len(drawn) == 3 * 2  # ceil(6 / 4) updates per epoch
    n = len(P)
    for (words, y, weights), (indices, sampler_weights) in zip(fed, drawn):
        np.testing.assert_array_equal(weights, sampler_weights)
        for column, i in enumerate(indices):
            assert words[column] == REVIEWS[0][i]
            assert y[column] == REVIEWS[1][i]
            assert weights[column] == pytest.approx(1.0 / (n * P[i]), rel=1e-15)
    assert len({float(w) for _, _, ws in fed for w in ws}) > 1  # the weights do differ


def test_score_tracker_on_a_hand_computed_two_step_run():
    lr = 0.5
    w0 = np.ones((2, 2))
    g1, g2 = np.array([[3.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 4.0], [0.0, 0.0]])
    tracker = ScoreTracker(w0, "fro")
    tracker.step(matrix_norm(g1, "fro"))
    tracker.step(matrix_norm(g2, "fro"))
    w = w0 - lr * g1 - lr * g2  # [[-0.5, -1], [1, 1]]
    scores = tracker.finish(w, "W")
    assert scores[("W", "norm")] == pytest.approx(np.sqrt(3.25), rel=1e-15)
    assert scores[("W", "displacement")] == pytest.approx(2.5, rel=1e-15)  # lr·‖g1 + g2‖ = 0.5·5
    assert scores[("W", "path")] == pytest.approx(7.0, rel=1e-15)  # ‖g1‖ + ‖g2‖
    assert scores[("W", "grad0")] == pytest.approx(3.0, rel=1e-15)
    assert scores[("W", "displacement")] <= lr * scores[("W", "path")]  # the triangle inequality (eq. 25)
    assert matrix_norm(np.array([[3.0, 0.0], [0.0, 4.0]]), "spectral") == pytest.approx(4.0)


def test_lstm_state_round_trip_continues_a_run_exactly():
    """get_state/set_state carry parameters, optimiser accumulators and the dropout stream."""
    options = dict(LSTM_OPTIONS, use_dropout=True, optimizer="adadelta")
    model = LstmModel(options, REVIEWS, seed=4)
    batches = [(np.array([0, 2, 4]), np.ones(3)), (np.array([1, 3, 5]), np.ones(3))]
    model.train_step(*batches[0])
    saved = model.get_state()
    assert any(np.abs(a).max() > 0 for a in saved["optimiser"])
    first = model.train_step(*batches[1]).cost, model.get_params()
    model.set_state(saved)
    assert stream_states(model.trng)[0].tolist() == saved["streams"][0].tolist()
    second = model.train_step(*batches[1]).cost, model.get_params()
    assert first[0] == second[0]
    for name, value in first[1].items():
        np.testing.assert_array_equal(second[1][name], value, err_msg=name)
