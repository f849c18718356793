"""Running a replication grid: FIM once per (protocol, seed), then every run through the one training loop.

Every run writes to its own directory under `<out>/runs/`: `spec.json`, `log.jsonl` (one line per
finished epoch, appended and fsynced, so a killed run leaves only whole lines), `checkpoint.pkl`
(replaced atomically after each epoch, kept at the end) and finally `done`. Restarting the same command
skips runs with `done` and resumes the others from their last checkpoint (or from scratch without one);
the same command with a larger `--epochs` continues finished runs from their last checkpoint, as if
they had been asked for that many epochs from the start, and a smaller one (not below what a run has
logged) stops unfinished runs there.

Arms: `uniform` (the tutorial's sampler), `replacement` (uniform with replacement: the control that
separates *importance* from *sampling with replacement*), `is-paper` (FIM, the paper's `norm` score
of the paper's base matrix), `is-best` (the FIM score kind whose P has the largest coefficient of
variation in that FIM artefact), `is-<kind>` (any FIM score kind), `online` (Katharopoulos & Fleuret).

FIM runs once per (protocol, seed), before any training, and its wall time and forward-pass units
are charged to the clocks of every IS arm that uses it. Evaluation passes (error/cost curves) are
counted in `eval_units` and timed in `eval_wall_s`, never charged to training.

A run trains with `loop.fit` and the model's own `train_step`, exactly as the tutorials do; models plug
in through a `Backend` that says only which data, which model and which metrics
(`replicate.backends` holds the real LSTM and RNN-RBM ones).
"""
from __future__ import annotations

import contextlib
import json
import pickle
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from joblib import delayed
from tqdm import tqdm

from dltutorials_is.cluster import pool
from dltutorials_is.errors import SettingError
from dltutorials_is.io import (
    append_json_line, atomic_pickle, atomic_write_text, exclusive_lock, non_finite, read_json_lines, rewrite_json_lines,
)
from dltutorials_is.loop import Hook, Progress, fit
from dltutorials_is.models.base import Model
from dltutorials_is.sampling.online import OnlineImportanceSampler
from dltutorials_is.sampling.samplers import make_sampler, summarize_p
from dltutorials_is.replicate.runs import load_fim
from dltutorials_is.replicate.specs import (
    PAPER_SCORE,
    UNITS_PER_FIM_STEP,
    UNITS_PER_UPDATE_SAMPLE,
    RunSpec,
    fim_dir,
    run_dir,
)

CHECKPOINT_FORMAT = 2  # 1: the backends' own loops (before one loop served every run)
#: held (flock) by the process training the run; never committed, harmless when left behind
RUN_LOCK = ".lock"


# ---------------------------------------------------------------------------------------------
# What a model must give the grid


@dataclass
class Experiment:
    """One run's model and what is measured of it, as a backend prepares it.

    model: compiled (a worker reuses it across runs), bound to the run's training set and reset to
        the run's W(0), random streams and step size;
    batch_size: samples per update (the LSTM's minibatch; the RNN-RBM trains on one chunk);
    metrics(ctx): the per-epoch metrics (lower is better), measured without training; wrap
        evaluation passes in `ctx.evaluation(n_samples)`;
    uniform: the tutorial's own uniform sampler when it is not `samplers.UniformSampler` (the
        RNN-RBM's song order);
    online_options: keyword arguments of `OnlineImportanceSampler`.
    """

    model: Model
    batch_size: int
    metrics: Callable[["RunContext"], dict]
    uniform: object = None
    online_options: dict = field(default_factory=dict)


class Backend:
    """How the grid runs a model. Subclass it; it must be picklable (it is sent to worker processes).

    protocol_key(spec): names the training set a run uses (e.g. "subset2000"); FIM is computed once
        per (protocol_key, seed) and shared by every IS arm with that key.
    mine_importance(spec, workdir, n_jobs, parallel) -> FimOutcome: runs FIM for spec.seed's W(0) on
        that training set, its samples spread over `n_jobs` workers of the joblib backend `parallel`
        (may cache inside `workdir`), and returns P per score kind and the private SGD steps taken.
    prepare(spec, rng) -> Experiment: the run's model with W(0) drawn from `rng` (the run's
        RandomState, whose later draws are the sampler's) and its metrics.
    check_data(): cheap, before the grid starts: raise a `UserError` if the data is not there.
    """

    figure: str = ""

    def check_data(self) -> None:
        pass

    def protocol_key(self, spec: RunSpec) -> str:
        raise NotImplementedError

    def mine_importance(self, spec: RunSpec, workdir: Path, n_jobs: int = 1,
                        parallel: str | None = None) -> "FimOutcome":
        raise NotImplementedError

    def prepare(self, spec: RunSpec, rng: np.random.RandomState) -> Experiment:
        raise NotImplementedError


