"""The FIM driver, tested with a toy numpy plug-in: per-sample logistic regression."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dltutorials_is.fim import driver as fim
from dltutorials_is.io import _HOST, fingerprint
from dltutorials_is.sampling import variance
from dltutorials_is.sampling.samplers import ImportanceSampler


class ToyLogisticSpec:
    """Private logistic regression on one sample, with dropout on its features seeded from i."""

    def __init__(self, n=23, d=5, seed=7, eps=0.05, lr=0.5, max_iters=200, delay=0.0, trace=None, build_trace=None):
        rng = np.random.RandomState(seed)
        self.x = rng.randn(n, d)
        self.y = (rng.rand(n) < 0.5).astype("float64")
        self.w0 = 0.1 * rng.randn(d)
        self.b0 = np.zeros(1)
        self.n_samples = n
        self.seed, self.eps, self.lr, self.max_iters = seed, eps, lr, max_iters
        self.delay, self.trace, self.build_trace = delay, trace, build_trace  # test hooks
        self.train_fingerprint = fingerprint(self.x, self.y)
        self.init_fingerprint = fingerprint(self.w0, self.b0)

    def config(self):
        return {"eps": self.eps, "lr": self.lr, "max_iters": self.max_iters, "norm": "fro",
                "bases": ["w", "b"], "protocol": "toy", "seed": self.seed}

    def build(self):
        if self.build_trace:
            with open(self.build_trace, "a") as f:
                f.write(f"{os.getpid()}\n")
        return self.run

    def run(self, i):
        if self.trace:
            with open(self.trace, "a") as f:
                f.write(f"{i}\n")
        time.sleep(self.delay)
        rng = np.random.RandomState([self.seed, i])
        w, b = self.w0.copy(), self.b0.copy()
        trackers = {"w": fim.ScoreTracker(self.w0, "fro"), "b": fim.ScoreTracker(self.b0, "fro")}
        for t in range(1, self.max_iters + 1):
            keep = (rng.rand(len(w)) < 0.8) / 0.8
            xi = self.x[i] * keep
            z = xi @ w + b[0]
            prob = 1 / (1 + np.exp(-z))
            loss = -np.log(prob if self.y[i] else 1 - prob)
            dz = prob - self.y[i]
            gw, gb = dz * xi, np.array([dz])
            trackers["w"].step(fim.matrix_norm(gw))
            trackers["b"].step(fim.matrix_norm(gb))
            w -= self.lr * gw
            b -= self.lr * gb
            if loss < self.eps:
                break
        scores = {**trackers["w"].finish(w, "w"), **trackers["b"].finish(b, "b")}
        return fim.PrivateRun(iterations=t, loss=float(loss), converged=bool(loss < self.eps), scores=scores)


def _mine(spec, path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda s: None)
    return fim.mine(spec, path, **kw)


def _content(path):
    """An artefact without its timing, the one part that legitimately differs between runs."""
    with open(path, "rb") as f:
        art = pickle.load(f)
    art.pop("timing")
    return pickle.dumps(art, protocol=4)


def test_artefact_holds_every_score_and_p(tmp_path):
    spec = ToyLogisticSpec()
    result = _mine(spec, tmp_path / "p.pkl", n_jobs=1, shard_size=5)
    art = fim.read_artefact(tmp_path / "p.pkl")
    assert art["n"] == spec.n_samples and art["eps"] == spec.eps and art["norm"] == "fro"
    assert set(art["scores"]) == {"w", "b"}
    for base in ("w", "b"):
        assert set(art["scores"][base]) == set(fim.SCORE_KINDS)
        for kind, s in art["scores"][base].items():
            np.testing.assert_allclose(art["p"][base][kind], s / s.sum())
    assert art["converged"].all() and (art["final_loss"] < spec.eps).all()
    # Scores are what they claim to be, on one sample recomputed by hand.
    i = 3
    one = spec.run(i)
    assert art["iterations"][i] == one.iterations
    assert art["scores"]["w"]["displacement"][i] == one.scores[("w", "displacement")]
    assert art["scores"]["w"]["path"][i] >= art["scores"]["w"]["displacement"][i]  # triangle inequality
    np.testing.assert_array_equal(result.p("w"), art["p"]["w"]["norm"])
    assert not (tmp_path / "p.pkl.parts").exists()


def test_results_do_not_depend_on_n_jobs_backend_or_shards(tmp_path):
    spec = ToyLogisticSpec()
    _mine(spec, tmp_path / "a.pkl", n_jobs=1, shard_size=23)
    _mine(spec, tmp_path / "b.pkl", n_jobs=2, shard_size=3)  # loky processes
    _mine(spec, tmp_path / "c.pkl", n_jobs=2, shard_size=4, backend="threading")
    assert _content(tmp_path / "a.pkl") == _content(tmp_path / "b.pkl") == _content(tmp_path / "c.pkl")


def test_dask_backend(tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = ToyLogisticSpec()
    _mine(spec, tmp_path / "serial.pkl", n_jobs=1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        _mine(spec, tmp_path / "dask.pkl", backend="dask", shard_size=4)
    assert _content(tmp_path / "serial.pkl") == _content(tmp_path / "dask.pkl")


def test_pilot_scores_a_random_subset_and_writes_nothing(tmp_path):
    spec = ToyLogisticSpec()
    full = _mine(spec, tmp_path / "full.pkl", n_jobs=1)
    lines = []
    pilot = fim.mine(spec, tmp_path / "never.pkl", n_jobs=1, pilot=6, progress=False, log=lines.append)
    assert len(pilot.indices) == 6 and len(set(pilot.indices)) == 6
    np.testing.assert_array_equal(pilot.scores["w"]["norm"], full.scores["w"]["norm"][pilot.indices])
    assert not (tmp_path / "never.pkl").exists()
    assert any("effective sample size" in line for line in lines)


def test_run_samples_keeps_the_order_asked_for_and_reports_every_chunk(tmp_path):
    spec = ToyLogisticSpec()
    full = _mine(spec, tmp_path / "full.pkl", n_jobs=1)
    indices, chunks = np.array([9, 2, 17, 5, 11]), []
    result = fim.run_samples(spec, indices, n_jobs=2, backend="threading", chunk_size=2, on_chunk=chunks.append)
    np.testing.assert_array_equal(result.indices, indices)
    np.testing.assert_array_equal(result.scores["w"]["path"], full.scores["w"]["path"][indices])
    assert sum(chunks) == len(indices) and max(chunks) <= 2


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_fim import ToyLogisticSpec, _mine
_mine(ToyLogisticSpec(n=40, delay=0.05, trace={trace!r}), {out!r}, n_jobs=2, shard_size=2)
"""


