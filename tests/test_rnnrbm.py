"""The RNN-RBM port: initial draws, CD gradient, the tutorial's chunk order, weighted SGD,
checkpoints, generation and error paths, on a tiny model and a few real Nottingham songs."""
from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

# dltutorials_is is imported before aesara on purpose: importing the package sets up Aesara's BLAS.
from dltutorials_is.datasets.chunks import chunk_arrays, make_chunks
from dltutorials_is.datasets.midi import midiread
from dltutorials_is.datasets.nottingham import split_files
from dltutorials_is.fim import driver as fim
from dltutorials_is.fim import rnnrbm as fim_rnnrbm
from dltutorials_is.graphs import rnnrbm as graph
from dltutorials_is.loop import TrainingDiverged
from dltutorials_is.models.rnnrbm import RnnRbmConfig, RnnRbmModel, initial_values
from dltutorials_is.replicate.backends import _variance_ratio
from dltutorials_is.sampling.samplers import SongOrderSampler, make_chunk_sampler
from dltutorials_is.tutorials.rnnrbm import CheckpointError, load_model, read_checkpoint, restore_checkpoint, train

import aesara  # noqa: E402
import aesara.tensor as at  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    """rnnrbm/<name>.py as a module (under a name no other test's script can shadow)."""
    spec = importlib.util.spec_from_file_location(f"rnnrbm_{name}_script", REPO / "rnnrbm" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate_script, train_script = _script("generate"), _script("train")

TINY = dict(n_hidden=7, n_hidden_recurrent=5, batch_size=20, k=2, lr=0.01, num_epochs=2, seed=123)


@pytest.fixture(scope="module")
def songs():
    """The first three training songs, cut to 50 frames (`make test` fetches the data)."""
    return [midiread(f, (21, 109), 0.3).piano_roll[:50] for f in split_files(None, "train")[:3]]


@pytest.fixture(scope="module")
def model():
    return RnnRbmModel(RnnRbmConfig(**TINY), np.random.RandomState(TINY["seed"]))


def test_initial_parameters_replay_the_tutorials_numpy_draws(model):
    rng = np.random.RandomState(TINY["seed"])
    assert model.srng.default_instance_seed == rng.randint(1 << 30)  # the MRG seed comes first
    n_v, n_h, n_u = 88, TINY["n_hidden"], TINY["n_hidden_recurrent"]
    expected = {
        "W": rng.normal(scale=0.01, size=(n_v, n_h)),
        "Wuh": rng.normal(scale=0.0001, size=(n_u, n_h)),
        "Wuv": rng.normal(scale=0.0001, size=(n_u, n_v)),
        "Wvu": rng.normal(scale=0.0001, size=(n_v, n_u)),
        "Wuu": rng.normal(scale=0.0001, size=(n_u, n_u)),
    }
    params = model.get_params()
    assert list(params) == ["W", "bv", "bh", "Wuh", "Wuv", "Wvu", "Wuu", "bu"]
    assert [model.params[n].name for n in params] == list(params)
    for name, value in expected.items():
        np.testing.assert_array_equal(params[name], value)
    for name in ("bv", "bh", "bu"):
        assert not params[name].any()


def test_cd_cost_gradient_matches_finite_differences():
    """With the negative particles fixed, d cost/d params (through the RNN too) is the exact gradient."""
    with aesara.config.change_flags(floatX="float64"):
        rng = np.random.RandomState(0)
        values = graph.initial_params(6, 4, 3, rng, "float64")
        values = {n: v + 0.3 * rng.randn(*v.shape) for n, v in values.items()}  # away from 0: all terms matter
        params = graph.shared_params(values)
        g = graph.build_training(params, graph.random_stream(5), k=1)
        negatives = at.matrix("negatives")
        order = list(graph.PARAM_NAMES)
        grads = aesara.grad(g.cost, [params[n] for n in order], consider_constant=[g.v_sample])
        f_cost = aesara.function([g.v, negatives], g.cost, givens={g.v_sample: negatives})
        f_grads = aesara.function([g.v, negatives], grads, givens={g.v_sample: negatives})
    v = (rng.rand(5, 6) < 0.5).astype("float64")
    v_neg = (rng.rand(5, 6) < 0.5).astype("float64")
    analytic = dict(zip(order, f_grads(v, v_neg)))
    eps = 1e-6
    for name in order:
        base = params[name].get_value()
        numeric = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[idx] += sign * eps
                params[name].set_value(shifted)
                numeric[idx] += sign * f_cost(v, v_neg) / (2 * eps)
        params[name].set_value(base)
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)
        assert np.abs(analytic[name]).max() > 1e-4, name  # a real check, not 0 == 0