@dataclass
class FimOutcome:
    p: dict  # score kind -> probability vector over the run's training samples
    private_steps: int  # Σ_i T_i over all private runs
    info: dict = field(default_factory=dict)  # anything worth reporting (ε, convergence, ...)


class RunFailed(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# FIM, once per (protocol, seed)


def ensure_fim(backend: Backend, spec: RunSpec, out: Path, n_jobs: int = 1, parallel: str | None = None) -> dict:
    """The FIM record of (protocol, seed): computed on `n_jobs` workers of `parallel` and saved if
    missing, else read back."""
    directory = fim_dir(out, backend.protocol_key(spec), spec.seed)
    record_path = directory / "fim.json"
    if record_path.exists():
        return load_fim(directory)
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outcome = backend.mine_importance(spec, directory, n_jobs, parallel)
    # A FIM resumed after a kill charges the compute time of all its sessions, not just this one.
    wall = max(time.perf_counter() - start, float(outcome.info.get("compute_seconds", 0.0)))
    unusable = sorted(k for k, p in outcome.p.items() if not np.all(np.isfinite(p) & (np.asarray(p) > 0)))
    kinds = sorted(k for k in outcome.p if k not in unusable)
    if PAPER_SCORE not in kinds:
        raise RunFailed(f"FIM gave no usable {PAPER_SCORE!r} scores (NaN, inf or 0 for some samples)")
    np.savez(directory / "p.npz", **{k: np.asarray(outcome.p[k], dtype="float64") for k in kinds})
    summaries = {k: summarize_p(outcome.p[k]) for k in kinds}
    record = {
        "protocol": backend.protocol_key(spec),
        "seed": spec.seed,
        "wall_s": wall,
        "private_steps": int(outcome.private_steps),
        "units": UNITS_PER_FIM_STEP * int(outcome.private_steps),
        "p_summary": summaries,
        "best_kind": max(kinds, key=lambda k: summaries[k]["cv"]),
        "unusable_kinds": unusable,
        "info": outcome.info,
    }
    atomic_write_text(record_path, json.dumps(record, indent=1, default=float))
    return load_fim(directory)


def fim_kind_for_arm(arm: str, fim: dict) -> str:
    kind = arm[len("is-"):]
    if kind == "paper":
        return PAPER_SCORE
    if kind == "best":
        return fim["best_kind"]
    if kind not in fim["p"]:
        raise ValueError(f"arm {arm!r}: the FIM artefact has no score kind {kind!r} (it has {sorted(fim['p'])})")
    return kind


# ---------------------------------------------------------------------------------------------
# Running one run


class RunContext:
    """One run's spec, RNG, clocks, counters and log; what a backend's metrics see of the grid."""

    def __init__(self, spec: RunSpec, directory: Path, fim: dict | None, resume: dict | None):
        self.spec = spec
        self.directory = directory
        self.fim = fim
        self.fim_kind = fim_kind_for_arm(spec.arm, fim) if fim is not None else None
        self.rng = np.random.RandomState(spec.seed)
        self.start_epoch = 0
        self.checkpoint = None
        self.sampler = None
        self._counters = {"update_samples": 0, "train_wall_s": 0.0, "eval_wall_s": 0.0, "eval_units": 0,
                          "setup_wall_s": 0.0}
        if resume is not None:
            self.start_epoch = resume["epoch"]
            self.checkpoint = resume
            self.rng.set_state(resume["rng"])
            self._counters = dict(resume["counters"])
        self._session_start = time.perf_counter()
        self._eval_wall_session = 0.0
        self._setup_wall_session = 0.0

    @property
    def importance(self) -> np.ndarray | None:
        """The IS arm's P (None for the other arms)."""
        return self.fim["p"][self.fim_kind] if self.fim is not None else None

    # -- sampler ------------------------------------------------------------------------------
    def make_sampler(self, experiment: Experiment):
        """The arm's sampler over the model's training set, `experiment.batch_size` samples per update."""
        spec, n_train, batch_size = self.spec, experiment.model.n_train, experiment.batch_size
        if spec.arm == "uniform":
            sampler = experiment.uniform or make_sampler("uniform", n_train, batch_size)
        elif spec.arm == "replacement":
            sampler = make_sampler("replacement", n_train, batch_size)
        elif spec.uses_fim:
            if len(self.importance) != n_train:
                raise RunFailed(f"FIM P has {len(self.importance)} entries but the run trains on {n_train} samples")
            sampler = make_sampler("importance", n_train, batch_size, p=self.importance)
        elif spec.arm == "online":
            sampler = OnlineImportanceSampler(n_train, batch_size, **experiment.online_options)
            sampler.bind(experiment.model.losses)
        else:
            raise ValueError(f"unknown arm {spec.arm!r}")
        self.sampler = sampler
        return sampler

    # -- clocks -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def evaluation(self, n_samples: int):
        """Time and count an evaluation-only pass (not charged to training)."""
        self._counters["eval_units"] += int(n_samples)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._eval_wall_session += time.perf_counter() - start

    @contextlib.contextmanager
    def setup(self):
        """Time data loading and graph compilation apart (repeated on resume, not training work)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._setup_wall_session += time.perf_counter() - start

    def count_update(self, n_samples: int) -> None:
        self._counters["update_samples"] += int(n_samples)

    def _clocks(self) -> dict:
        session = time.perf_counter() - self._session_start
        counters = dict(self._counters)
        counters["train_wall_s"] += session - self._eval_wall_session - self._setup_wall_session
        counters["eval_wall_s"] += self._eval_wall_session
        counters["setup_wall_s"] += self._setup_wall_session
        return counters

    # -- log ----------------------------------------------------------------------------------
    def end_epoch(self, epoch: int, metrics: dict, model_state: dict | None = None) -> dict:
        """Log one finished epoch (cumulative clocks and units), after saving the checkpoint."""
        bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
        if bad:
            raise RunFailed(f"epoch {epoch}: non-finite metrics {bad} (diverged; lower the step size)")
        bad_params = non_finite((model_state or {}).get("params", {}))
        if bad_params:  # never checkpointed: the last checkpoint stays the last good one
            raise RunFailed(f"epoch {epoch}: parameters {bad_params} hold NaN or inf (diverged; lower the step size)")
        counters = self._clocks()
        scoring = int(getattr(self.sampler, "scoring_units", 0))
        fim_wall = self.fim["wall_s"] if self.fim is not None else 0.0
        fim_units = self.fim["units"] if self.fim is not None else 0
        train_units = UNITS_PER_UPDATE_SAMPLE * counters["update_samples"]
        record = {
            "epoch": int(epoch),
            **{k: float(v) for k, v in metrics.items()},
            "wall_s": counters["train_wall_s"] + fim_wall,
            "units": train_units + scoring + fim_units,
            "train_wall_s": counters["train_wall_s"],
            "train_units": train_units,
            "scoring_units": scoring,
            "fim_wall_s": fim_wall,
            "fim_units": fim_units,
            "eval_wall_s": counters["eval_wall_s"],
            "eval_units": counters["eval_units"],
            "setup_wall_s": counters["setup_wall_s"],
        }
        if isinstance(self.sampler, OnlineImportanceSampler):
            record.update(online_tau=self.sampler.tau, online_is_updates=self.sampler.is_updates,
                          online_updates=self.sampler.updates)
        if model_state is not None:
            atomic_pickle({"format": CHECKPOINT_FORMAT, "epoch": int(epoch), "model": model_state,
                           "sampler": self.sampler.get_state(), "rng": self.rng.get_state(), "counters": counters},
                          self.directory / "checkpoint.pkl")
        append_json_line(self.directory / "log.jsonl", record)
        return record


class ReplicationHook(Hook):
    """The grid's side of the loop: count the samples each update trains on; after each epoch, the
    mean training cost of its updates, the backend's metrics, the checkpoint and the log line."""

    def __init__(self, ctx: RunContext, experiment: Experiment):
        self.ctx, self.experiment = ctx, experiment

    def start_epoch(self, model, progress: Progress) -> None:
        self.costs = []

    def after_update(self, model, progress: Progress) -> None:
        self.ctx.count_update(len(progress.indices))
        self.costs.append(progress.step.cost)

    def end_epoch(self, model, progress: Progress) -> None:
        metrics = {"train_cost_during_epoch": float(np.mean(self.costs)), **self.experiment.metrics(self.ctx)}
        self.ctx.end_epoch(progress.epoch + 1, metrics, model.get_state())


def train_run(backend: Backend, ctx: RunContext) -> None:
    """Prepare the run's model (W(0) from the run's RNG), restore its checkpoint if any, train the
    remaining epochs with the one loop. Epoch 0's metrics are those before any update."""
    spec = ctx.spec
    with ctx.setup():
        # A resumed run replays W(0)'s draws on a throw-away RNG, then takes everything from its checkpoint.
        init_rng = ctx.rng if ctx.checkpoint is None else np.random.RandomState(spec.seed)
        experiment = backend.prepare(spec, init_rng)
        model = experiment.model
        sampler = ctx.make_sampler(experiment)
    if ctx.checkpoint is not None:
        model.set_state(ctx.checkpoint["model"])
        sampler.set_state(ctx.checkpoint["sampler"])
    else:
        ctx.end_epoch(0, experiment.metrics(ctx))
    fit(model, sampler, ctx.rng, spec.epochs, [ReplicationHook(ctx, experiment)], start_epoch=ctx.start_epoch,
        progress_bar=False)


def _resume_point(directory: Path) -> dict | None:
    """The last checkpoint and a log cut back to it; without a usable checkpoint the log restarts empty."""
    log_path, ckpt_path = directory / "log.jsonl", directory / "checkpoint.pkl"
    resume = None
    if ckpt_path.exists():
        try:
            with open(ckpt_path, "rb") as f:
                resume = pickle.load(f)
        except Exception:  # damaged from outside: start over rather than trust it
            resume = None
        if not isinstance(resume, dict) or resume.get("format") != CHECKPOINT_FORMAT:
            print(f"{ckpt_path}: not a checkpoint of this version; the run starts over", file=sys.stderr)
            resume = None
    kept = [r for r in read_json_lines(log_path) if resume is not None and r["epoch"] <= resume["epoch"]]
    if resume is not None and (not kept or kept[-1]["epoch"] != resume["epoch"]):
        resume, kept = None, []  # the log line of the checkpointed epoch is missing: start over
    rewrite_json_lines(log_path, kept)
    return resume


def execute_run(backend: Backend, spec: RunSpec, out: Path) -> str:
    """Run (or resume, or skip) one grid run; returns "skipped", "done" or "failed: …". A run another
    process is training (the same grid started twice, on one machine or on a cluster) is left to it:
    two writers would interleave its log and overwrite each other's checkpoints."""
    directory = run_dir(out, spec)
    directory.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(directory / RUN_LOCK) as held:
        if not held:
            holder = (directory / RUN_LOCK).read_text().strip() or "another process"
            return (f"failed: {spec.run_id}: {holder} is training it; let it finish (a grid restarted later "
                    "skips it), or stop that process first")
        return _execute_held_run(backend, spec, out, directory)


def _execute_held_run(backend: Backend, spec: RunSpec, out: Path, directory: Path) -> str:
    spec_path = directory / "spec.json"
    previous = RunSpec(**json.loads(spec_path.read_text())) if spec_path.exists() else spec
    if previous != spec:
        refusal = _extension_refusal(previous, spec, directory)
        if refusal:
            return f"failed: {spec.run_id}: {refusal}"
        with contextlib.suppress(FileNotFoundError):
            (directory / "done").unlink()
    if (directory / "done").exists():
        return "skipped"
    atomic_write_text(spec_path, json.dumps(asdict(spec), indent=1))
    try:
        fim = ensure_fim(backend, spec, out) if spec.uses_fim else None
        ctx = RunContext(spec, directory, fim, _resume_point(directory))
        train_run(backend, ctx)
        records = read_json_lines(directory / "log.jsonl")
        if not records or records[-1]["epoch"] != spec.epochs:
            raise RunFailed(f"training returned after epoch {records[-1]['epoch'] if records else None}, "
                            f"not {spec.epochs}")
    except Exception as err:
        atomic_write_text(directory / "error.txt", traceback.format_exc())
        return f"failed: {spec.run_id}: {err}"
    done = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "fim_kind": ctx.fim_kind, "last": records[-1]}
    atomic_write_text(directory / "done", json.dumps(done))
    with contextlib.suppress(FileNotFoundError):  # the last checkpoint stays: it lets --epochs grow later
        (directory / "error.txt").unlink()
    return "done"