def test_sigkill_then_resume_gives_the_same_artefact_without_redoing_shards(tmp_path):
    out, trace = tmp_path / "p.pkl", tmp_path / "trace.txt"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), trace=str(trace), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "p.pkl.parts"
    deadline = time.time() + 120
    while len(list(parts.glob("shard-*.pkl"))) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its loky workers, mid-run
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed; make it slower"
    finished = set()
    for shard in parts.glob("shard-*.pkl"):
        with open(shard, "rb") as f:
            finished.update(pickle.load(f)["indices"])
    assert len(finished) >= 8

    trace.unlink()
    _mine(ToyLogisticSpec(n=40, trace=str(trace)), out, n_jobs=2, shard_size=2)
    recomputed = {int(line) for line in trace.read_text().split()}
    assert not finished & recomputed
    assert finished | recomputed == set(range(40))
    assert not parts.exists() and not list(tmp_path.glob(".*.tmp"))  # nothing of the killed run is left

    _mine(ToyLogisticSpec(n=40), tmp_path / "straight.pkl", n_jobs=1, shard_size=2)
    assert _content(out) == _content(tmp_path / "straight.pkl")


def test_shards_of_another_configuration_are_refused(tmp_path):
    parts = tmp_path / "p.pkl.parts"
    parts.mkdir()
    (parts / "run_key").write_text("something else")
    with pytest.raises(fim.FIMError, match="different configuration"):
        _mine(ToyLogisticSpec(), tmp_path / "p.pkl", n_jobs=1)


