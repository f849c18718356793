"""Fast Importance Mining (FIM, the paper's Algorithm 2), independent of any model.

For every training sample i a *private* copy of the model starts from the common initial
parameters W(0), is trained by SGD on sample i alone until its loss drops below ε (or a step
limit), and scores of its base matrices are kept; p_i = score_i / Σ_j score_j (paper eq. 23).
Score kinds: `norm` ‖W_i‖ (the paper's, eq. 23), `displacement` ‖W_i − W(0)‖, `path` Σ_t ‖g_i(t)‖
(the bound of eq. 25) and `grad0` ‖∇f_i(W(0))‖; Frobenius norms unless "spectral" is asked for.

The model enters through a plug-in, a picklable *trainer spec* with

    n_samples          number of training samples N
    train_fingerprint  hash of the training set (see `io.fingerprint`)
    init_fingerprint   hash of W(0)
    config()           JSON-able dict of everything that changes the results; must hold
                       "eps", "norm", "bases" (first = default base) and "protocol". Besides FIM's
                       own settings (`FIM_SETTINGS`) it holds the options of the run that change
                       the private model or its data; a run asks for P with those options
                       (`expected`, built by the plug-in's same function) and an artefact mined
                       with others is refused, naming them
    build()            compiles the model and returns `run(i) -> PrivateRun`; called once per
                       worker process/thread, never per sample

Each sample's private run must depend only on its index (seed its noise from i), so results do not
depend on scheduling, n_jobs or restarts. `mine` runs the samples with joblib (any backend,
including "dask"), writes finished shards atomically next to the output, resumes from them after a
crash, and assembles one artefact that `load_importance` reads back and verifies.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from joblib import delayed, effective_n_jobs
from tqdm import tqdm

from dltutorials_is.cluster import pool
from dltutorials_is.errors import UserError
from dltutorials_is.io import (
    NUMPY_GLOBALS,
    atomic_pickle,
    atomic_write_text,
    check_writable,
    check_writable_dir,
    fingerprint,
    load_pickles,
    remove_stale_temporaries_in,
)
from dltutorials_is.sampling.samplers import format_p_summary, uniform_p_warning

SCORE_KINDS = ("norm", "displacement", "path", "grad0")
#: FIM's own hyper-parameters: a run may use P mined with other values (a smaller ε, on purpose), so they
#: are reported when P is loaded, never refused. Every other entry of an artefact's config is an option
#: of the run that changes the private model or its data.
FIM_SETTINGS = ("eps", "lr", "max_iters", "norm", "bases")
NORM_KINDS = ("fro", "spectral")
ARTEFACT_FORMAT = "dltutorials-is/fim-importance"
ARTEFACT_VERSION = 1


class FIMError(UserError, RuntimeError):
    """A FIM run or artefact cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class PrivateRun:
    """Outcome of training one private model on one sample."""

    iterations: int  # T_i, SGD steps taken
    loss: float  # the sample's loss when training stopped
    converged: bool  # loss < ε was reached within the step limit
    scores: dict = field(default_factory=dict)  # {(base, kind): float}


def matrix_norm(a: np.ndarray, kind: str = "fro") -> float:
    """Frobenius (default) or spectral norm; vectors get their Euclidean norm either way."""
    a = np.asarray(a, dtype="float64")
    if kind == "fro" or a.ndim < 2:
        return float(np.sqrt(np.sum(a * a)))
    if kind == "spectral":
        return float(np.linalg.norm(a, 2))
    raise ValueError(f"unknown norm {kind!r}: choose {' or '.join(NORM_KINDS)}")


