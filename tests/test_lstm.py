"""The LSTM port: graph, gradients, weighted cost, optimisers, training loop and script (its diff
against the original tutorial is in test_diff_against_original.py)."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import aesara
import aesara.tensor as at

from dltutorials_is.graphs import lstm as graph
from dltutorials_is.models import lstm as model_module
from dltutorials_is.optimisers import OPTIMISERS, Optimiser, get_optimiser
from dltutorials_is.tutorials import lstm as training

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO / "data"
needs_real_data = pytest.mark.skipif(not (REAL_DATA / "imdb.pkl").exists(),
                                     reason="data/imdb.pkl not built (run python data/prepare_imdb.py)")

pytestmark = pytest.mark.skipif(aesara.config.floatX != "float64", reason="these checks are written for float64")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------------------------
# A tiny model, compiled once: forward pass, losses, weighted cost, gradients
# ---------------------------------------------------------------------------------------------

TINY = {"n_words": 7, "dim_proj": 3, "ydim": 2, "use_dropout": True, "decay_c": 0.25, "graph": "tutorial"}


def tiny_batch():
    """Three reviews of lengths 4, 2 and 3, time-major and padded, as prepare_data makes them."""
    x = np.array([[1, 4, 2], [3, 6, 5], [2, 0, 1], [5, 0, 0]], dtype="int64")
    mask = (np.array([[1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 0, 0]])).astype("float64")
    y = np.array([0, 1, 1], dtype="int64")
    return x, mask, y


@pytest.fixture(scope="module")
def tiny():
    params = graph.init_params(TINY, np.random.RandomState(5))
    params["b"] = np.array([0.3, -0.2])  # nonzero biases, so a mix-up of b's blocks would show
    params["lstm_b"] = np.random.RandomState(6).randn(4 * TINY["dim_proj"]) * 0.5
    params["Wemb"] *= 50.0  # larger inputs, so every gate matters in the check
    tparams = graph.to_shared(params)
    model = graph.build_model(tparams, TINY, graph.random_stream(1))
    grads = at.grad(model.cost, wrt=list(tparams.values()))
    outputs = [model.cost, model.per_sample_loss, model.pred, *grads]
    f = aesara.function(model.inputs, outputs, name="tiny")  # use_noise stays 0: deterministic
    return params, tparams, f


def numpy_forward(params, x, mask, dim):
    """Reference LSTM with the tutorial's gate blocks written out: i, f, o, then the tanh cell."""
    h = np.zeros((x.shape[1], dim))
    c = np.zeros_like(h)
    pooled = np.zeros_like(h)
    for t in range(x.shape[0]):
        pre = params["Wemb"][x[t]] @ params["lstm_W"] + params["lstm_b"] + h @ params["lstm_U"]
        i, f, o = (sigmoid(pre[:, k * dim:(k + 1) * dim]) for k in range(3))
        candidate = np.tanh(pre[:, 3 * dim:4 * dim])
        m = mask[t][:, None]
        c = m * (f * c + i * candidate) + (1 - m) * c
        h = m * (o * np.tanh(c)) + (1 - m) * h
        pooled += m * h
    proj = pooled / mask.sum(axis=0)[:, None] * 0.5  # dropout switched off halves the units
    logits = proj @ params["U"] + params["b"]
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_forward_pass_matches_a_numpy_lstm_with_padding(tiny):
    params, _, f = tiny
    x, mask, y = tiny_batch()
    pred = f(x, mask, y, np.ones(3))[2]
    np.testing.assert_allclose(pred, numpy_forward(params, x, mask, TINY["dim_proj"]), rtol=1e-12)


def test_cell_input_weights_are_the_tanh_block():
    lstm_W = np.arange(2 * 4 * 5).reshape(2, 20)
    assert graph.gate_slice("cell", 5) == slice(15, 20)
    np.testing.assert_array_equal(graph.cell_input_weights(lstm_W, 5), lstm_W[:, 15:20])
    with pytest.raises(ValueError, match="unknown gate"):
        graph.gate_slice("candidate", 5)


def test_cost_is_the_weighted_mean_of_per_sample_losses_plus_decay(tiny):
    params, _, f = tiny
    x, mask, y = tiny_batch()
    weights = np.array([0.5, 2.0, 1.25])
    cost, loss, pred = f(x, mask, y, weights)[:3]
    np.testing.assert_allclose(loss, -np.log(pred[np.arange(3), y] + 1e-8), rtol=1e-14)
    decay = TINY["decay_c"] * np.sum(params["U"] ** 2)
    np.testing.assert_allclose(cost, np.mean(weights * loss) + decay, rtol=1e-14)
    cost_uniform = f(x, mask, y, np.ones(3))[0]
    np.testing.assert_allclose(cost_uniform, loss.mean() + decay, rtol=1e-14)


