"""FIM for the LSTM: the fast private trainer equals the tutorial's graph, and P belongs to its run."""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

import aesara
import aesara.tensor as at

from dltutorials_is.fim import driver as fim
from dltutorials_is.fim.lstm import (
    BASES,
    LstmFimSpec,
    default_importance_path,
    expected_options,
    init_fingerprint,
    initial_state,
    load_or_mine_lstm_importance,
    train_fingerprint,
)
from dltutorials_is.graphs.lstm import dropout, init_params, random_stream
from dltutorials_is.models.base import reseed_first_streams
from dltutorials_is.tutorials.lstm import train_lstm

N_WORDS, DIM = 30, 6
OPTIONS = {"n_words": N_WORDS, "dim_proj": DIM, "ydim": 2, "use_dropout": True, "seed": 123, "protocol": "tutorial"}


@pytest.fixture(autouse=True)
def float64():
    previous = aesara.config.floatX
    aesara.config.floatX = "float64"
    yield
    aesara.config.floatX = previous


def tiny_train(seed=0, n=6):
    rng = np.random.RandomState(seed)
    reviews = [list(rng.randint(1, N_WORDS, size=rng.randint(2, 10))) for _ in range(n)]
    reviews[0] = reviews[0][:1] * 3  # one word repeated: its embedding row gets three gradients
    return reviews, [int(v) for v in rng.randint(0, 2, size=n)]


def tiny_params(seed=1):
    return init_params(OPTIONS, np.random.RandomState(seed))


@pytest.mark.parametrize("use_dropout", [True, False])
def test_fast_trainer_equals_the_tutorials_graph(use_dropout):
    train, params = tiny_train(), tiny_params()
    runs = {}
    for trainer in ("plain", "fast"):
        spec = LstmFimSpec(train, params, OPTIONS, use_dropout=use_dropout, trainer=trainer, lr=1.0, eps=0.05)
        run = spec.build()
        runs[trainer] = [run(i) for i in range(len(train[0]))]
    for plain, fast in zip(runs["plain"], runs["fast"]):
        assert plain.iterations == fast.iterations > 1
        assert plain.converged and fast.converged
        assert fast.loss == pytest.approx(plain.loss, rel=1e-10)
        assert set(fast.scores) == {(b, k) for b in BASES for k in fim.SCORE_KINDS}
        for key, value in plain.scores.items():
            assert fast.scores[key] == pytest.approx(value, rel=1e-9), key


def test_dropout_masks_depend_on_the_review_index_only():
    train, params = tiny_train(), tiny_params()
    run = LstmFimSpec(train, params, OPTIONS, eps=0.05).build()
    first = [run(i) for i in (2, 0, 2)]
    assert first[0] == first[2]  # same review, same result, whatever ran in between
    no_dropout = LstmFimSpec(train, params, OPTIONS, eps=0.05, use_dropout=False).build()(2)
    assert no_dropout.scores != first[0].scores


def test_partial_reseed_gives_the_masks_of_a_full_reseed():
    v = at.matrix()
    full, partial = random_stream(5), random_stream(5)
    on = aesara.shared(1.0)
    f_full = aesara.function([v], dropout(v, on, full))
    f_partial = aesara.function([v], dropout(v, on, partial))
    ones = np.ones((1, 16))
    for seed in (7, 123456):
        full.seed(seed)
        reseed_first_streams(partial, seed, 16)
        for _ in range(3):
            np.testing.assert_array_equal(f_full(ones), f_partial(ones))


def _content(path):
    art = fim.read_artefact(path)
    art.pop("timing")
    return pickle.dumps(art, protocol=4)


def test_mining_is_the_same_for_any_n_jobs(tmp_path):
    train, params = tiny_train(n=5), tiny_params()
    spec = LstmFimSpec(train, params, OPTIONS, eps=0.05)
    quiet = {"progress": False, "log": lambda s: None}
    fim.mine(spec, tmp_path / "one.pkl", n_jobs=1, shard_size=5, **quiet)
    fim.mine(spec, tmp_path / "two.pkl", n_jobs=2, shard_size=2, **quiet)
    assert _content(tmp_path / "one.pkl") == _content(tmp_path / "two.pkl")