class ScoreTracker:
    """Accumulates the four score kinds of one base matrix along a private SGD run.

    A private run follows Algorithm 2 literally: each step computes the loss and gradient at the
    current parameters and applies the update; the run stops after the first step whose loss is
    < ε (or after max_iters steps). Call `step(grad_norm)` with the norm of each applied gradient,
    then `finish(w)` with the final matrix; `w0` is the base matrix of W(0).
    """

    def __init__(self, w0: np.ndarray, norm: str):
        self.w0, self.norm = np.asarray(w0), norm
        self.path = 0.0
        self.grad0 = None

    def step(self, grad_norm: float) -> None:
        if self.grad0 is None:
            self.grad0 = grad_norm
        self.path += grad_norm

    def finish(self, w: np.ndarray, base: str) -> dict:
        return {
            (base, "norm"): matrix_norm(w, self.norm),
            (base, "displacement"): matrix_norm(np.asarray(w) - self.w0, self.norm),
            (base, "path"): self.path,
            (base, "grad0"): self.grad0,
        }


def gradient_norms(grads: dict, norm: str) -> dict:
    """What `private_run`'s step returns for the gradients of the bases: their norms."""
    return {b: matrix_norm(g, norm) for b, g in grads.items()}


def private_run(step: Callable[[], tuple[float, dict]], w0_bases: dict, final_bases: Callable[[], dict], eps: float,
                max_iters: int, norm: str, extra_scores: Callable[[dict], dict] | None = None) -> PrivateRun:
    """Algorithm 2's inner loop for one sample, shared by the plug-ins.

    `step()` takes one private SGD step and returns its loss and the norm (`norm`) of the gradient of
    every base in `w0_bases` (the base matrices of W(0)), so that a plug-in may compute the norms where
    the gradients are (see `gradient_norms`); steps run until one's loss is < eps, or `max_iters` steps.
    Scores come from the trackers and `final_bases()` (the base matrices then); `extra_scores(final)`
    may replace some. A non-finite loss makes every score NaN.
    """
    trackers = {b: ScoreTracker(w0, norm) for b, w0 in w0_bases.items()}
    loss, steps = np.inf, 0
    while steps < max_iters:
        loss, grad_norms = step()
        steps += 1
        for b, tracker in trackers.items():
            tracker.step(grad_norms[b])
        if not np.isfinite(loss) or loss < eps:
            break
    final = final_bases()
    scores = {}
    for b, tracker in trackers.items():
        scores.update(tracker.finish(final[b], b))
    if extra_scores is not None:
        scores.update(extra_scores(final))
    if not np.isfinite(loss):
        scores = {key: float("nan") for key in scores}
    return PrivateRun(iterations=steps, loss=float(loss), converged=bool(loss < eps), scores=scores)


def check_private_run_options(norm, bases, known_bases, eps, lr, max_iters) -> None:
    """Refuse private-training settings a plug-in cannot honour, before any worker starts."""
    if norm not in NORM_KINDS:
        raise ValueError(f"unknown norm {norm!r}; choose {' or '.join(NORM_KINDS)}")
    unknown = set(bases) - set(known_bases)
    if unknown or not bases:
        raise ValueError(f"unknown base matrices {sorted(unknown)}; choose among {', '.join(known_bases)}")
    if not (eps > 0 and lr > 0 and max_iters >= 1):
        raise ValueError("FIM needs eps > 0, lr > 0 and max_iters >= 1")


def _run_key(spec) -> str:
    config = json.dumps(spec.config(), sort_keys=True, default=str)
    return fingerprint(config, spec.n_samples, spec.train_fingerprint, spec.init_fingerprint)


# ---------------------------------------------------------------------------------------------
# Workers

_worker = threading.local()  # the one compiled trainer of this worker process/thread


def _run_chunk(spec, run_key: str, indices: Sequence[int]):
    """Run private trainings for `indices`, compiling the model only on a worker's first chunk.

    Returns their wall and CPU seconds too: on a shared machine a worker's wall time also counts the
    time the scheduler gave the core to other work, its process CPU time does not."""
    if getattr(_worker, "run_key", None) != run_key:
        _worker.run = spec.build()
        _worker.run_key = run_key
    start, cpu_start = time.perf_counter(), time.process_time()
    runs = [_worker.run(int(i)) for i in indices]
    return list(indices), runs, time.perf_counter() - start, time.process_time() - cpu_start


# ---------------------------------------------------------------------------------------------
# Mining