def test_song_order_sampler_reproduces_the_tutorials_loop():
    lengths = [130, 45, 200, 101, 20]
    fake = [np.full((n, 2), s, dtype="float64") + np.arange(n)[:, None] * 1000 for s, n in enumerate(lengths)]
    batch = 50
    # The tutorial: numpy.random.shuffle(dataset) in place, then every song's chunks in order.
    rng = np.random.RandomState(0xBEEF)
    dataset = list(fake)
    expected = []
    for _ in range(3):
        rng.shuffle(dataset)
        expected += [seq[i : i + batch] for seq in dataset for i in range(0, len(seq), batch)]
    chunks = make_chunks(fake, batch)
    assert chunks[:4] == [(0, 0), (0, 50), (0, 100), (1, 0)]
    arrays = chunk_arrays(fake, batch)
    sampler, rng = SongOrderSampler(chunks), np.random.RandomState(0xBEEF)
    got = [(arrays[int(i[0])], w) for _ in range(3) for i, w in sampler.epoch(rng)]
    assert len(got) == len(expected)
    for (chunk, weight), want in zip(got, expected):
        np.testing.assert_array_equal(chunk, want)
        assert weight.tolist() == [1.0]
    assert make_chunk_sampler("replacement", chunks).n == len(chunks)


def test_weight_scales_the_sgd_step(model, songs):
    model.use_data([songs[0][:20].astype(model.config.floatX)])
    params, states = model.get_params(), model.random_states()
    deltas = {}
    for weight in (1.0, 2.5):
        model.set_params(params)
        model.set_random_states(states)  # the same Gibbs samples for both steps
        model.train_step(np.array([0]), np.array([weight]))
        deltas[weight] = {n: v - params[n] for n, v in model.get_params().items()}
    model.set_params(params)
    for name in graph.PARAM_NAMES:
        assert np.abs(deltas[1.0][name]).max() > 0, name
        np.testing.assert_allclose(deltas[2.5][name], 2.5 * deltas[1.0][name], rtol=1e-9, atol=1e-15)


def _run(songs, epochs, checkpoint, log=None, state=None, model=None, lines=None):
    config = RnnRbmConfig(**{**TINY, "num_epochs": epochs})
    rng = np.random.RandomState(config.seed)
    if model is None:
        model = RnnRbmModel(config, rng)
    model.config.num_epochs = epochs
    sampler = SongOrderSampler(make_chunks(songs, config.batch_size))
    train(model, songs, rng, sampler, {"valid": songs[:1]}, state, checkpoint, log,
          print_fn=(lines.append if lines is not None else print))
    return model


