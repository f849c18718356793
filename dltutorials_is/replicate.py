"""Replicate the paper's Figures 4 (LSTM on IMDB) and 6 (RNN-RBM on Nottingham) as a resumable grid.

    python -m dltutorials_is.replicate fig4 --epochs 5 --train-subset 2000 --seeds 0 1 2 --n-jobs 2
    python -m dltutorials_is.replicate fig6 --epochs 20 --n-jobs 2
    python -m dltutorials_is.replicate report --fig4 runs/replication/fig4 --fig6 runs/replication/fig6

A grid is the product of cells (batch size × step size), arms and seeds. Every run writes to its own
directory under `<out>/runs/`: `spec.json`, `log.jsonl` (one line per finished epoch, appended and
fsynced, so a killed run leaves only whole lines), `checkpoint.pkl` (replaced atomically after each
epoch when the model loop hands one over) and finally `done`.  Restarting the same command skips
runs with `done` and resumes the others from their last checkpoint (or from scratch without one).

Arms: `uniform` (the tutorial's sampler), `replacement` (uniform with replacement: the control that
separates *importance* from *sampling with replacement*), `is-paper` (FIM, the paper's `norm` score
of the paper's base matrix), `is-best` (the FIM score kind whose P has the largest coefficient of
variation in that FIM artefact), `is-<kind>` (any FIM score kind), `online` (Katharopoulos & Fleuret).

FIM runs once per (protocol, seed), before any training, and its wall time and forward-pass units
are charged to the clocks of every IS arm that uses it.

Cost accounting (Krause et al. 2015): a training update on B samples costs 3·B forward-pass units
(forward + backward ≈ 3 forwards); a FIM private step on one sample costs 3; the online sampler's
scoring pass costs 1 per scored sample.  Evaluation passes (error/cost curves) are counted in
`eval_units` and timed in `eval_wall_s`, never charged to training.

Models plug in through a `Backend` (see its docstring); `dltutorials_is.replicate_backends` holds
the real LSTM and RNN-RBM ones.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from dltutorials_is.atomic import atomic_pickle, atomic_write_text
from dltutorials_is.online_is import OnlineImportanceSampler
from dltutorials_is.samplers import make_sampler, summarize_p

UNITS_PER_UPDATE_SAMPLE = 3  # forward + backward of one sample, in forward passes
UNITS_PER_FIM_STEP = 3
DEFAULT_ARMS = ("uniform", "replacement", "is-paper", "is-best", "online")
PAPER_SCORE = "norm"


@dataclass(frozen=True)
class FigureConfig:
    """What a figure's grid looks like by default and which per-epoch metrics it plots."""

    name: str
    title: str
    cells: tuple[tuple[int, float], ...]  # (batch size, step size)
    epochs: int
    metrics: tuple[str, ...]  # logged per epoch; lower is better
    metric_labels: dict = field(default_factory=dict)
    named_cells: tuple[tuple[int, float], ...] = ()  # the cells the paper names explicitly
    log_y: bool = False  # plot the metrics on a log scale (a saturated RNN-RBM cost spikes by 1000×)