@dataclass
class FIMResult:
    """Per-sample outcome of FIM over `indices` (all N samples, or a pilot subset)."""

    indices: np.ndarray
    iterations: np.ndarray
    final_loss: np.ndarray
    converged: np.ndarray
    scores: dict  # {base: {kind: array}}
    compute_seconds: float  # wall seconds of private training, summed over the workers
    cpu_seconds: float = float("nan")  # the workers' process CPU seconds (`run_samples` only)

    def p(self, base: str, kind: str = "norm") -> np.ndarray:
        s = self.scores[base][kind]
        return s / s.sum()


def _collect(indices: np.ndarray, runs: dict[int, PrivateRun], compute_seconds: float,
             cpu_seconds: float = float("nan")) -> FIMResult:
    ordered = [runs[int(i)] for i in indices]
    keys = sorted(ordered[0].scores, key=lambda k: (k[0], SCORE_KINDS.index(k[1])))
    scores: dict = {}
    for base, kind in keys:
        scores.setdefault(base, {})[kind] = np.array([r.scores[(base, kind)] for r in ordered], "float64")
    return FIMResult(
        indices=np.asarray(indices, dtype="int64"),
        iterations=np.array([r.iterations for r in ordered], dtype="int64"),
        final_loss=np.array([r.loss for r in ordered], dtype="float64"),
        converged=np.array([r.converged for r in ordered], dtype=bool),
        scores=scores,
        compute_seconds=compute_seconds,
        cpu_seconds=cpu_seconds,
    )


def _shard_dir(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".parts")


def check_outputs(out_path: str | os.PathLike, flag: str | None = None) -> None:
    """Before any work: a full run can write its artefact at `out_path` and its shards beside it.

    An artefact already there is only read (a finished run is never redone or overwritten), so then
    nothing needs to be writable. Raises `io.OutputError` (a `UserError`) naming `flag`.
    """
    out_path = Path(out_path)
    if out_path.is_file():
        return
    check_writable(out_path, flag)
    parts = _shard_dir(out_path)
    if parts.exists() or parts.is_symlink():
        check_writable_dir(parts, f"the shard folder of {flag}" if flag else None)
    else:
        check_writable(parts, f"the shard folder of {flag}" if flag else None)


def _load_finished_shards(parts: Path, run_key: str, n_shards: int, n_samples: int, log) -> tuple[dict, float]:
    """Results of shards a previous (possibly killed) run finished; refuses another run's shards."""
    runs: dict[int, PrivateRun] = {}
    seconds = 0.0
    manifest = parts / "run_key"
    if not manifest.exists():
        return runs, seconds
    if manifest.read_text().strip() != run_key:
        raise FIMError(
            f"{parts} holds shards of a FIM run with a different configuration, training set or W(0); "
            "delete that directory or write to another output path"
        )
    for shard_file in sorted(parts.glob("shard-*.pkl")):
        try:
            (shard,) = load_pickles(shard_file.read_bytes(), allowed_globals=SHARD_GLOBALS)
            problem = _shard_problem(shard, run_key, n_shards, n_samples)
        except Exception as err:  # damaged from outside: redo it rather than trust it
            problem = repr(err)
        if problem is not None:
            log(f"warning: ignoring unreadable shard {shard_file} ({problem}); it will be recomputed")
            continue
        runs.update(zip(map(int, shard["indices"]), shard["runs"]))
        seconds += float(shard["seconds"])
    return runs, seconds


#: What a shard may refer to: the per-sample results (also by their name before the package split)
#: and numpy scalars (sample indices).
SHARD_GLOBALS = NUMPY_GLOBALS | {("dltutorials_is.fim.driver", "PrivateRun"), ("dltutorials_is.fim", "PrivateRun")}