def test_load_importance_checks_fingerprint_size_and_choice(tmp_path):
    spec = ToyLogisticSpec()
    _mine(spec, tmp_path / "p.pkl", n_jobs=1)
    p = fim.load_importance(tmp_path / "p.pkl", spec.train_fingerprint, spec.n_samples)
    assert p.sum() == pytest.approx(1.0) and len(p) == spec.n_samples
    ImportanceSampler(p, batch_size=4)  # a loaded P is what the sampler accepts
    p_b = fim.load_importance(tmp_path / "p.pkl", spec.train_fingerprint, spec.n_samples, "path", "b")
    assert not np.array_equal(p, p_b)

    other = ToyLogisticSpec(seed=8)
    with pytest.raises(fim.FIMError, match="different training set"):
        fim.load_importance(tmp_path / "p.pkl", other.train_fingerprint, spec.n_samples)
    with pytest.raises(fim.FIMError, match="holds P for 23 samples but the training set has 24"):
        fim.load_importance(tmp_path / "p.pkl", spec.train_fingerprint, 24)
    with pytest.raises(fim.FIMError, match="different W\\(0\\)"):
        fim.load_importance(tmp_path / "p.pkl", spec.train_fingerprint, spec.n_samples,
                            init_fingerprint=other.init_fingerprint)
    with pytest.raises(fim.FIMError, match="no scores for base 'Wc'"):
        fim.load_importance(tmp_path / "p.pkl", spec.train_fingerprint, spec.n_samples, base="Wc")
    with pytest.raises(fim.FIMError, match="no importance file"):
        fim.load_importance(tmp_path / "missing.pkl", spec.train_fingerprint, spec.n_samples)