def write_tiny_imdb(data_dir, n_train=40, n_test=12):
    rng = np.random.RandomState(3)

    def split(n):
        return [list(map(int, rng.randint(1, 50, size=rng.randint(3, 9)))) for _ in range(n)], \
            [int(v) for v in rng.randint(0, 2, size=n)]

    with open(data_dir / "imdb.pkl", "wb") as f:
        pickle.dump(split(n_train), f)
        pickle.dump(split(n_test), f)


def test_initial_state_is_the_main_runs_w0(tmp_path):
    write_tiny_imdb(tmp_path)
    options = {"protocol": "tutorial", "n_words": N_WORDS, "maxlen": 7, "test_size": 5, "dim_proj": DIM}
    seen = {}

    class Captured(Exception):
        pass

    def capture(train, params, model_options):
        seen.update(train=train, params=params)
        raise Captured

    with pytest.raises(Captured):
        train_lstm(**options, data_dir=tmp_path, seed=9, sampler="importance", p=capture, saveto="",
                   max_epochs=1)
    train, params = initial_state(options, seed=9, data_dir=tmp_path)
    assert train == seen["train"]
    assert list(params) == list(seen["params"])
    for name in params:
        np.testing.assert_array_equal(params[name], seen["params"][name])
    assert init_fingerprint(params) == init_fingerprint(seen["params"])
    _, other = initial_state(options, seed=10, data_dir=tmp_path)
    assert init_fingerprint(other) != init_fingerprint(params)


def test_load_or_mine_mines_once_then_refuses_a_mismatched_run(tmp_path):
    train, params = tiny_train(n=4), tiny_params()
    path = tmp_path / "p.pkl"
    lines = []
    p = load_or_mine_lstm_importance(path, train, params, OPTIONS, n_jobs=1, log=lines.append, eps=0.05)
    assert len(p) == 4 and p.sum() == pytest.approx(1.0)
    assert any("Mining" in line for line in lines) and any("effective sample size" in line for line in lines)
    again = load_or_mine_lstm_importance(path, train, params, OPTIONS, log=lines.append)
    np.testing.assert_array_equal(p, again)
    by_displacement = load_or_mine_lstm_importance(path, train, params, OPTIONS, score="displacement",
                                                   log=lines.append)
    assert not np.array_equal(p, by_displacement)

    other_train = tiny_train(seed=5, n=4)
    with pytest.raises(fim.FIMError, match="different training set"):
        load_or_mine_lstm_importance(path, other_train, params, OPTIONS, log=lines.append)
    with pytest.raises(fim.FIMError, match="different W\\(0\\)"):
        load_or_mine_lstm_importance(path, train, tiny_params(seed=2), OPTIONS, log=lines.append)
    with pytest.raises(fim.FIMError, match="holds P for 4 samples"):
        load_or_mine_lstm_importance(path, tiny_train(n=5), params, OPTIONS, log=lines.append)
    assert train_fingerprint(train) != train_fingerprint(other_train)


def test_bad_fim_options_are_refused():
    train, params = tiny_train(), tiny_params()
    with pytest.raises(ValueError, match="unknown base"):
        LstmFimSpec(train, params, OPTIONS, bases=("Wx",))
    with pytest.raises(ValueError, match="unknown private trainer"):
        LstmFimSpec(train, params, OPTIONS, trainer="numba")
    with pytest.raises(ValueError, match="eps > 0"):
        LstmFimSpec(train, params, OPTIONS, eps=0)
    with pytest.raises(ValueError, match="review 1 is empty"):
        LstmFimSpec(([[3], []], [0, 1]), params, OPTIONS)


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    """A tiny artefact mined for OPTIONS (float64), and the run it belongs to."""
    previous = aesara.config.floatX
    aesara.config.floatX = "float64"
    path = tmp_path_factory.mktemp("mined") / "p.pkl"
    train, params = tiny_train(n=4), tiny_params()
    load_or_mine_lstm_importance(path, train, params, OPTIONS, n_jobs=1, log=lambda s: None, eps=0.05)
    aesara.config.floatX = previous
    return path, train, params