def test_gradient_of_the_weighted_cost_matches_finite_differences(tiny):
    params, tparams, f = tiny
    x, mask, y = tiny_batch()
    weights = np.array([0.5, 2.0, 1.25])
    analytic = dict(zip(params, f(x, mask, y, weights)[3:]))
    rng = np.random.RandomState(0)
    step = 1e-6
    for name, shared in tparams.items():
        value = shared.get_value()
        entries = [tuple(rng.randint(n) for n in value.shape) for _ in range(4)]
        if name == "Wemb":  # rows of words that occur, or the gradient is trivially 0
            entries = [(w, rng.randint(value.shape[1])) for w in (1, 2, 5, 6)]
        for entry in entries:
            costs = []
            for sign in (1, -1):
                moved = value.copy()
                moved[entry] += sign * step
                shared.set_value(moved)
                costs.append(f(x, mask, y, weights)[0])
            shared.set_value(value)
            numeric = (costs[0] - costs[1]) / (2 * step)
            assert analytic[name][entry] == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, entry)


def test_initial_parameters_are_drawn_in_the_tutorials_order():
    options = {"n_words": 11, "dim_proj": 4, "ydim": 2}
    params = graph.init_params(options, np.random.RandomState(123))
    rng = np.random.RandomState(123)
    expected_wemb = 0.01 * rng.rand(11, 4)
    ortho = [np.linalg.svd(rng.randn(4, 4))[0] for _ in range(8)]
    expected_u = 0.01 * rng.randn(4, 2)
    assert list(params) == list(graph.PARAM_NAMES)
    np.testing.assert_array_equal(params["Wemb"], expected_wemb)
    np.testing.assert_array_equal(params["lstm_W"], np.concatenate(ortho[:4], axis=1))
    np.testing.assert_array_equal(params["lstm_U"], np.concatenate(ortho[4:], axis=1))
    np.testing.assert_array_equal(params["U"], expected_u)
    assert not params["lstm_b"].any() and not params["b"].any()
    np.testing.assert_allclose(params["lstm_W"][:, :4].T @ params["lstm_W"][:, :4], np.eye(4), atol=1e-12)


def test_load_params_names_what_does_not_fit(tmp_path):
    params = graph.init_params({"n_words": 5, "dim_proj": 2, "ydim": 2}, np.random.RandomState(0))
    with pytest.raises(graph.ModelFileError, match="does not exist"):
        graph.load_params(tmp_path / "missing.npz", OrderedDict(params))
    np.savez(tmp_path / "small.npz", **{k: v for k, v in params.items() if k != "U"})
    with pytest.raises(graph.ModelFileError, match="no array 'U'"):
        graph.load_params(tmp_path / "small.npz", OrderedDict(params))
    np.savez(tmp_path / "other.npz", **dict(params, Wemb=np.zeros((9, 2))))
    with pytest.raises(graph.ModelFileError, match=r"Wemb .* shape \(9, 2\)"):
        graph.load_params(tmp_path / "other.npz", OrderedDict(params))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(graph.ModelFileError, match="not a readable"):
        graph.load_params(tmp_path / "junk.npz", OrderedDict(params))


# ---------------------------------------------------------------------------------------------
# Optimisers: the tutorial's arithmetic, on a least-squares problem whose gradient is a Gemm
# ---------------------------------------------------------------------------------------------

def reference_steps(name, grads_per_step, p0, lr):
    """The tutorial's update rules in numpy."""
    p = p0.copy()
    state = {k: np.zeros_like(p0) for k in ("rg", "rg2", "ru2", "ud")}
    for g in grads_per_step:
        if name == "sgd":
            p = p - lr * g
        elif name == "adadelta":
            state["rg2"] = 0.95 * state["rg2"] + 0.05 * g * g
            ud = -np.sqrt(state["ru2"] + 1e-6) / np.sqrt(state["rg2"] + 1e-6) * g
            state["ru2"] = 0.95 * state["ru2"] + 0.05 * ud * ud
            p = p + ud
        else:
            state["rg"] = 0.95 * state["rg"] + 0.05 * g
            state["rg2"] = 0.95 * state["rg2"] + 0.05 * g * g
            state["ud"] = 0.9 * state["ud"] - 1e-4 * g / np.sqrt(state["rg2"] - state["rg"] ** 2 + 1e-4)
            p = p + state["ud"]
    return p