def _extension_refusal(previous: RunSpec, spec: RunSpec, directory: Path) -> str | None:
    """Why the run in `directory` (spec `previous`) cannot become `spec`, or None if it can. Only the
    epochs may change (where a run stops changes none of its numbers): to any count the run has not
    logged past yet, and beyond a finished run's end only from its last checkpoint."""
    if replace(previous, epochs=spec.epochs) != spec:
        return f"{directory} holds a run with a different spec; use another --out"
    logged = max((r["epoch"] for r in read_json_lines(directory / "log.jsonl")), default=0)
    if spec.epochs < logged:
        return (f"{directory} holds a run that has logged {logged} epochs; it cannot be shortened to {spec.epochs} "
                f"(ask for --epochs {logged} or more, or use another --out)")
    if (directory / "done").exists() and not (directory / "checkpoint.pkl").exists():
        return (f"{directory} finished {previous.epochs} epochs and has no checkpoint to continue from (runs "
                f"finished by an older version, or copied from a repository without it); ask for --epochs "
                f"{previous.epochs}, or use another --out to train {spec.epochs} epochs from scratch")
    return None


# ---------------------------------------------------------------------------------------------
# The grid


def _mine_missing(backend: Backend, specs: list[RunSpec], out: Path, n_jobs: int, parallel: str | None) -> dict[str, str]:
    """FIM for every (protocol, seed) the IS arms need and has no record yet, one after another, each
    on all the workers: its samples (not whole FIMs) are the pool's tasks, so one FIM uses a whole
    cluster and the runs waiting for it start as soon as it can be done."""
    jobs = {}
    for spec in specs:
        if spec.uses_fim:
            jobs.setdefault((backend.protocol_key(spec), spec.seed), spec)
    statuses = {}
    for (protocol, seed), spec in jobs.items():
        if (fim_dir(out, protocol, seed) / "fim.json").exists():
            continue
        try:
            ensure_fim(backend, spec, out, n_jobs, parallel)
            statuses[f"fim:{protocol}:seed{seed}"] = "done"
        except Exception as err:
            statuses[f"fim:{protocol}:seed{seed}"] = f"failed: FIM {protocol} seed {seed}: {err!r}"
    return statuses


