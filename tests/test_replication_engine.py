"""The replication grid with the REAL backends (tiny sizes) against the tutorials it replicates.

`tests/test_replicate.py` checks the grid's bookkeeping with a fake model; these check that what the
grid trains is the tutorials' training: the same costs update by update (RNN-RBM and LSTM), the same
final parameters, FIM mined from the training run's own W(0) and training set, and a run killed with
SIGKILL and resumed logging what an uninterrupted run logs, the online IS arm included.

Every real model compiles once per process (the backends cache them; module-scoped fixtures share
the runs). The file takes about a minute and a half on an idle 2-core machine, mostly graph
compilation: ~15 s per model and process (the grid's and the tutorial's of each model, and the
RNN-RBM once more in each of the two subprocesses).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dltutorials_is.datasets.chunks import make_chunks, training_fingerprint
from dltutorials_is.fim import driver as fim_driver
from dltutorials_is.fim import lstm as fim_lstm
from dltutorials_is.fim import rnnrbm as fim_rnnrbm
from dltutorials_is.io import read_json_lines
from dltutorials_is.models.rnnrbm import RnnRbmModel, initial_values
from dltutorials_is.replicate.backends import RnnRbmBackend
from dltutorials_is.replicate.grid import run_grid
from dltutorials_is.replicate.specs import RunSpec, grid_specs, run_dir
from dltutorials_is.sampling.samplers import SongOrderSampler
from dltutorials_is.tutorials import rnnrbm as rnnrbm_tutorial
from dltutorials_is.tutorials.lstm import sequential_batches, train_lstm

from replication_helpers import RNNRBM_SPECS, TinyLstmBackend, TinyRnnRbmBackend
from test_fim_lstm import write_tiny_imdb

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

#: The fig4 run of these tests: 16 training reviews (the tiny imdb.pkl's test split, under the
#: paper's protocol), batch 4, so 4 updates per epoch.
LSTM_SPEC = grid_specs("fig4", [(4, 0.5)], ["uniform"], [7], epochs=2)[0]
N_LSTM_TRAIN = 16


def by_arm(specs):
    return {spec.arm: spec for spec in specs}


def logged(out: Path, spec: RunSpec) -> list[dict]:
    return read_json_lines(run_dir(out, spec) / "log.jsonl")


def assert_same_params(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


# ---------------------------------------------------------------------------------------------
# Fixtures: each real model is compiled once and its grid run once


@pytest.fixture(scope="module")
def rnnrbm_grid(tmp_path_factory):
    """The fig6 grid (`RNNRBM_SPECS`: uniform and online, 4 epochs) run uninterrupted, in-process,
    with every epoch's parameters recorded."""
    out = tmp_path_factory.mktemp("rnnrbm_grid")
    backend = TinyRnnRbmBackend(record=True)
    statuses = run_grid(backend, RNNRBM_SPECS, out, n_jobs=1, progress=False)
    assert set(statuses.values()) == {"done"}, statuses
    return backend, out


@pytest.fixture(scope="module")
def imdb_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("imdb")
    write_tiny_imdb(directory, n_train=40, n_test=N_LSTM_TRAIN)
    return directory


@pytest.fixture(scope="module")
def lstm_grid(imdb_dir, tmp_path_factory):
    """`LSTM_SPEC` run by the grid, in-process, with every epoch's parameters recorded."""
    out = tmp_path_factory.mktemp("lstm_grid")
    backend = TinyLstmBackend(imdb_dir, record=True)
    statuses = run_grid(backend, [LSTM_SPEC], out, n_jobs=1, progress=False)
    assert statuses == {LSTM_SPEC.run_id: "done"}, statuses
    return backend, out


# ---------------------------------------------------------------------------------------------
# 1. The replication trains exactly what the RNN-RBM tutorial trains


def test_rnnrbm_replication_trains_exactly_like_the_tutorial(rnnrbm_grid):
    backend, out = rnnrbm_grid
    spec = by_arm(RNNRBM_SPECS)["uniform"]
    songs = backend.songs(spec)
    # The helper reads only the first songs' files: the same songs the real backend keeps of all.
    real = RnnRbmBackend.songs(backend, spec)
    assert len(songs) == len(real) == 2
    for mine, theirs in zip(songs, real):
        np.testing.assert_array_equal(mine, theirs)

    config = backend.config(spec)
    assert (config.seed, config.lr, config.batch_size, config.num_epochs) == (spec.seed, spec.step_size,
                                                                              spec.batch_size, spec.epochs)
    rng = np.random.RandomState(spec.seed)
    model = RnnRbmModel(config, rng)  # the tutorial's draws: the MRG seed, then W(0)
    history = rnnrbm_tutorial.train(model, songs, rng, SongOrderSampler(make_chunks(songs, config.batch_size)),
                                    eval_splits={}, print_fn=lambda line: None)

    records = logged(out, spec)
    assert [r["epoch"] for r in records] == list(range(spec.epochs + 1))
    assert [h["updates"] for h in history] == [len(make_chunks(songs, config.batch_size))] * spec.epochs
    grid_costs = [r["train_cost_during_epoch"] for r in records[1:]]
    tutorial_costs = [h["train_cost_during_epoch"] for h in history]
    assert grid_costs == tutorial_costs  # exactly: the same updates, in the same order, from the same W(0)
    assert len(set(grid_costs)) == spec.epochs  # training moved

    states = backend.states[spec.run_id]
    assert len(states) == spec.epochs + 1
    assert_same_params(states[0]["params"], initial_values(config))  # the tutorial's W(0) for the seed
    assert_same_params(states[-1]["params"], model.get_params())
    # The Gibbs chains' stream is where the tutorial's is (the evaluation stream is not: the grid also
    # evaluates before the first epoch).
    trained = {k: v for k, v in model.random_states().items() if k.startswith("train/")}
    assert_same_params({k: states[-1]["streams"][k] for k in trained}, trained)