@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_optimisers_apply_the_tutorials_update_rules(name):
    rng = np.random.RandomState(1)
    a_value, t_value, w0 = rng.randn(5, 3), rng.randn(5, 2), rng.randn(3, 2)
    tparams = OrderedDict(W=aesara.shared(w0.copy(), name="W"))
    a, target, weights = at.matrix("a"), at.matrix("t"), at.vector("w")
    per_sample = at.square(at.dot(a, tparams["W"]) - target).sum(axis=1)
    cost = (weights * per_sample).mean()
    (grad,) = at.grad(cost, wrt=[tparams["W"]])
    lr = at.scalar("lr")
    f_grad_shared, f_update, _, _ = get_optimiser(name)(lr, tparams, [grad], [a, target, weights], cost)

    w = np.ones(5) * 0.7
    grads = []
    for _ in range(3):
        current = tparams["W"].get_value()
        grads.append(2 * a_value.T @ ((a_value @ current - t_value) * w[:, None]) / 5)
        cost_value = f_grad_shared(a_value, t_value, w)
        assert cost_value == pytest.approx(np.mean(w * ((a_value @ current - t_value) ** 2).sum(axis=1)))
        f_update(0.05)
    np.testing.assert_allclose(tparams["W"].get_value(), reference_steps(name, grads, w0, 0.05), rtol=1e-12)


def test_unknown_optimiser_is_named():
    with pytest.raises(ValueError, match="adam"):
        get_optimiser("adam")


# ---------------------------------------------------------------------------------------------
# Training on a small slice of the real reviews
# ---------------------------------------------------------------------------------------------

# The 69 training reviews under 40 tokens: small enough for adadelta to fit in a few seconds.
SMALL_RUN = dict(dim_proj=16, n_words=2000, maxlen=40, batch_size=4, test_size=50, use_dropout=False,
                 dispFreq=1000, validFreq=-1, saveFreq=-1, data_dir=REAL_DATA)


def train_errors(stdout: str) -> list[float]:
    return [float(line.split()[1]) for line in stdout.splitlines() if line.startswith("Train ")]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    saveto = tmp_path_factory.mktemp("lstm") / "model.npz"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        errors = training.train_lstm(max_epochs=30, saveto=str(saveto), **SMALL_RUN)
    return errors, out.getvalue(), saveto


@needs_real_data
def test_training_lowers_the_training_error(small_run):
    errors, stdout, saveto = small_run
    during = train_errors(stdout)[:-1]  # the last line is the best model's final evaluation
    assert during[-1] < during[0] - 0.2, during
    assert "Seen 69 samples" in stdout and "The code run for 30 epochs" in stdout
    with np.load(saveto) as saved:
        assert set(graph.PARAM_NAMES) <= set(saved.files)
        assert saved["history_errs"].shape == (len(during), 2)
        assert float(saved["train_err"]) == errors[0]
    with open(f"{saveto}.pkl", "rb") as f:
        assert pickle.load(f)["dim_proj"] == 16


class ModelBuilt(Exception):
    """Stops train_lstm right after the parameters are set up (no compilation needed)."""


@needs_real_data
def test_reload_model_loads_the_file_it_names(tmp_path, monkeypatch):
    options = {"n_words": SMALL_RUN["n_words"], "dim_proj": SMALL_RUN["dim_proj"], "ydim": 2}
    saved = graph.init_params(options, np.random.RandomState(7))
    np.savez(tmp_path / "elsewhere.npz", history_errs=[], **saved)
    monkeypatch.chdir(tmp_path)  # no lstm_model.npz here: the original would have loaded that name
    loaded = {}

    class Capturing(model_module.LstmModel):
        def set_params(self, values):
            loaded.update(values)
            raise ModelBuilt

    monkeypatch.setattr(training, "LstmModel", Capturing)
    with pytest.raises(ModelBuilt):
        training.train_lstm(reload_model=str(tmp_path / "elsewhere.npz"), saveto="", **SMALL_RUN)
    for name in graph.PARAM_NAMES:
        np.testing.assert_array_equal(loaded[name], saved[name])
    with pytest.raises(graph.ModelFileError, match="other --dim-proj"):
        training.train_lstm(reload_model=str(tmp_path / "elsewhere.npz"), saveto="", **dict(SMALL_RUN, dim_proj=8))


@needs_real_data
def test_a_nan_cost_stops_training_without_applying_it_and_keeps_the_last_good_model(tmp_path, monkeypatch, capsys):
    """The last good model is the best validated one: validated at update 17 (once per epoch), the
    cost is NaN at update 20."""
    good_values = []

    def optimiser_failing_at_update_20(name):
        """Stands in for the compiled pair: costs 0.69, then NaN at the 20th call; updates add 1."""

        def build(lr, tparams, grads, inputs, cost):
            calls = []

            def f_grad_shared(*inputs):
                *_, y, weights = inputs
                calls.append(len(y))
                return np.asarray(np.nan if len(calls) == 20 else 0.69)

            def f_update(lrate):
                for shared in tparams.values():
                    shared.set_value(shared.get_value() + 1.0)
                good_values.append(graph.get_values(tparams))

            return Optimiser(f_grad_shared, f_update, [], [])

        return build

    monkeypatch.setattr(model_module, "get_optimiser", optimiser_failing_at_update_20)
    saveto = tmp_path / "model.npz"
    result = training.train_lstm(max_epochs=2, saveto=str(saveto), **SMALL_RUN)
    out = capsys.readouterr().out
    assert result == training.DIVERGED
    assert "bad cost detected:  nan" in out and "update 20" in out
    assert len(good_values) == 19  # the 20th update was not applied
    assert "Saved the last good model (the best validated parameters)" in out
    with np.load(saveto) as saved:
        for name, value in good_values[16].items():  # validated after update 17
            np.testing.assert_array_equal(saved[name], value)
    assert Path(f"{saveto}.pkl").exists()