def test_training_logs_checkpoints_and_resumes_exactly(songs, tmp_path):
    lines = []
    straight = _run(songs, 2, tmp_path / "a.npz", tmp_path / "a.jsonl", lines=lines)
    assert [l.split("  ")[0] for l in lines if l.startswith("Epoch")] == ["Epoch 1/2", "Epoch 2/2"]
    records = [json.loads(l) for l in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_cost", "train_monitor", "valid_cost", "valid_monitor", "train_monitor_during_epoch"):
        assert all(np.isfinite(r[key]) for r in records), key
    assert records[0]["updates"] == len(make_chunks(songs, TINY["batch_size"]))
    assert records[1]["train_monitor"] != records[0]["train_monitor"]

    # Resuming: a model trained one epoch further is put back to the epoch-1 checkpoint.
    model = _run(songs, 1, tmp_path / "b.npz")
    _run(songs, 2, tmp_path / "elsewhere.npz", model=model)
    state = restore_checkpoint(model, tmp_path / "b.npz")
    assert state.epochs_done == 1
    _run(songs, 2, tmp_path / "b.npz", state=state, model=model)
    for name, value in straight.get_params().items():
        np.testing.assert_array_equal(model.get_params()[name], value, err_msg=name)

    # A NaN stops training and leaves the last good checkpoint untouched.
    before = (tmp_path / "b.npz").read_bytes()
    state = restore_checkpoint(model, tmp_path / "b.npz")
    model.params["W"].set_value(np.full_like(model.params["W"].get_value(), np.nan))
    with pytest.raises(TrainingDiverged, match="epoch 3, update 1 .*not applied"):
        _run(songs, 3, tmp_path / "b.npz", state=state, model=model)
    assert (tmp_path / "b.npz").read_bytes() == before

    loaded, state = load_model(tmp_path / "a.npz")
    assert state.epochs_done == 2 and loaded.config == straight.config
    for name, value in straight.get_params().items():
        np.testing.assert_array_equal(loaded.get_params()[name], value, err_msg=name)

    # generate.py: MIDI that reads back to a 200-frame piano-roll (at most) and a PNG.
    assert generate_script.main(["--checkpoint", str(tmp_path / "a.npz"), "--out", str(tmp_path / "s"), "--count", "1"]) == 0
    roll = midiread(tmp_path / "s1.mid", (21, 109), 0.3).piano_roll
    assert roll.shape[0] <= 200 and roll.shape[1] == 88 and roll.any()
    assert (tmp_path / "s1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint.*rnnrbm/train.py"):
        read_checkpoint(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an RNN-RBM checkpoint"):
        read_checkpoint(tmp_path / "other.npz")
    # A checkpoint of this project with an entry missing or of the wrong size: named, not a KeyError.
    header = {"format": np.array("dltutorials-is/rnnrbm-checkpoint"), "config": np.array(RnnRbmConfig(**TINY).to_json())}
    np.savez(tmp_path / "edited.npz", **header)
    with pytest.raises(CheckpointError, match="has no entry 'param/W'"):
        read_checkpoint(tmp_path / "edited.npz")
    params = {f"param/{name}": np.zeros(3) for name in graph.PARAM_NAMES}
    np.savez(tmp_path / "edited.npz", **header, **params)
    with pytest.raises(CheckpointError, match=r"malformed entry \(parameter W .* shape \(3,\), the config says .* \(88, 7\)"):
        read_checkpoint(tmp_path / "edited.npz")


def test_train_script_reports_missing_data(tmp_path, capsys):
    assert train_script.main(["--data-dir", str(tmp_path), "--saveto", str(tmp_path / "m.npz")]) == 1
    assert "python data/prepare_nottingham.py" in capsys.readouterr().err


def test_fim_mines_chunks_reproducibly_and_feeds_the_importance_sampler(model, songs, tmp_path):
    config = RnnRbmConfig(**TINY)
    spec = fim_rnnrbm.RnnRbmFimSpec(songs, initial_values(config), config, eps=45.0, lr=0.05, max_iters=15)
    assert spec.n_samples == len(make_chunks(songs, TINY["batch_size"]))
    np.testing.assert_array_equal(spec.chunk(3), chunk_arrays(songs, 20)[3])
    pickle.loads(pickle.dumps(spec))  # workers receive it pickled
    run = spec.build()
    first, again = run(2), None
    run(0)
    again = run(2)  # a chunk's result does not depend on what the worker ran before
    assert first == again
    assert first.iterations >= 1 and set(first.scores) == {(b, k) for b in fim_rnnrbm.BASES for k in fim.SCORE_KINDS}
    assert first.scores[("W", "path")] >= first.scores[("W", "displacement")] > 0

    p = fim_rnnrbm.load_or_mine_rnnrbm_importance(tmp_path / "p.pkl", songs, initial_values(config), config,
                                                  n_jobs=1, log=lambda s: None, eps=45.0, lr=0.05, max_iters=15)
    art = fim.read_artefact(tmp_path / "p.pkl")
    assert art["default_base"] == "W" and set(art["scores"]) == set(fim_rnnrbm.BASES)
    assert art["iterations"][2] == first.iterations
    np.testing.assert_allclose(p, art["scores"]["W"]["norm"] / art["scores"]["W"]["norm"].sum())
    other = RnnRbmConfig(**{**TINY, "seed": 124})
    with pytest.raises(fim.FIMError, match="seed = 123 there, 124 here"):
        fim_rnnrbm.load_or_mine_rnnrbm_importance(tmp_path / "p.pkl", songs, initial_values(other), other)
    # Another CD-k, or another float type, makes another private model: refused, naming the option.
    for change, named in (({"k": 3}, "k = 2 there, 3 here"), ({"floatX": "float32"}, "floatX = 'float64' there")):
        other = RnnRbmConfig(**{**TINY, **change})
        with pytest.raises(fim.FIMError, match=named):
            fim_rnnrbm.load_or_mine_rnnrbm_importance(tmp_path / "p.pkl", songs, initial_values(other), other)
    # The run's own step size and epochs are not the private model's: the same P.
    same = RnnRbmConfig(**{**TINY, "lr": 0.5, "num_epochs": 9})
    np.testing.assert_array_equal(p, fim_rnnrbm.load_or_mine_rnnrbm_importance(
        tmp_path / "p.pkl", songs, initial_values(same), same, log=lambda s: None))

    # One IS-SGD epoch: N chunks drawn from P, each step weighted 1/(N p_i).
    saved = model.get_params(), model.random_states()
    sampler = make_chunk_sampler("importance", make_chunks(songs, 20), p)
    records = train(model, songs, np.random.RandomState(0), sampler, {}, print_fn=lambda s: None)
    assert records[-1]["sampler"] == "importance" and np.isfinite(records[-1]["train_monitor"])
    model.set_params(saved[0])
    model.set_random_states(saved[1])


def test_train_script_refuses_another_runs_p_and_says_when_p_is_uniform(songs, tmp_path, monkeypatch, capsys):
    config = RnnRbmConfig(**TINY)
    path = tmp_path / "p.pkl"
    fim_rnnrbm.load_or_mine_rnnrbm_importance(path, songs, initial_values(config), config, n_jobs=1,
                                              log=lambda s: None, eps=45.0, lr=0.05, max_iters=15)  # compiled above
    flags = ["--n-hidden", "7", "--n-hidden-recurrent", "5", "--batch-size", "20", "--seed", "123", "--max-songs", "1",
             "--eval-splits", "", "--saveto", str(tmp_path / "m.npz"), "--is", "--importance", str(path)]
    assert train_script.main([*flags, "--k", "3"]) == 1
    assert "k = 2 there, 3 here" in capsys.readouterr().err
    # With the run's options, a uniform P is said in words before training, naming the artefact's other kinds.
    monkeypatch.setattr(train_script, "importance_p",
                        lambda args, config, train_songs: np.full(len(make_chunks(train_songs, 20)), 1.0)
                        / len(make_chunks(train_songs, 20)))
    monkeypatch.setattr(train_script, "train", lambda *args, **kwargs: [])
    assert train_script.main([*flags, "--k", "2"]) == 0
    out = capsys.readouterr().out
    (warning,) = [line for line in out.splitlines() if line.startswith("warning: this P is uniform")]
    assert "eq. 13 bound 1)" in warning and ("spread P more here are: " in warning or "no other score kind" in warning)


def test_initial_values_are_the_models_w0(model):
    """W(0) for FIM is recomputed from the seed without building a model; it must be the model's."""
    w0 = initial_values(RnnRbmConfig(**TINY))
    fresh = RnnRbmModel(RnnRbmConfig(**TINY), np.random.RandomState(TINY["seed"])).get_params()
    for name in graph.PARAM_NAMES:
        np.testing.assert_array_equal(w0[name], fresh[name], err_msg=name)


def test_graph_flag_reaches_the_config():
    assert train_script.config_from_args(train_script.parse_args([])).graph == "fast"
    assert train_script.config_from_args(train_script.parse_args(["--graph", "tutorial"])).graph == "tutorial"
    assert train_script.parse_args(["--reload"]).graph is None  # --reload keeps the checkpoint's graph
    assert _script("fim").parse_args(["--graph", "tutorial"]).graph == "tutorial"


def test_train_script_sampler_flags():
    with pytest.raises(SystemExit):
        train_script.parse_args(["--is", "--sampler", "replacement"])
    with pytest.raises(SystemExit):
        train_script.parse_args(["--importance", "p.pkl"])
    assert train_script.parse_args(["--sampler", "importance"]).sampler == "importance"
    assert train_script.parse_args([]).sampler == "uniform"


def test_chunk_gradient_variance_ratio_ranks_distributions_and_leaves_the_run_alone(model, songs):
    chunks = [song[start:start + 20].astype(model.config.floatX) for song in songs for start in (0, 20)]
    model.use_data(chunks)
    probe = np.arange(len(chunks))
    params, states = model.get_params(), model.random_states()
    norms = np.array([np.sqrt(sum(np.sum(g ** 2) for g in model.gradient(i).values())) for i in probe])
    assert norms.std() > 0
    for key, value in model.random_states().items():  # every chunk's gradient drew the same Gibbs noise
        np.testing.assert_array_equal(value, states[key])

    def ratio(p):
        return _variance_ratio(model, probe, np.asarray(p, dtype="float64"))

    assert ratio(np.ones(len(chunks))) == pytest.approx(1.0)
    assert ratio(norms) < 1.0 < ratio(1.0 / norms)  # p ∝ ‖g_i‖ is the optimum (paper eq. 9)
    for name, value in model.get_params().items():
        np.testing.assert_array_equal(value, params[name])
    for key, value in model.random_states().items():
        np.testing.assert_array_equal(value, states[key])