def _shard_problem(shard, run_key: str, n_shards: int, n_samples: int) -> str | None:
    if not isinstance(shard, dict) or shard.get("run_key") != run_key:
        return "not a shard of this run"
    indices, shard_runs = shard.get("indices"), shard.get("runs")
    if not (_is_int(shard.get("shard")) and 0 <= shard["shard"] < n_shards):
        return f"shard number {shard.get('shard')!r} is not in 0..{n_shards - 1}"
    if not (isinstance(indices, list) and isinstance(shard_runs, list) and len(indices) == len(shard_runs)):
        return "its indices and runs are not two lists of equal length"
    if not all(_is_int(i) and 0 <= i < n_samples for i in indices):
        return f"a sample index is not in 0..{n_samples - 1}"
    if not all(isinstance(r, PrivateRun) and isinstance(r.scores, dict) for r in shard_runs):
        return "a run is not a PrivateRun"
    if not _is_real(shard.get("seconds")):
        return "no compute time"
    return None


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def mine(
    spec,
    out_path: str | os.PathLike | None,
    n_jobs: int = -1,
    backend: str | None = None,
    shard_size: int = 64,
    pilot: int | None = None,
    pilot_seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> FIMResult:
    """Run FIM over all samples (or `pilot` random ones) and, for a full run, save the artefact.

    A full run writes each finished shard of `shard_size` consecutive samples to
    `<out_path>.parts/` before moving on; rerunning the same command after a crash or kill skips
    those shards and produces the same artefact; rerunning it after it finished returns the saved
    result. `backend` is any joblib backend ("loky", "threading", "dask" with a
    dask.distributed Client already created, …). A pilot saves nothing.
    """
    if spec.n_samples <= 0:
        raise FIMError("the training set is empty")
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise FIMError(f"n_jobs {n_jobs!r} runs nothing: give a number of workers (1, 2, …) or -1 for all cores "
                       "(-2 all but one, …)")
    if pilot is not None:
        return _mine_pilot(spec, pilot, pilot_seed, n_jobs, backend, shard_size, progress, log)
    if out_path is None:
        raise FIMError("a full FIM run needs an output path")
    return _mine_all(spec, Path(out_path), n_jobs, backend, shard_size, progress, log)


def _mine_pilot(spec, pilot, pilot_seed, n_jobs, backend, shard_size, progress, log) -> FIMResult:
    n = spec.n_samples
    if not 0 < pilot <= n:
        raise FIMError(f"pilot size must be in 1..{n}, got {pilot} — the training set has {n} samples: ask for "
                       "fewer, or leave the pilot out to mine them all")
    wall_start = time.perf_counter()
    indices = np.sort(np.random.RandomState(pilot_seed).choice(n, pilot, replace=False))
    with tqdm(total=pilot, unit="sample", desc="FIM pilot", disable=not progress, smoothing=0.1) as bar:
        result = run_samples(spec, indices, n_jobs, backend, shard_size, bar.update)
    wall = time.perf_counter() - wall_start
    log(report(result, spec.config(), title=f"FIM pilot on {pilot} random samples"))
    workers = effective_n_jobs(n_jobs)
    per_sample = result.compute_seconds / pilot
    log(f"pilot: {per_sample:.3g} s of private training per sample ({wall:.1f} s wall, compilation included); "
        f"all {n} samples ≈ {per_sample * n / workers / 60:.1f} min with {workers} workers")
    return result


def run_samples(spec, indices, n_jobs: int = -1, backend: str | None = None, chunk_size: int = 64,
                on_chunk: Callable[[int], None] | None = None) -> FIMResult:
    """Private runs of `indices` on `n_jobs` workers, saving nothing (a pilot, a benchmark).

    Chunks hold at most `chunk_size` samples and are small enough to keep every worker busy to the
    end; `on_chunk(k)` is told of each finished chunk of k samples. A worker compiles its trainer on
    its first chunk only, so a second call on the same pool pays no compilation.
    """
    indices = np.asarray(indices, dtype="int64")
    run_key = _run_key(spec)
    size = max(1, min(chunk_size, len(indices) // (4 * effective_n_jobs(n_jobs))))
    runs, seconds, cpu = {}, 0.0, 0.0
    for idx, chunk_runs, secs, cpu_secs in pool(n_jobs, backend, "generator_unordered")(
        delayed(_run_chunk)(spec, run_key, indices[k : k + size]) for k in range(0, len(indices), size)
    ):
        runs.update(zip(idx, chunk_runs))
        seconds, cpu = seconds + secs, cpu + cpu_secs
        if on_chunk is not None:
            on_chunk(len(idx))
    return _collect(indices, runs, seconds, cpu)


def _mine_all(spec, out_path: Path, n_jobs, backend, shard_size, progress, log) -> FIMResult:
    n, run_key = spec.n_samples, _run_key(spec)
    wall_start = time.perf_counter()
    check_outputs(out_path)
    parts = _shard_dir(out_path)
    if out_path.exists():
        return _finished_run(out_path, spec, run_key, parts, log)
    n_shards = -(-n // shard_size)
    shard_indices = [np.arange(k * shard_size, min(n, (k + 1) * shard_size)) for k in range(n_shards)]
    runs, seconds = _load_finished_shards(parts, run_key, n_shards, n, log)
    todo = [k for k in range(n_shards) if any(int(i) not in runs for i in shard_indices[k])]
    if parts.exists():
        remove_stale_temporaries_in(parts)  # shards a killed run was writing
    if len(todo) < n_shards:
        log(f"resuming FIM: {n_shards - len(todo)} of {n_shards} shards already done in {parts}")

    with tqdm(total=n, initial=len(runs), unit="sample", desc="FIM", disable=not progress, smoothing=0.1) as bar:
        for idx, chunk_runs, secs, _ in pool(n_jobs, backend, "generator_unordered")(
            delayed(_run_chunk)(spec, run_key, shard_indices[k]) for k in todo
        ):
            if not (parts / "run_key").exists():  # made when the first shard is done, not before
                parts.mkdir(exist_ok=True)
                atomic_write_text(parts / "run_key", run_key)
            shard = idx[0] // shard_size
            atomic_pickle(
                {"run_key": run_key, "shard": shard, "indices": idx, "runs": chunk_runs, "seconds": secs},
                parts / f"shard-{shard:06d}.pkl",
            )
            runs.update(zip(idx, chunk_runs))
            seconds += secs
            bar.update(len(idx))

    result = _collect(np.arange(n), runs, seconds)
    atomic_pickle(_canonical(_artefact(spec, result, time.perf_counter() - wall_start)), out_path)
    _remove_shards(parts)
    log(report(result, spec.config(), title=f"FIM over all {n} samples, saved to {out_path}"))
    return result


def _remove_shards(parts: Path) -> None:
    if not parts.exists():
        return
    for leftover in (*parts.glob("shard-*.pkl"), parts / "run_key"):
        leftover.unlink(missing_ok=True)
    remove_stale_temporaries_in(parts)  # of shard writes a kill interrupted
    with contextlib.suppress(OSError):  # not empty: something else is in there; leave it (and the folder)
        parts.rmdir()


def _finished_run(out_path: Path, spec, run_key: str, parts: Path, log) -> FIMResult:
    """The result saved by an earlier run of the same configuration (never overwritten)."""
    art = read_artefact(out_path)
    if art.get("run_key") != run_key:
        differences = config_differences(art["config"], spec.config(), fim_settings_too=True)
        which = ("another configuration (" + _describe_differences(differences) + ")" if differences
                 else "another configuration, training set or W(0)")
        raise FIMError(f"{out_path} already holds importance mined with {which}; delete it or write to another "
                       "output path")
    _remove_shards(parts)  # left by a run killed while cleaning up
    result = FIMResult(np.arange(art["n"]), art["iterations"], art["final_loss"], art["converged"],
                       art["scores"], art["timing"]["compute_seconds"])
    log(report(result, art["config"], title=f"FIM already done: {out_path}"))
    return result


def _artefact(spec, result: FIMResult, wall_seconds: float) -> dict:
    config = spec.config()
    for key in ("eps", "norm", "bases", "protocol"):
        if key not in config:
            raise FIMError(f"the trainer spec's config() lacks {key!r}")
    return {
        "format": ARTEFACT_FORMAT,
        "version": ARTEFACT_VERSION,
        "n": spec.n_samples,
        "default_base": config["bases"][0],
        "scores": result.scores,
        "p": {b: {k: s / s.sum() for k, s in kinds.items()} for b, kinds in result.scores.items()},
        "iterations": result.iterations,
        "final_loss": result.final_loss,
        "converged": result.converged,
        "eps": config["eps"],
        "norm": config["norm"],
        "protocol": config["protocol"],
        "train_fingerprint": spec.train_fingerprint,
        "init_fingerprint": spec.init_fingerprint,
        "config": config,
        "run_key": _run_key(spec),
        # The only entries that differ between an interrupted-and-resumed run and a straight one.
        "timing": {"wall_seconds_last_session": wall_seconds, "compute_seconds": result.compute_seconds},
    }


def _canonical(obj):
    """Rebuild containers with interned strings: pickle's bytes depend on which equal strings are
    the same object, which differs between worker processes, threads and resumed runs."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def report(result: FIMResult, config: dict, title: str) -> str:
    """The FIM summary: T_i distribution, convergence, and the P summary of every score."""
    t = result.iterations
    lines = [
        title,
        f"private runs: T_i min {t.min()}, median {np.median(t):g}, mean {t.mean():.2f}, max {t.max()}; "
        f"{result.converged.sum()}/{len(t)} reached loss < ε = {config.get('eps')}",
    ]
    default = config.get("bases", [next(iter(result.scores))])[0]
    for base in [default] + [b for b in result.scores if b != default]:
        for kind, s in result.scores[base].items():
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                lines.append(f"  {base:>6} {kind:<12} unusable: {np.sum(~(np.isfinite(s) & (s > 0)))} scores are NaN/inf/≤0")
                continue
            marker = "*" if (base, kind) == (default, "norm") else " "
            lines.append(f"{marker} {base:>6} {kind:<12} {format_p_summary(s / s.sum())}")
    lines.append("(* = the paper's P: norm of the default base matrix)")
    kinds = usable_ps(result.scores[default])
    if "norm" in kinds:
        warning = uniform_p_warning(kinds.pop("norm"), kinds)
        if warning:
            lines.append(warning.replace("this P", "the paper's P", 1))
    return "\n".join(lines)


def usable_ps(scores_of_base: dict) -> dict:
    """{score kind: P} for the kinds of one base matrix whose scores can make a P (all finite and > 0)."""
    return {kind: s / s.sum() for kind, s in scores_of_base.items() if np.all(np.isfinite(s)) and np.all(s > 0)}


def other_score_kinds(path, base: str | None, score: str) -> dict:
    """{score kind: P} of the artefact at `path` for the base matrix of the P in use, without `score`
    itself: what `uniform_p_warning` names when the P in use is uniform."""
    art = read_artefact(path)
    kinds = usable_ps(art["scores"].get(base or art["default_base"], {}))
    kinds.pop(score, None)
    return kinds


# ---------------------------------------------------------------------------------------------
# Loading


def read_artefact(path: str | os.PathLike) -> dict:
    """The artefact `mine` saved at `path`, after checking it is one and that every entry the code uses
    is there with the right type and length; FIMError, with the reason, for anything else."""
    path = Path(path)
    if not path.exists():
        raise FIMError(f"no importance file at {path}; create it with the FIM script (e.g. lstm/fim.py)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FIMError(f"cannot read {path}: {err}") from err
    try:
        (art,) = load_pickles(data, allowed_globals=NUMPY_GLOBALS)
    except Exception as err:  # whatever a truncated or garbled file makes the unpickler raise
        raise FIMError(f"{path} is not a readable FIM artefact (truncated or corrupt: {err!r}); "
                       "delete it and run FIM again") from err
    if not isinstance(art, dict) or art.get("format") != ARTEFACT_FORMAT:
        raise FIMError(f"{path} is a pickle but not a FIM importance artefact")
    if art.get("version") != ARTEFACT_VERSION:
        raise FIMError(f"{path} has FIM artefact version {art.get('version')}, this code reads {ARTEFACT_VERSION}")
    problem = artefact_problem(art)
    if problem is not None:
        raise FIMError(f"{path} is not a usable FIM artefact: {problem}. It was edited or written by other "
                       "code; delete it and run FIM again")
    return art


def artefact_problem(art: dict) -> str | None:
    """What is missing or malformed in an artefact dict (as `_artefact` builds it), or None."""
    n = art.get("n")
    if not (_is_int(n) and n > 0):
        return f"'n' is {n!r}, not a positive number of samples"
    for key in ("default_base", "norm", "train_fingerprint", "init_fingerprint", "run_key"):
        if not isinstance(art.get(key), str):
            return f"{key!r} is {_missing_or(art, key)}, not a string"
    if not _is_real(art.get("eps")):
        return f"'eps' is {_missing_or(art, 'eps')}, not a number"
    arrays = {"iterations": "iu", "final_loss": "fiu", "converged": "b"}
    for key, kinds in arrays.items():
        problem = _array_problem(art.get(key), n, kinds)
        if problem:
            return f"{key!r} is {_missing_or(art, key) if key not in art else problem}"
    for key in ("scores", "p"):
        table = art.get(key)
        if not (isinstance(table, dict) and table):
            return f"{key!r} is {_missing_or(art, key)}, not a dict of base matrices"
        for base, kinds in table.items():
            if not (isinstance(base, str) and isinstance(kinds, dict) and kinds):
                return f"{key}[{base!r}] is not a dict of score kinds"
            for kind, values in kinds.items():
                problem = _array_problem(values, n, "fiu")
                if not isinstance(kind, str) or problem:
                    return f"{key}[{base!r}][{kind!r}] is {problem or 'not named by a string'}"
    if art["default_base"] not in art["scores"]:
        return f"the default base {art['default_base']!r} has no scores"
    config = art.get("config")
    if not isinstance(config, dict):
        return f"'config' is {_missing_or(art, 'config')}, not a dict"
    for key in ("eps", "norm", "bases", "protocol"):
        if key not in config:
            return f"its config lacks {key!r}"
    bases = config["bases"]
    if not (isinstance(bases, (list, tuple)) and bases and all(isinstance(b, str) for b in bases)):
        return "config['bases'] is not a list of base matrix names"
    timing = art.get("timing")
    if not (isinstance(timing, dict) and _is_real(timing.get("compute_seconds"))):
        return "'timing' lacks the compute time"
    return None


def _missing_or(art: dict, key: str) -> str:
    return "missing" if key not in art else f"a {type(art[key]).__name__}"


def _array_problem(values, n: int, kinds: str) -> str | None:
    if not isinstance(values, np.ndarray):
        return f"a {type(values).__name__}, not an array"
    if values.ndim != 1 or len(values) != n:
        return f"an array of shape {values.shape}, not one value per sample ({n})"
    if values.dtype.kind not in kinds:
        return f"an array of {values.dtype}"
    return None


def _normal(value):
    """A config value as JSON would give it back: tuples are lists, numpy scalars Python numbers."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def config_differences(stored: dict, expected: dict, fim_settings_too: bool = False) -> list[tuple]:
    """`(option, stored value, expected value)` for every option of `expected` whose value in the
    artefact's config `stored` differs. FIM's own settings count only with `fim_settings_too`; an
    option the artefact does not record (mined before it was recorded) is left to the fingerprints."""
    return [(key, stored[key], value) for key, value in expected.items()
            if (fim_settings_too or key not in FIM_SETTINGS) and key in stored
            and _normal(stored[key]) != _normal(value)]


def _describe_differences(differences: list[tuple]) -> str:
    return "; ".join(f"{key} = {there!r} there, {here!r} here" for key, there, here in differences)


def describe_fim_settings(config: dict) -> str:
    """FIM's own settings an artefact was mined with, for the line that says P was loaded."""
    bases = config.get("bases") or ["?"]
    return (f"mined with ε = {config.get('eps')}, step size {config.get('lr', '?')}, at most "
            f"{config.get('max_iters', '?')} steps, {config.get('norm')} norm, default base {bases[0]}")


def check_config(art: dict, expected: dict | None, path) -> None:
    """FIMError naming every option of the run (`expected`, from the plug-in) the artefact was mined
    with another value of, and how to get a P that fits."""
    differences = config_differences(art["config"], expected or {})
    if not differences:
        return
    mined_with = ", ".join(f"{key} {there!r}" for key, there, _ in differences)
    raise FIMError(
        f"{path} was mined for another run: {_describe_differences(differences)}. Its P comes from another "
        f"private model, so it is not this run's. Either mine P for this run (delete {path} or name another "
        "importance file, then rerun: FIM mines it with this run's options; or run the FIM script with this "
        f"run's flags), or run with the options it was mined with ({mined_with})."
    )


def load_or_mine(path: Path, make_spec, n: int, train_fingerprint: str, init_fingerprint: str,
                 score: str | None, base: str, n_jobs: int = -1, backend: str | None = None, log=print,
                 unit: str = "samples", expected: dict | None = None) -> np.ndarray:
    """P from `path` after checking it belongs to this training set, W(0) and run options (`expected`,
    the plug-in's model options; see `check_config`); if it is missing (or an interrupted mining left
    shards), mine it first with the spec `make_spec()` builds and save it there."""
    path = Path(path)
    if not path.exists() or _shard_dir(path).exists():
        if path.exists():  # an interrupted clean-up: refuse another run's artefact before anything else
            check_config(read_artefact(path), expected, path)
        log(f"Mining importance (FIM) for {n} {unit} into {path}")
        mine(make_spec(), path, n_jobs=n_jobs, backend=backend, log=log)
        art = read_artefact(path)
    else:
        art = read_artefact(path)
        check_config(art, expected, path)
        log(f"Loading importance from {path} ({describe_fim_settings(art['config'])})")
    return importance_from(art, path, train_fingerprint, n, score=score or "norm", base=base,
                           init_fingerprint=init_fingerprint, expected=expected)


def load_importance(
    path: str | os.PathLike,
    train_fingerprint: str,
    n: int,
    score: str = "norm",
    base: str | None = None,
    init_fingerprint: str | None = None,
    expected: dict | None = None,
) -> np.ndarray:
    """The sampling distribution p saved by `mine`, after checking it belongs to this training set (and,
    when given, to this W(0) and these run options: see `check_config`)."""
    return importance_from(read_artefact(path), path, train_fingerprint, n, score, base, init_fingerprint, expected)


def importance_from(art: dict, path, train_fingerprint: str, n: int, score: str = "norm", base: str | None = None,
                    init_fingerprint: str | None = None, expected: dict | None = None) -> np.ndarray:
    """`load_importance` on an artefact already read by `read_artefact`."""
    check_config(art, expected, path)
    if art["n"] != n:
        raise FIMError(f"{path} holds P for {art['n']} samples but the training set has {n}; "
                       "it was mined on another protocol/maxlen: run FIM again for this training set")
    if art["train_fingerprint"] != train_fingerprint:
        raise FIMError(f"{path} was mined on a different training set (fingerprint "
                       f"{art['train_fingerprint'][:12]}… ≠ {train_fingerprint[:12]}…): run FIM again for this one")
    if init_fingerprint is not None and art["init_fingerprint"] != init_fingerprint:
        raise FIMError(f"{path} was mined from a different W(0) (another seed, model size or floatX): "
                       "run FIM again with the training run's settings")
    base = base or art["default_base"]
    if base not in art["scores"]:
        raise FIMError(f"{path} has no scores for base {base!r}; it has {sorted(art['scores'])}")
    if score not in art["scores"][base]:
        raise FIMError(f"{path} has no {score!r} scores; it has {sorted(art['scores'][base])}")
    s = art["scores"][base][score]
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        raise FIMError(f"{path}: {bad.sum()} samples have a {score} score of {base} that is NaN, inf or 0 "
                       f"(e.g. sample {int(np.flatnonzero(bad)[0])}), so P cannot give them a probability; "
                       "use another score kind, or re-mine with a smaller step size")
    return s / s.sum()