@needs_real_data
def test_importance_sampling_gets_p_late_and_passes_its_weights(monkeypatch):
    seen = {}

    def provider(train, initial_params, options):
        seen["n"], seen["params"] = len(train[0]), set(initial_params)
        p = 1.0 + np.arange(len(train[0])) % 3
        seen["p"] = p / p.sum()
        return seen["p"]

    weights_passed = []

    def recording_optimiser(name):
        def build(lr, tparams, grads, inputs, cost):
            def f_grad_shared(*inputs):
                weights_passed.append(inputs[-1])
                return np.asarray(0.69)

            return Optimiser(f_grad_shared, lambda lrate: None, [], [])

        return build

    monkeypatch.setattr(model_module, "get_optimiser", recording_optimiser)
    training.train_lstm(max_epochs=1, saveto="", sampler="importance", p=provider, **SMALL_RUN)
    assert seen["n"] == 69 and seen["params"] == set(graph.PARAM_NAMES)
    weights = np.concatenate(weights_passed)
    assert len(weights) == 69 and weights.dtype == aesara.config.floatX
    allowed = 1.0 / (69 * np.unique(seen["p"]))
    assert np.all(np.isclose(weights[:, None], allowed[None, :], rtol=1e-12).any(axis=1))
    assert len(np.unique(weights)) > 1


def test_a_uniform_p_is_said_in_words_when_training_starts(monkeypatch, capsys):
    def provider(train, initial_params, options):
        n = len(train[0])
        spread = 1.0 + np.arange(n) % 3
        return np.full(n, 1.0 / n), {"displacement": spread / spread.sum()}

    def no_training(name):
        def build(lr, tparams, grads, inputs, cost):
            return Optimiser(lambda *inputs: np.asarray(0.69), lambda lrate: None, [], [])

        return build

    monkeypatch.setattr(model_module, "get_optimiser", no_training)
    training.train_lstm(max_epochs=1, saveto="", sampler="importance", p=provider, **SMALL_RUN)
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: this P is uniform")]
    assert len(warnings) == 1 and "spread P more here are: displacement (bound 1.1" in warnings[0]
    assert out.index("eq. 13 speed-up bound 1") < out.index(warnings[0]) < out.index("Optimization")


# ---------------------------------------------------------------------------------------------
# The script's command line
# ---------------------------------------------------------------------------------------------

def _load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script = _load_script(REPO / "lstm" / "train.py", "lstm_train_script")


def test_script_defaults_are_the_originals():
    args = train_script.parse_args([])
    assert (args.max_epochs, args.test_size) == (100, 500)  # the original's __main__
    assert (args.dim_proj, args.patience, args.dispFreq, args.lrate, args.n_words) == (128, 10, 10, 0.0001, 10000)
    assert (args.optimizer, args.saveto, args.validFreq, args.saveFreq) == ("adadelta", "lstm_model.npz", 370, 1110)
    assert (args.maxlen, args.batch_size, args.valid_batch_size, args.use_dropout) == (100, 16, 64, True)
    assert (args.sampler, args.seed, args.protocol, args.floatX) == ("uniform", 123, "tutorial", "float64")
    assert train_script.parse_args(["--max_epochs", "3", "--dispFreq", "7"]).max_epochs == 3


@pytest.mark.parametrize("argv", [
    ["--dim-proj", "0"], ["--optimizer", "adam"], ["--valid-freq", "0"], ["--max-epochs", "-1"],
    ["--sampler", "importance"], ["--floatX", "float16"], ["--protocol", "swapped"], ["--lrate", "nan"],
    ["--n-words", "1"], ["--is", "--sampler", "replacement"], ["--importance", "p.npz"], ["--score", "norm"],
    ["--batch-size", "ten"],
])
def test_bad_flags_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_script.parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_missing_data_names_the_command_that_builds_it(tmp_path, capsys):
    assert train_script.main(["--data-dir", str(tmp_path), "--saveto", ""]) == 1
    assert "python data/prepare_imdb.py" in capsys.readouterr().err