def run_grid(backend: Backend, specs: list[RunSpec], out: Path, n_jobs: int = 1, command: str = "",
             progress: bool = True, parallel: str | None = None) -> dict[str, str]:
    """FIM first (once per protocol and seed, on all the workers), then every run, `n_jobs` at a time;
    both with joblib on the `parallel` backend (None: processes here; "dask": the workers of the active
    dask client, where a run lost with its worker is run again, resuming from its last checkpoint)."""
    out.mkdir(parents=True, exist_ok=True)
    _extend_manifest(out, specs, command, getattr(backend, "floatX", None))
    statuses = _mine_missing(backend, specs, out, n_jobs, parallel)
    if not specs:
        return statuses
    results = pool(n_jobs, parallel)(delayed(execute_run)(backend, s, out) for s in specs)
    bar = tqdm(total=len(specs), desc="runs", disable=not progress, file=sys.stderr)
    for spec, status in zip(specs, results):  # exhausted fully: joblib reuses its workers afterwards
        statuses[spec.run_id] = status
        bar.update()
    bar.close()
    return statuses


def _extend_manifest(out: Path, specs: list[RunSpec], command: str, floatX: str | None) -> None:
    """grid.json: every command run on the folder and every run any of them asked for (a grid is often
    run in pieces, one arm or seed at a time); checked first to be the same grid."""
    manifest_path = out / "grid.json"
    figure = specs[0].figure if specs else None
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        _check_same_grid(out, previous, figure, floatX)
    else:
        previous = {"commands": []}
    commands = previous["commands"] + ([command] if command and command not in previous["commands"] else [])
    asked = previous.get("specs", []) + [asdict(s) for s in specs]
    manifest = {"figure": figure, "floatX": floatX, "commands": commands,
                "specs": [s for i, s in enumerate(asked) if s not in asked[:i]]}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))


def _check_same_grid(out: Path, manifest: dict, figure: str | None, floatX: str | None) -> None:
    """A grid folder holds one figure's runs, all of the float type it was started with (grids from
    before it was recorded were all float64): resuming it with another would mix them silently."""
    if figure is not None and manifest.get("figure") not in (None, figure):
        raise SettingError(f"{out} is a {manifest['figure']} grid; give the {figure} grid another --out")
    started = manifest.get("floatX", "float64")
    if floatX is not None and started != floatX:
        raise SettingError(f"{out} is a grid of --floatX {started} runs and FIM artefacts; resume it with "
                           f"--floatX {started}, or give the {floatX} grid another --out")