@pytest.mark.parametrize("change, named", [
    ({"use_dropout": False}, "use_dropout = True there, False here"),
    ({"decay_c": 0.01}, "decay_c = 0.0 there, 0.01 here"),
    ({"maxlen": 50}, "maxlen = None there, 50 here"),
    ({"protocol": "paper"}, "protocol = 'tutorial' there, 'paper' here"),
    ({"seed": 7}, "seed = 123 there, 7 here"),
])
def test_an_artefact_mined_with_other_run_options_is_refused_naming_them(mined, change, named):
    path, train, params = mined
    with pytest.raises(fim.FIMError, match=named) as error:
        load_or_mine_lstm_importance(path, train, params, {**OPTIONS, **change}, log=lambda s: None)
    message = str(error.value)
    assert "mined for another run" in message and "delete" in message and "the options it was mined with" in message


def test_other_floatx_is_refused_and_fim_settings_are_reported_not_refused(mined):
    path, train, params = mined
    aesara.config.floatX = "float32"
    with pytest.raises(fim.FIMError, match="floatX = 'float64' there, 'float32' here"):
        load_or_mine_lstm_importance(path, train, params, OPTIONS, log=lambda s: None)
    aesara.config.floatX = "float64"
    lines = []
    p = load_or_mine_lstm_importance(path, train, params, OPTIONS, log=lines.append)  # mined with eps 0.05
    assert len(p) == 4
    assert any(f"Loading importance from {path} (mined with ε = 0.05, step size 1.0" in line for line in lines)
    with pytest.raises(fim.FIMError, match="use_dropout = True there, False here"):
        fim.load_importance(path, train_fingerprint(train), 4, expected=expected_options({**OPTIONS, "use_dropout": False}))


def test_default_file_names_differ_for_another_private_model():
    options = {**OPTIONS, "maxlen": 100, "test_size": 500}
    names = {default_importance_path(options), default_importance_path({**options, "use_dropout": False}),
             default_importance_path({**options, "decay_c": 0.01})}
    assert len(names) == 3
    assert default_importance_path(options).name == "fim_tutorial_seed123_d6_w30_maxlen100_test500.pkl"


def _script(name: str):
    path = Path(__file__).resolve().parents[1] / "lstm" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lstm_{name}_script_fim_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_refuse_p_mined_for_another_run(tmp_path, capsys):
    """lstm/fim.py mines for one set of flags; lstm/variance.py and lstm/train.py --is with another
    dropout or weight decay stop before any work, naming the option."""
    write_tiny_imdb(tmp_path)
    flags = ["--data-dir", str(tmp_path), "--dim-proj", "4", "--n-words", "50", "--maxlen", "9", "--test-size", "5"]
    out = tmp_path / "p.pkl"
    assert _script("fim").main([*flags, "--out", str(out), "--n-jobs", "1", "--eps", "0.5", "--max-iters", "5"]) == 0
    capsys.readouterr()
    assert _script("variance").main([*flags, "--importance", str(out), "--no-use-dropout", "--samples", "3"]) == 1
    assert "error: " in (err := capsys.readouterr().err) and "use_dropout = True there, False here" in err
    train = _script("train")
    assert train.main([*flags, "--is", "--importance", str(out), "--decay-c", "0.5", "--saveto", "",
                       "--max-epochs", "1"]) == 1
    out_text, err = capsys.readouterr()
    assert "decay_c = 0.0 there, 0.5 here" in err
    assert "Optimization" not in out_text  # refused before training started

    # With the flags it was mined with, train_lstm's own model options ask for exactly this artefact.
    args = train.parse_args([*flags, "--is", "--importance", str(out)])
    provider, seen = train.fim_importance(args), {}

    class Captured(Exception):
        pass

    def capture(train_split, params, model_options):
        seen["p"] = provider(train_split, params, model_options)
        raise Captured

    with pytest.raises(Captured):
        train_lstm(**{name: getattr(args, name) for name in train.HYPERPARAMETERS}, p=capture)
    p, others = seen["p"]
    assert p.sum() == pytest.approx(1.0) and {"displacement", "path"} <= set(others) <= {"displacement", "path", "grad0"}
    assert f"Loading importance from {out} (mined with ε = 0.5" in capsys.readouterr().out