FIGURES = {
    "fig4": FigureConfig(
        name="fig4",
        title="Figure 4: LSTM on IMDB, SGD, batch 16",
        # The paper names λ = 0.5 and 0.1; 0.05 and 1.0 bracket them (our choice).
        cells=((16, 0.05), (16, 0.1), (16, 0.5), (16, 1.0)),
        epochs=20,
        metrics=("train_err", "valid_err"),
        metric_labels={"train_err": "training error", "valid_err": "validation error"},
        named_cells=((16, 0.1), (16, 0.5)),
    ),
    "fig6": FigureConfig(
        name="fig6",
        title="Figure 6: RNN-RBM on Nottingham",
        # The paper names λ = 0.3 at batch 50 and 0.003 at batch 100; the second step size of each
        # batch size (ours) is 3× smaller: 0.1 and the tutorial's default 0.001.
        cells=((50, 0.1), (50, 0.3), (100, 0.001), (100, 0.003)),
        epochs=200,
        metrics=("cost",),
        metric_labels={"cost": "mean cost per epoch (no updates)"},
        named_cells=((50, 0.3), (100, 0.003)),
        log_y=True,
    ),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid; everything that changes its numbers is in here."""

    figure: str
    arm: str
    seed: int
    batch_size: int
    step_size: float
    epochs: int
    train_subset: int | None = None  # None: the full training set
    subset_mode: str = "random"
    eval_subset: int | None = None  # None: evaluate on whole sets; N: on N fixed random samples of each

    @property
    def run_id(self) -> str:
        return f"{self.arm}_b{self.batch_size}_lr{self.step_size:g}_s{self.seed}"

    @property
    def cell(self) -> tuple[int, float]:
        return (self.batch_size, self.step_size)

    @property
    def uses_fim(self) -> bool:
        return self.arm.startswith("is-")


def subset_indices(n: int, size: int | None, mode: str) -> np.ndarray:
    """The training samples a run uses: all, the first `size`, or `size` fixed random ones.

    The random subset does not depend on the run's seed (RandomState(0)), so every arm and seed of a
    grid trains on the same data and FIM mines the samples that training uses.
    """
    if size is None or size >= n:
        return np.arange(n)
    if size <= 0:
        raise ValueError(f"--train-subset must be positive, got {size}")
    if mode == "first":
        return np.arange(size)
    if mode == "random":
        return np.sort(np.random.RandomState(0).choice(n, size, replace=False))
    raise ValueError(f"unknown subset mode {mode!r}: choose first or random")


# ---------------------------------------------------------------------------------------------
# The model interface


class Backend:
    """How the grid runs a model. Subclass it; it must be picklable (it is sent to worker processes).

    protocol_key(spec): names the training set a run uses (e.g. "subset2000"); FIM is computed once
        per (protocol_key, seed) and shared by every IS arm with that key.
    mine_importance(spec, workdir) -> FimOutcome: runs FIM for spec.seed's W(0) on that training set
        (may cache inside `workdir`) and returns P per score kind and the private SGD steps taken.
    train(ctx: RunContext): trains one run. It must
        - ask `ctx.make_sampler(n_train)` for its sampler and consume `sampler.epoch(rng)` batches;
          when the sampler has `bind` (online IS), call `sampler.bind(per_sample_loss_fn)` first;
        - draw its randomness from `ctx.rng` (restored on resume) or save its own in the checkpoint;
        - start at epoch `ctx.start_epoch + 1`, restoring `ctx.checkpoint` when it is not None;
        - wrap every evaluation-only pass in `with ctx.evaluation(n_samples):` and data loading and
          graph compilation in `with ctx.setup():` (both are kept off the training clock);
        - after each epoch e (1-based) call `ctx.end_epoch(e, metrics, checkpoint)` (outside the
          evaluation block, so its time is on the checkpoint's clock); it may also log
          epoch 0 (metrics before training) when starting fresh.
    """

    figure: str = ""

    def protocol_key(self, spec: RunSpec) -> str:
        raise NotImplementedError

    def mine_importance(self, spec: RunSpec, workdir: Path) -> "FimOutcome":
        raise NotImplementedError

    def train(self, ctx: "RunContext") -> None:
        raise NotImplementedError


@dataclass
class FimOutcome:
    p: dict  # score kind -> probability vector over the run's training samples
    private_steps: int  # Σ_i T_i over all private runs
    info: dict = field(default_factory=dict)  # anything worth reporting (ε, convergence, ...)


class RunFailed(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# Files


def read_log(path: Path) -> list[dict]:
    """The whole lines of a JSON-lines log; a line cut short by a kill is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def rewrite_log(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def run_dir(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / spec.run_id


def fim_dir(out: Path, protocol_key: str, seed: int) -> Path:
    return out / "fim" / protocol_key / f"seed{seed}"


# ---------------------------------------------------------------------------------------------
# FIM, once per (protocol, seed)


def ensure_fim(backend: Backend, spec: RunSpec, out: Path) -> dict:
    """The FIM record of (protocol, seed): computed and saved if missing, else read back."""
    directory = fim_dir(out, backend.protocol_key(spec), spec.seed)
    record_path = directory / "fim.json"
    if record_path.exists():
        return load_fim(directory)
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outcome = backend.mine_importance(spec, directory)
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


def load_fim(directory: Path) -> dict:
    record = json.loads((directory / "fim.json").read_text())
    with np.load(directory / "p.npz") as arrays:
        record["p"] = {k: arrays[k] for k in arrays.files}
    return record


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


class CountingSampler:
    """Wraps a sampler and charges 3 units per sample of every batch it hands out."""

    def __init__(self, sampler):
        self.inner = sampler
        self.update_samples = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def epoch(self, rng: np.random.RandomState) -> "_CountedEpoch":
        return _CountedEpoch(self, self.inner.epoch(rng))

    @property
    def scoring_units(self) -> int:
        return int(getattr(self.inner, "scoring_units", 0))


class _CountedEpoch:
    def __init__(self, owner: CountingSampler, batches):
        self._owner, self._batches = owner, batches

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator:
        for indices, weights in self._batches:
            self._owner.update_samples += len(indices)
            yield indices, weights


class RunContext:
    """What a backend's `train` sees of the grid: its spec, sampler, RNG, clocks and log."""

    def __init__(self, spec: RunSpec, directory: Path, fim: dict | None, resume: dict | None):
        self.spec = spec
        self.directory = directory
        self.fim = fim
        self.fim_kind = fim_kind_for_arm(spec.arm, fim) if fim is not None else None
        self.rng = np.random.RandomState(spec.seed)
        self.start_epoch = 0
        self.checkpoint = None
        self.sampler: CountingSampler | None = None
        self._counters = {"update_samples": 0, "train_wall_s": 0.0, "eval_wall_s": 0.0, "eval_units": 0,
                          "setup_wall_s": 0.0}
        self._sampler_state = None
        if resume is not None:
            self.start_epoch = resume["epoch"]
            self.checkpoint = resume["backend"]
            self.rng.set_state(resume["rng"])
            self._counters = dict(resume["counters"])
            self._sampler_state = resume["sampler_state"]
        self._session_start = time.perf_counter()
        self._eval_wall_session = 0.0
        self._setup_wall_session = 0.0

    # -- sampler ------------------------------------------------------------------------------
    def make_sampler(self, n_train: int, batch_size: int | None = None, uniform=None,
                     **online_options) -> CountingSampler:
        """The arm's sampler over `n_train` samples, `batch_size` (default spec.batch_size) per update.

        `uniform`: the model's own uniform sampler when it differs from `samplers.UniformSampler`
        (the RNN-RBM's song order); `online_options` go to `OnlineImportanceSampler`.
        """
        spec = self.spec
        batch_size = spec.batch_size if batch_size is None else batch_size
        if spec.arm == "uniform":
            sampler = uniform if uniform is not None else make_sampler("uniform", n_train, batch_size)
        elif spec.arm == "replacement":
            sampler = make_sampler("replacement", n_train, batch_size)
        elif spec.uses_fim:
            p = self.fim["p"][self.fim_kind]
            if len(p) != n_train:
                raise RunFailed(f"FIM P has {len(p)} entries but the run trains on {n_train} samples")
            sampler = make_sampler("importance", n_train, batch_size, p=p)
        elif spec.arm == "online":
            sampler = OnlineImportanceSampler(n_train, batch_size, **online_options)
            if self._sampler_state is not None:
                sampler.load_state(self._sampler_state)
        else:
            raise ValueError(f"unknown arm {spec.arm!r}")
        self.sampler = CountingSampler(sampler)
        self.sampler.update_samples = self._counters["update_samples"]
        return self.sampler

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

    def _clocks(self) -> dict:
        session = time.perf_counter() - self._session_start
        counters = dict(self._counters)
        counters["train_wall_s"] += session - self._eval_wall_session - self._setup_wall_session
        counters["eval_wall_s"] += self._eval_wall_session
        counters["setup_wall_s"] += self._setup_wall_session
        if self.sampler is not None:
            counters["update_samples"] = self.sampler.update_samples
        return counters

    # -- log ----------------------------------------------------------------------------------
    def end_epoch(self, epoch: int, metrics: dict, checkpoint=None) -> dict:
        """Log one finished epoch (cumulative clocks and units) and save the checkpoint first."""
        bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
        if bad:
            raise RunFailed(f"epoch {epoch}: non-finite metrics {bad} (diverged; lower the step size)")
        counters = self._clocks()
        scoring = self.sampler.scoring_units if self.sampler is not None else 0
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
        inner = self.sampler.inner if self.sampler is not None else None
        if isinstance(inner, OnlineImportanceSampler):
            record.update(online_tau=inner.tau, online_is_updates=inner.is_updates, online_updates=inner.updates)
        if checkpoint is not None:
            state = {
                "epoch": int(epoch),
                "backend": checkpoint,
                "rng": self.rng.get_state(),
                "counters": counters,
                "sampler_state": inner.state() if isinstance(inner, OnlineImportanceSampler) else None,
            }
            atomic_pickle(state, self.directory / "checkpoint.pkl")
        with open(self.directory / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return record


def _resume_point(directory: Path) -> dict | None:
    """The last checkpoint and a log cut back to it; without a checkpoint the log restarts empty."""
    log_path, ckpt_path = directory / "log.jsonl", directory / "checkpoint.pkl"
    resume = None
    if ckpt_path.exists():
        try:
            with open(ckpt_path, "rb") as f:
                resume = pickle.load(f)
        except Exception:  # damaged from outside: start over rather than trust it
            resume = None
    kept = [r for r in read_log(log_path) if resume is not None and r["epoch"] <= resume["epoch"]]
    if resume is not None and (not kept or kept[-1]["epoch"] != resume["epoch"]):
        resume, kept = None, []  # the log line of the checkpointed epoch is missing: start over
    rewrite_log(log_path, kept)
    return resume


def execute_run(backend: Backend, spec: RunSpec, out: Path) -> str:
    """Run (or resume, or skip) one grid run; returns "skipped", "done" or "failed: …"."""
    directory = run_dir(out, spec)
    if (directory / "done").exists():
        return "skipped"
    directory.mkdir(parents=True, exist_ok=True)
    spec_path = directory / "spec.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != asdict(spec):
        return f"failed: {directory} holds a run with a different spec; use another --out"
    atomic_write_text(spec_path, json.dumps(asdict(spec), indent=1))
    try:
        fim = ensure_fim(backend, spec, out) if spec.uses_fim else None
        ctx = RunContext(spec, directory, fim, _resume_point(directory))
        backend.train(ctx)
        records = read_log(directory / "log.jsonl")
        if not records or records[-1]["epoch"] != spec.epochs:
            raise RunFailed(f"training returned after epoch {records[-1]['epoch'] if records else None}, "
                            f"not {spec.epochs}")
    except Exception as err:
        atomic_write_text(directory / "error.txt", traceback.format_exc())
        return f"failed: {spec.run_id}: {err}"
    done = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "fim_kind": ctx.fim_kind, "last": records[-1]}
    atomic_write_text(directory / "done", json.dumps(done))
    with contextlib.suppress(FileNotFoundError):
        (directory / "checkpoint.pkl").unlink()
        (directory / "error.txt").unlink()
    return "done"


# ---------------------------------------------------------------------------------------------
# The grid


def grid_specs(
    figure: str,
    cells: Iterable[tuple[int, float]],
    arms: Iterable[str],
    seeds: Iterable[int],
    epochs: int,
    train_subset: int | None = None,
    subset_mode: str = "random",
    eval_subset: int | None = None,
) -> list[RunSpec]:
    return [
        RunSpec(figure, arm, seed, b, lr, epochs, train_subset, subset_mode, eval_subset)
        for seed in seeds
        for b, lr in cells
        for arm in arms
    ]


def _fim_job(backend: Backend, spec: RunSpec, out: Path) -> str:
    try:
        ensure_fim(backend, spec, out)
        return "done"
    except Exception as err:
        return f"failed: FIM {backend.protocol_key(spec)} seed {spec.seed}: {err!r}"


def run_grid(backend: Backend, specs: list[RunSpec], out: Path, n_jobs: int = 1, command: str = "",
             progress: bool = True) -> dict[str, str]:
    """FIM first (once per protocol and seed), then every run; both phases in parallel with joblib."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, specs, command)
    fim_jobs = {}
    for spec in specs:
        if spec.uses_fim:
            fim_jobs.setdefault((backend.protocol_key(spec), spec.seed), spec)
    statuses = {}
    for label, jobs, key in (
        ("FIM", list(fim_jobs.values()), lambda s: f"fim:{backend.protocol_key(s)}:seed{s.seed}"),
        ("runs", specs, lambda s: s.run_id),
    ):
        todo = [s for s in jobs if not (label == "FIM" and (fim_dir(out, backend.protocol_key(s), s.seed) / "fim.json").exists())]
        if not todo:
            continue
        work = _fim_job if label == "FIM" else execute_run
        results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(work)(backend, s, out) for s in todo)
        bar = tqdm(total=len(todo), desc=label, disable=not progress, file=sys.stderr)
        for index, status in enumerate(results):  # exhausted fully: joblib reuses its workers afterwards
            statuses[key(todo[index])] = status
            bar.update()
        bar.close()
    return statuses


def _write_manifest(out: Path, specs: list[RunSpec], command: str) -> None:
    manifest_path = out / "grid.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"commands": []}
    commands = previous["commands"] + ([command] if command and command not in previous["commands"] else [])
    manifest = {"figure": specs[0].figure if specs else None, "commands": commands,
                "specs": [asdict(s) for s in specs]}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))


# ---------------------------------------------------------------------------------------------
# Reading a grid back (for plots and the report)


@dataclass
class RunLog:
    spec: RunSpec
    records: list[dict]
    done: bool
    fim_kind: str | None
    directory: Path | None = None

    def series(self, key: str) -> np.ndarray:
        return np.array([r.get(key, np.nan) for r in self.records], dtype="float64")


def load_grid(out: Path) -> list[RunLog]:
    logs = []
    for directory in sorted((out / "runs").glob("*")):
        spec_path = directory / "spec.json"
        if not spec_path.exists():
            continue
        spec = RunSpec(**json.loads(spec_path.read_text()))
        done_path = directory / "done"
        done = json.loads(done_path.read_text()) if done_path.exists() else None
        logs.append(RunLog(spec, read_log(directory / "log.jsonl"), done is not None,
                           done.get("fim_kind") if done else None, directory))
    return logs


def load_manifest(out: Path) -> dict:
    path = out / "grid.json"
    return json.loads(path.read_text()) if path.exists() else {"commands": [], "specs": []}


def load_fim_records(out: Path) -> list[dict]:
    records = []
    for path in sorted((out / "fim").glob("*/seed*/fim.json")):
        records.append(json.loads(path.read_text()))
    return records


# ---------------------------------------------------------------------------------------------
# Command line


def _parse_cells(args, config: FigureConfig) -> list[tuple[int, float]]:
    if args.cells:
        cells = []
        for text in args.cells:
            try:
                b, lr = text.split(":")
                cells.append((int(b), float(lr)))
            except ValueError:
                raise SystemExit(f"--cells wants BATCH:STEP pairs such as 16:0.5, got {text!r}")
        return cells
    batch_sizes = args.batch_sizes or sorted({b for b, _ in config.cells})
    if args.step_sizes:
        return [(b, lr) for b in batch_sizes for lr in args.step_sizes]
    return [(b, lr) for b, lr in config.cells if b in batch_sizes]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dltutorials_is.replicate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, config in FIGURES.items():
        p = sub.add_parser(name, help=config.title)
        p.add_argument("--epochs", type=int, default=config.epochs)
        p.add_argument("--train-subset", type=int, default=None, metavar="N",
                       help="train on N samples only (default: the whole training set)")
        p.add_argument("--subset-mode", choices=("random", "first"), default="random",
                       help="which N: fixed random ones (RandomState(0), the same for every run) or the first N")
        p.add_argument("--eval-subset", type=int, default=None, metavar="N",
                       help="evaluate each per-epoch metric on N fixed random samples of its set (default: all)")
        p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="(positive: they seed MRG streams too)")
        p.add_argument("--step-sizes", type=float, nargs="+", help="override the step sizes (every batch size)")
        p.add_argument("--batch-sizes", type=int, nargs="+", help="restrict/override the batch sizes")
        p.add_argument("--cells", nargs="+", metavar="BATCH:STEP", help="explicit cells, e.g. 50:0.3 100:0.003")
        p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS))
        p.add_argument("--n-jobs", type=int, default=1, help="runs trained in parallel (joblib processes)")
        p.add_argument("--out", type=Path, default=Path("runs/replication") / name)
        p.add_argument("--data-dir", type=Path, default=None)
        p.add_argument("--floatX", choices=("float64", "float32"), default="float64")
        p.add_argument("--no-plots", action="store_true")
    p = sub.add_parser("plot", help="plot a finished (or partial) grid")
    p.add_argument("out", type=Path)
    p.add_argument("--figures", type=Path, default=None, help="PNG directory (default: <out>/plots)")
    p = sub.add_parser("report", help="write REPLICATION.md and its figures from the grids' logs")
    p.add_argument("--fig4", type=Path, default=Path("runs/replication/fig4"))
    p.add_argument("--fig6", type=Path, default=Path("runs/replication/fig6"))
    p.add_argument("--output", type=Path, default=Path("REPLICATION.md"))
    p.add_argument("--figures", type=Path, default=Path("docs/replication"))
    p.add_argument("--summary", type=Path, default=None,
                   help="hand-written markdown placed before the generated sections (e.g. docs/replication/summary.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "plot":
        from dltutorials_is.replicate_plots import plot_grid

        for path in plot_grid(args.out, args.figures or args.out / "plots"):
            print(path)
        return 0
    if args.command == "report":
        from dltutorials_is.replicate_report import write_report

        if args.summary is not None and not args.summary.is_file():
            parser.error(f"--summary {args.summary}: no such file")
        write_report({"fig4": args.fig4, "fig6": args.fig6}, args.output, args.figures, args.summary)
        print(f"wrote {args.output} and figures in {args.figures}")
        return 0

    config = FIGURES[args.command]
    from dltutorials_is.replicate_backends import make_backend

    backend = make_backend(args.command, data_dir=args.data_dir, floatX=args.floatX)
    specs = grid_specs(args.command, _parse_cells(args, config), args.arms, args.seeds, args.epochs,
                       args.train_subset, args.subset_mode, args.eval_subset)
    command = "python -m dltutorials_is.replicate " + " ".join(shlex.quote(a) for a in argv)
    statuses = run_grid(backend, specs, args.out, n_jobs=args.n_jobs, command=command)
    failed = {k: v for k, v in statuses.items() if v.startswith("failed")}
    runs = [v for k, v in statuses.items() if not k.startswith("fim:")]
    print(f"{args.out}: {len(specs)} runs: {runs.count('done')} finished now, "
          f"{runs.count('skipped')} finished before, {len(failed)} failed")
    for status in failed.values():
        print("  " + status, file=sys.stderr)
    if not args.no_plots:
        from dltutorials_is.replicate_plots import plot_grid

        for path in plot_grid(args.out, args.out / "plots"):
            print(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