# ---------------------------------------------------------------------------------------------
# 2. The same for the LSTM: `train_lstm(data_seed=...)` is the replication's run


UPDATE_LINE = re.compile(r"^Epoch\s+(\d+)\s+Update\s+(\d+)\s+Cost\s+(\S+)$")


def test_lstm_replication_trains_exactly_like_the_tutorial(lstm_grid, imdb_dir, tmp_path):
    backend, out = lstm_grid
    spec, options = LSTM_SPEC, TinyLstmBackend.OPTIONS
    saveto = tmp_path / "tutorial.npz"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train_lstm(dim_proj=options["dim_proj"], n_words=options["n_words"], maxlen=options["maxlen"],
                   valid_batch_size=options["valid_batch_size"], use_dropout=options["use_dropout"],
                   decay_c=options["decay_c"], test_size=options["test_size"], protocol=options["protocol"],
                   data_dir=imdb_dir, seed=spec.seed, data_seed=TinyLstmBackend.DATA_SEED, optimizer="sgd",
                   lrate=spec.step_size, batch_size=spec.batch_size, max_epochs=spec.epochs,
                   dispFreq=1,  # every update's cost, as repr: full precision
                   validFreq=10**6, saveFreq=10**6,  # no validation draws from the dropout stream
                   saveto=str(saveto))  # written once, after training: the final parameters

    costs: dict[int, list[float]] = {}
    for line in printed.getvalue().splitlines():
        match = UPDATE_LINE.match(line.strip())
        if match:
            costs.setdefault(int(match[1]), []).append(float(match[3]))
    updates = N_LSTM_TRAIN // spec.batch_size
    assert [len(costs.get(epoch, [])) for epoch in range(spec.epochs)] == [updates] * spec.epochs, printed.getvalue()

    records = logged(out, spec)
    assert [r["epoch"] for r in records] == list(range(spec.epochs + 1))
    grid_costs = [r["train_cost_during_epoch"] for r in records[1:]]
    tutorial_costs = [float(np.mean(costs[epoch])) for epoch in range(spec.epochs)]
    assert grid_costs == tutorial_costs  # exactly: the same minibatches, dropout masks and W(0)

    final = backend.states[spec.run_id][-1]["params"]
    with np.load(saveto) as saved:
        assert_same_params({name: saved[name] for name in final}, final)