def test_corrupt_artefact_gives_a_clear_error(tmp_path):
    spec = ToyLogisticSpec()
    _mine(spec, tmp_path / "p.pkl", n_jobs=1)
    data = (tmp_path / "p.pkl").read_bytes()
    (tmp_path / "p.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(fim.FIMError, match="truncated or corrupt"):
        fim.load_importance(tmp_path / "p.pkl", spec.train_fingerprint, spec.n_samples)
    with open(tmp_path / "other.pkl", "wb") as f:
        pickle.dump({"some": "dict"}, f)
    with pytest.raises(fim.FIMError, match="not a FIM importance artefact"):
        fim.read_artefact(tmp_path / "other.pkl")


def _drop(art, key):
    del art[key]


@pytest.mark.parametrize("edit, reason", [
    (lambda a: a["scores"]["w"].update(norm=a["scores"]["w"]["norm"][:-1]),
     r"scores\['w'\]\['norm'\] is an array of shape \(22,\), not one value per sample \(23\)"),
    (lambda a: _drop(a, "iterations"), "'iterations' is missing"),
    (lambda a: _drop(a, "train_fingerprint"), "'train_fingerprint' is missing, not a string"),
    (lambda a: a.update(n="23"), "'n' is '23', not a positive number of samples"),
    (lambda a: a.update(converged=list(a["converged"])), "'converged' is a list, not an array"),
    (lambda a: a["p"]["b"].update(path=np.array(["x"] * 23)), r"p\['b'\]\['path'\] is an array of <U1"),
    (lambda a: a.update(scores={}), "'scores' is a dict, not a dict of base matrices"),
    (lambda a: a.update(default_base="Wc"), "the default base 'Wc' has no scores"),
    (lambda a: a["config"].pop("bases"), "its config lacks 'bases'"),
    (lambda a: a.update(timing=None), "'timing' lacks the compute time"),
])
def test_hand_edited_artefacts_are_refused_with_the_reason(tmp_path, edit, reason):
    spec = ToyLogisticSpec()
    _mine(spec, tmp_path / "p.pkl", n_jobs=1)
    art = fim.read_artefact(tmp_path / "p.pkl")
    edit(art)
    fim.atomic_pickle(art, tmp_path / "p.pkl")
    with pytest.raises(fim.FIMError, match="not a usable FIM artefact: " + reason):
        fim.load_importance(tmp_path / "p.pkl", spec.train_fingerprint, spec.n_samples)


def test_artefacts_holding_foreign_objects_are_refused_unbuilt(tmp_path):
    spec = ToyLogisticSpec()
    _mine(spec, tmp_path / "p.pkl", n_jobs=1)
    art = fim.read_artefact(tmp_path / "p.pkl")
    art["config"]["note"] = Path("/somewhere")
    fim.atomic_pickle(art, tmp_path / "p.pkl")
    with pytest.raises(fim.FIMError, match="truncated or corrupt.*pathlib"):
        fim.read_artefact(tmp_path / "p.pkl")


def test_damaged_shards_are_recomputed_not_trusted(tmp_path):
    out = tmp_path / "p.pkl"
    _mine(ToyLogisticSpec(), tmp_path / "straight.pkl", n_jobs=1, shard_size=5)
    parts = tmp_path / "p.pkl.parts"
    parts.mkdir()
    (parts / "run_key").write_text(fim._run_key(ToyLogisticSpec()))
    (parts / "shard-000000.pkl").write_bytes(b"\x80\x04garbage")
    fim.atomic_pickle({"run_key": fim._run_key(ToyLogisticSpec()), "shard": 1, "indices": [5, 99],
                       "runs": [None, None], "seconds": 0.1}, parts / "shard-000001.pkl")
    lines = []
    _mine(ToyLogisticSpec(), out, n_jobs=1, shard_size=5, log=lines.append)
    assert sum("ignoring unreadable shard" in line for line in lines) == 2
    assert any("sample index is not in 0..22" in line for line in lines)
    assert _content(out) == _content(tmp_path / "straight.pkl")


def test_zero_scores_are_refused_with_a_reason(tmp_path):
    spec = ToyLogisticSpec()
    _mine(spec, tmp_path / "p.pkl", n_jobs=1)
    art = fim.read_artefact(tmp_path / "p.pkl")
    art["scores"]["w"]["norm"][5] = 0.0
    fim.atomic_pickle(art, tmp_path / "p.pkl")
    with pytest.raises(fim.FIMError, match="1 samples have a norm score of w that is NaN, inf or 0"):
        fim.load_importance(tmp_path / "p.pkl", spec.train_fingerprint, spec.n_samples)


def test_the_fim_report_warns_once_when_the_papers_p_is_uniform():
    n = 50
    rng = np.random.RandomState(3)
    scores = {"w": {"norm": np.full(n, 2.0) + 1e-6 * rng.rand(n), "displacement": 1 + 0.1 * rng.rand(n),
                    "path": 1 + rng.rand(n), "grad0": np.full(n, 1.0)}}
    result = fim.FIMResult(np.arange(n), np.full(n, 3), np.full(n, 0.01), np.ones(n, bool), scores, 1.0)
    text = fim.report(result, {"eps": 0.05, "bases": ["w"]}, title="FIM")
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: the paper's P is uniform to within")
    assert "spread P more here are: path (bound" in warnings[0]
    assert "displacement (bound" in warnings[0] and "grad0" not in warnings[0]
    scores["w"]["norm"] = 1 + rng.rand(n)
    assert "warning" not in fim.report(result, {"eps": 0.05, "bases": ["w"]}, title="FIM")


class BrokenSpec(ToyLogisticSpec):
    def config(self):
        return {**super().config(), "broken": True}  # a run key of its own: no worker has it compiled

    def build(self):
        raise RuntimeError("cannot compile")


def test_no_shard_folder_is_left_by_a_run_that_did_no_work(tmp_path):
    out = tmp_path / "out" / "p.pkl"
    with pytest.raises(fim.FIMError, match="n_jobs 0 runs nothing"):
        _mine(ToyLogisticSpec(), out, n_jobs=0)
    with pytest.raises(RuntimeError, match="cannot compile"):
        _mine(BrokenSpec(), out, n_jobs=1)
    assert not (tmp_path / "out" / "p.pkl.parts").exists() and not out.exists()


def test_leftover_temporaries_in_the_shard_folder_do_not_stop_the_run(tmp_path):
    """A kill while a shard was being written leaves `.shard-….pkl.<host>-<pid>.<random>.tmp` in the
    shard folder; resuming removes it (its writer is dead), and the folder goes when FIM is done."""
    out, parts = tmp_path / "p.pkl", tmp_path / "p.pkl.parts"
    parts.mkdir()
    (parts / "run_key").write_text(fim._run_key(ToyLogisticSpec()))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = parts / f".shard-000002.pkl.{_HOST}-{dead.pid}.q1w2e3r4.tmp"
    leftover.write_bytes(b"half a shard")
    _mine(ToyLogisticSpec(), out, n_jobs=1, shard_size=5)
    assert out.exists() and not parts.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pkl"]


def test_matrix_norms():
    a = np.array([[3.0, 0.0], [0.0, 4.0]])
    assert fim.matrix_norm(a) == 5.0
    assert fim.matrix_norm(a, "spectral") == pytest.approx(4.0)
    with pytest.raises(ValueError, match="unknown norm"):
        fim.matrix_norm(a, "nuclear")


# ---------------------------------------------------------------------------------------------
# Gradient-variance diagnostic (dltutorials_is.variance), on per-sample least-squares gradients


def _gradients(seed=0, n=12):
    rng = np.random.RandomState(seed)
    return {"W": rng.randn(n, 3, 2) * rng.rand(n, 1, 1) * 3, "b": rng.randn(n, 2)}


def _brute_force_variance(g, q):
    """Σ_i q_i ‖g_i/(M q_i) − ḡ‖², enumerating the estimator's values."""
    m = len(q)
    mean = g.mean(axis=0)
    return sum(q[i] * np.sum((g[i] / (m * q[i]) - mean) ** 2) for i in range(m))


def test_variance_matches_brute_force_enumeration():
    grads = _gradients()
    n = 20
    subset = np.arange(3, 15)
    p = np.random.RandomState(1).dirichlet(np.ones(n))
    rows = variance.gradient_variance(
        lambda i: {"W": grads["W"][i - 3], "b": grads["b"][i - 3]}, subset, p, blocks=["W"])
    whole = np.concatenate([grads["W"].reshape(12, -1), grads["b"]], axis=1)
    q = p[subset] / p[subset].sum()
    by_block = {r.block: r for r in rows}
    assert set(by_block) == {variance.WHOLE, "W"}
    for name, g in [(variance.WHOLE, whole), ("W", grads["W"].reshape(12, -1))]:
        r = by_block[name]
        assert r.uniform == pytest.approx(_brute_force_variance(g, np.full(12, 1 / 12)), rel=1e-10)
        assert r.importance == pytest.approx(_brute_force_variance(g, q), rel=1e-10)
        optimal_q = np.linalg.norm(g, axis=1) / np.linalg.norm(g, axis=1).sum()
        assert r.optimal == pytest.approx(_brute_force_variance(g, optimal_q), rel=1e-10)
        assert r.optimal <= min(r.uniform, r.importance) + 1e-12
    assert "P/uniform" in variance.format_variance(rows, 12)


def test_variance_ratio_is_one_for_uniform_p_and_errors_are_clear():
    grads = _gradients()
    fn = lambda i: {"W": grads["W"][i], "b": grads["b"][i]}  # noqa: E731
    (row,) = variance.gradient_variance(fn, np.arange(12), np.full(12, 1 / 12))
    assert row.ratio == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no gradient block named"):
        variance.gradient_variance(fn, np.arange(12), np.full(12, 1 / 12), blocks=["Wc"])
    with pytest.raises(ValueError, match="probability > 0"):
        variance.gradient_variance(fn, np.arange(12), np.r_[0.0, np.full(11, 1 / 11)])


def test_variance_of_a_view_such_as_a_slice_of_a_block():
    grads = _gradients()
    p = np.random.RandomState(2).dirichlet(np.ones(12))
    rows = variance.gradient_variance(lambda i: {"W": grads["W"][i], "b": grads["b"][i]}, np.arange(12), p,
                                      blocks={"W first column": lambda g: g["W"][:, 0]})
    whole, view = rows
    g = grads["W"][:, :, 0]
    assert view.block == "W first column"
    assert view.importance == pytest.approx(_brute_force_variance(g, p), rel=1e-10)
    assert view.uniform == pytest.approx(_brute_force_variance(g, np.full(12, 1 / 12)), rel=1e-10)
    assert whole.uniform > view.uniform


def test_a_finished_artefact_is_reused_never_overwritten(tmp_path):
    out, trace = tmp_path / "p.pkl", tmp_path / "trace.txt"
    first = _mine(ToyLogisticSpec(), out, n_jobs=1)
    again = _mine(ToyLogisticSpec(trace=str(trace)), out, n_jobs=1)
    assert not trace.exists()  # nothing recomputed
    np.testing.assert_array_equal(first.scores["w"]["norm"], again.scores["w"]["norm"])
    with pytest.raises(fim.FIMError, match="already holds importance mined with another configuration"):
        _mine(ToyLogisticSpec(eps=0.01), out, n_jobs=1)


def test_each_worker_builds_its_trainer_once(tmp_path):
    builds = tmp_path / "builds.txt"
    spec = ToyLogisticSpec(seed=11, build_trace=str(builds))  # a configuration no other test ran
    _mine(spec, tmp_path / "p.pkl", n_jobs=2, shard_size=1)  # 23 chunks
    pids = builds.read_text().split()
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids)


def test_shards_pickled_before_the_fim_package_split_still_load():
    new = pickle.dumps(fim.PrivateRun(3, 0.25, True, {("w", "norm"): 1.5}), protocol=0)
    old = new.replace(b"dltutorials_is.fim.driver\n", b"dltutorials_is.fim\n")
    assert old != new and pickle.loads(old) == fim.PrivateRun(3, 0.25, True, {("w", "norm"): 1.5})