def test_lstm_replication_logs_the_tutorials_error_and_the_auc_of_the_same_forward_pass(lstm_grid):
    """The logged error is `pred_error`'s number; the AUC is the share of (positive, negative) review
    pairs ranked right (ties half), counted pair by pair."""
    backend, out = lstm_grid
    last = logged(out, LSTM_SPEC)[-1]
    model = backend.prepare(LSTM_SPEC, np.random.RandomState(LSTM_SPEC.seed)).model
    model.set_params(backend.states[LSTM_SPEC.run_id][-1]["params"])
    train, _, _ = backend.splits(LSTM_SPEC)
    batches = sequential_batches(len(train[0]), TinyLstmBackend.OPTIONS["valid_batch_size"])
    assert last["train_err"] == model.error(train, batches)
    scores = model.probabilities(train, batches)[:, 1]
    labels = np.asarray(train[1])[np.concatenate(batches)]
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[labels == 1] for n in scores[labels == 0]]
    assert 0 < last["train_auc"] < 1 and last["train_auc"] == pytest.approx(np.mean(pairs), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# 3. FIM mines from the training run's W(0), on the training run's samples


class Captured(Exception):
    pass


@pytest.fixture
def captured_fim_spec(monkeypatch):
    """Make FIM's `mine` record the spec it is given and stop there."""
    seen = {}

    def mine(spec, path, **kwargs):
        seen["spec"] = spec
        raise Captured

    monkeypatch.setattr(fim_driver, "mine", mine)
    return seen


def mined_and_prepared(backend, spec, workdir, captured):
    """The spec FIM would mine with for `spec`, the model a run of `spec` starts from, and its W(0),
    after checking the two W(0) are the same arrays."""
    with pytest.raises(Captured):
        backend.mine_importance(spec, workdir)
    mined = captured["spec"]
    model = backend.prepare(spec, np.random.RandomState(spec.seed)).model
    w0 = model.get_params()
    assert_same_params(mined.params, w0)
    return mined, model, w0


# `prepare` reuses the model compiled for the grid runs above (the backends cache it per process).


def test_rnnrbm_fim_starts_from_the_runs_w0(captured_fim_spec, tmp_path):
    backend = TinyRnnRbmBackend()
    spec = RunSpec("fig6", "is-paper", seed=11, batch_size=20, step_size=0.01, epochs=1, train_subset=2,
                   subset_mode="first")
    mined, model, w0 = mined_and_prepared(backend, spec, tmp_path, captured_fim_spec)
    assert mined.init_fingerprint == fim_rnnrbm.init_fingerprint(w0)
    assert mined.model_config == backend.config(spec)  # the private model's sizes, k and seed
    assert mined.n_samples == model.n_train
    for i in range(model.n_train):
        np.testing.assert_array_equal(mined.chunk(i), model.chunks[i])
    assert mined.train_fingerprint == training_fingerprint(backend.songs(spec), spec.batch_size)
    other = backend.prepare(replace(spec, seed=12), np.random.RandomState(12)).model
    assert fim_rnnrbm.init_fingerprint(other.get_params()) != mined.init_fingerprint


def test_lstm_fim_starts_from_the_runs_w0(imdb_dir, captured_fim_spec, tmp_path):
    backend = TinyLstmBackend(imdb_dir)
    spec = RunSpec("fig4", "is-paper", seed=9, batch_size=4, step_size=0.5, epochs=1)
    mined, model, w0 = mined_and_prepared(backend, spec, tmp_path, captured_fim_spec)
    assert mined.init_fingerprint == fim_lstm.init_fingerprint(w0)
    assert mined.n_samples == model.n_train == N_LSTM_TRAIN
    for i in range(model.n_train):
        words, label = mined.review(i)
        assert (words.tolist(), label) == (list(model.train[0][i]), model.train[1][i])
    assert mined.train_fingerprint == fim_lstm.train_fingerprint(model.train)
    assert mined.seed == spec.seed
    other = backend.prepare(replace(spec, seed=10), np.random.RandomState(10)).model
    assert fim_lstm.init_fingerprint(other.get_params()) != mined.init_fingerprint


# ---------------------------------------------------------------------------------------------
# 4. SIGKILL, resume: the same logs as an uninterrupted run


GRID_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from replication_helpers import run_rnnrbm_grid
print(json.dumps(run_rnnrbm_grid({out!r}, delay={delay!r})))
"""
TIMEOUT = 300  # seconds, for each subprocess (it compiles the model for ~15 s)


def start_grid(out: Path, delay: float, stderr) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    script = GRID_SCRIPT.format(tests=str(TESTS), out=str(out), delay=delay)
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True, env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def metrics_only(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("wall_s")} for r in records]


def test_sigkilled_and_resumed_grid_logs_what_an_uninterrupted_one_does(rnnrbm_grid, tmp_path):
    _, straight = rnnrbm_grid
    killed = tmp_path / "killed"
    arms = by_arm(RNNRBM_SPECS)
    online_log = run_dir(killed, arms["online"]) / "log.jsonl"

    with open(tmp_path / "killed.err", "w") as stderr:
        proc = start_grid(killed, delay=0.3, stderr=stderr)
        try:
            deadline, reached = time.time() + TIMEOUT, False
            while proc.poll() is None and time.time() < deadline and not reached:
                reached = any(r["epoch"] >= 1 for r in read_json_lines(online_log))
                time.sleep(0.02)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, mid-run
            proc.communicate(timeout=60)
    errors = (tmp_path / "killed.err").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL, f"the grid ended by itself (exit {proc.returncode}):\n{errors}"
    assert reached, f"the online run logged no epoch within {TIMEOUT} s:\n{errors}"
    online_dir = run_dir(killed, arms["online"])
    assert (run_dir(killed, arms["uniform"]) / "done").exists()
    assert not (online_dir / "done").exists()
    with open(online_dir / "checkpoint.pkl", "rb") as f:
        checkpoint_epoch = pickle.load(f)["epoch"]
    before = read_json_lines(online_log)
    assert 1 <= checkpoint_epoch < arms["online"].epochs
    assert before[-1]["epoch"] == checkpoint_epoch

    with open(tmp_path / "resumed.err", "w") as stderr:
        proc = start_grid(killed, delay=0.0, stderr=stderr)
        try:
            stdout, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, (tmp_path / "resumed.err").read_text()[-3000:]
    statuses = json.loads(stdout.strip().splitlines()[-1])
    assert statuses == {arms["uniform"].run_id: "skipped", arms["online"].run_id: "done"}

    resumed = logged(killed, arms["online"])
    assert resumed[:len(before)] == before  # kept as they were, wall clocks included: resumed, not redone
    for spec in RNNRBM_SPECS:
        expected = logged(straight, spec)
        assert [r["epoch"] for r in expected] == list(range(spec.epochs + 1))
        assert metrics_only(logged(killed, spec)) == metrics_only(expected), spec.arm
    final = resumed[-1]
    assert 0 < final["online_is_updates"] < final["online_updates"]  # warm-up, then importance sampling
