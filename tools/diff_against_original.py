"""Run an original tutorial and this port on the same data and settings; compare what they print.

Two modes: `lstm` (the default, so the first word may be left out) and `rnnrbm`.

The original is a copy of lisa-lab/DeepLearningTutorials' `code/` files (this repository does not
include them), taken from `--original DIR` (a folder holding them) or `--from-git GIT_DIR` (a
clone's HEAD); without either, from the folder `$DLTUTORIALS_ORIGINAL`; without that, from
`../shared/originals` beside the repository's root folder when it holds the mode's files
(`lstm.py` and `imdb.py`, or `rnnrbm.py`), which is where the tests and CI find them. It runs
unmodified under Aesara through the `theano` shim in `tools/original_shim/`. Both runs use the
same data, seed, floatX and BLAS, and go side by side (two processes), so the times printed
include any competition for the CPU. Prints each run's time, the largest relative difference and a
verdict; exits 0 when the outputs agree, 1 when they do not, 2 when a run failed.

LSTM (`code/lstm.py`, `code/imdb.py`): one intervention in the original, its
`get_minibatches_idx` returns a list instead of Python 3's one-shot `zip` (the same fix the port
makes; without it every validation after the first measures nothing). Both runs use the same
`imdb.pkl`, seed 123, float64 and the uniform sampler. Every progress line (`Epoch E Update U Cost
C`, `Train a Valid b Test c`, `Seen N samples`, the example counts, saving, early stopping, the
epoch count) must match: integers exactly, other numbers within `--rtol`.

RNN-RBM (`code/rnnrbm.py`): the original's own entry point `test_rnnrbm(batch_size, num_epochs)`
(which trains on `../data/Nottingham/train/*.mid` next to the script; a symlink points there at
`--data-dir`) against `rnnrbm/train.py --sampler uniform --seed 0xbeef`. What the original needs to
run under Python 3 + Aesara, and for a repeatable comparison, nothing else:
  * `midi.utils` (`midiread`, `midiwrite`) is the shim's `midi` package, backed by
    `dltutorials_is.datasets.midi`, which reproduces the tutorial's `midi/utils.py` piano-rolls
    (that package is not in the tutorial's repository; its `data/download.sh` fetched `midi.zip`);
    the original's `T.xlogx.xlogy0` and `theano.config.warn.subtensor_merge_bug = False` need no
    help: Aesara has `aesara.tensor.xlogx` and accepts the (no-op) flag through its `config.warn`;
  * the module's `glob` is replaced by one returning `sorted(glob.glob(pattern))[:songs]`: the
    tutorial took the file system's order (the port sorts, see DEVIATIONS.md), and `--songs`
    trains on the first N files;
  * `aesara.config.floatX` is set before the import (float64 unless `--floatX`), and the same BLAS
    as the port's is configured;
  * `test_rnnrbm` is called instead of running the file as a script, so the `__main__` block's
    generation and `pylab.show()` do not run (matplotlib is put on the Agg backend).
The original prints, per epoch, `Epoch i/n` and the mean monitor (pseudo-log-likelihood) over the
epoch's updates; the port logs that number as `train_monitor_during_epoch`. Each epoch's pair must
agree within `--rtol`.

    python tools/diff_against_original.py            # the original from ../shared/originals
    python tools/diff_against_original.py --from-git ../DeepLearningTutorials/.git
    python tools/diff_against_original.py --original ~/DeepLearningTutorials/code --set dim_proj=16
    python tools/diff_against_original.py rnnrbm --from-git ../DeepLearningTutorials/.git --songs 100 --epochs 2
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIM = REPO_ROOT / "tools" / "original_shim"
# Where the original tutorials are found when no other place is given: a `shared/` folder beside the
# repository's root folder (the tests and CI run against it).
DEFAULT_ORIGINALS = REPO_ROOT.parent / "shared" / "originals"
ORIGINAL_FILES = ("lstm.py", "imdb.py")
GIT_PATHS = {"lstm.py": "code/lstm.py", "imdb.py": "code/imdb.py"}
# Short, but long enough to cross validations, a save and an epoch boundary.
DEFAULT_SETTINGS = {"max_epochs": 2, "dispFreq": 5, "validFreq": 50, "saveFreq": 100, "test_size": 500}

# Runs inside the original's process: same BLAS as the port, the list fix, then train_lstm(**settings).
ORIGINAL_DRIVER = """
import json, sys
from dltutorials_is import backend
backend.configure()
import lstm
one_shot = lstm.get_minibatches_idx
lstm.get_minibatches_idx = lambda *args, **kwargs: list(one_shot(*args, **kwargs))
settings = json.loads(sys.argv[1])
if "optimizer" in settings:  # the original takes the function itself
    settings["optimizer"] = getattr(lstm, settings["optimizer"])
lstm.train_lstm(**settings)
"""

NUMBER = r"(\S+)"
LINE_PATTERNS = {
    "update": re.compile(rf"^Epoch\s+(\d+)\s+Update\s+(\d+)\s+Cost\s+{NUMBER}$"),
    "errors": re.compile(rf"^Train\s+{NUMBER}\s+Valid\s+{NUMBER}\s+Test\s+{NUMBER}$"),
    "seen": re.compile(r"^Seen (\d+) samples$"),
    "examples": re.compile(r"^(\d+) (train|valid|test) examples$"),
    "saving": re.compile(r"^Saving\.\.\.$"),
    "done": re.compile(r"^Done$"),
    "early stop": re.compile(r"^Early Stop!$"),
    "bad cost": re.compile(rf"^bad cost detected:\s+{NUMBER}$"),
    "epochs": re.compile(r"^The code run for (\d+) epochs"),
}


class OriginalNotFound(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# Getting the original
# ---------------------------------------------------------------------------------------------

def copy_original(source: Path, dest: Path, names: tuple[str, ...] = ORIGINAL_FILES) -> None:
    """Copy `names` (default `lstm.py` and `imdb.py`) from a folder (the tutorial's `code/` or any folder
    holding them)."""
    missing = [name for name in names if not (source / name).is_file()]
    if missing:
        raise OriginalNotFound(f"{source} has no {' or '.join(missing)} (give the tutorial's code/ folder)")
    for name in names:
        shutil.copyfile(source / name, dest / name)


def extract_original(git_dir: Path, dest: Path, revision: str = "HEAD", paths: dict[str, str] = GIT_PATHS) -> None:
    """Write the files `paths` names (default `code/lstm.py` and `code/imdb.py`) of `revision` in the
    repository `git_dir` into `dest`."""
    for name, path in paths.items():
        shown = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{revision}:{path}"], capture_output=True)
        if shown.returncode != 0:
            raise OriginalNotFound(f"cannot read {path} from {git_dir}: {shown.stderr.decode().strip()}")
        (dest / name).write_bytes(shown.stdout)


# ---------------------------------------------------------------------------------------------
# Running both
# ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    name: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _python_path(*entries: Path) -> str:
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(e) for e in entries] + ([existing] if existing else []))


def _run(name: str, command: list[str], cwd: Path, env: dict, timeout: float) -> Run:
    print(f"running {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return Run(name, -1, stdout, f"timed out after {timeout:.0f} s", time.perf_counter() - start)
    return Run(name, done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def six_is_missing() -> bool:
    return subprocess.run([sys.executable, "-c", "import six"], capture_output=True).returncode != 0


def shim_path() -> list[Path]:
    return [SHIM] + ([SHIM / "fallback"] if six_is_missing() else [])


def run_original(original_dir: Path, imdb_pkl: Path, settings: dict, work: Path, timeout: float) -> Run:
    work.mkdir()
    copy_original(original_dir, work)
    (work / "imdb.pkl").symlink_to(imdb_pkl.resolve())  # the original reads ./imdb.pkl first
    env = dict(os.environ, PYTHONPATH=_python_path(*shim_path(), work, REPO_ROOT))
    return _run("original", [sys.executable, "-c", ORIGINAL_DRIVER, json.dumps(settings)], work, env, timeout)


def as_flags(settings: dict) -> list[str]:
    """`lstm/train.py` flags for train_lstm keyword arguments (the script accepts the original names)."""
    flags = []
    for name, value in settings.items():
        if value is None:
            continue  # None is every such setting's default
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags += [f"--{name}", str(value)]
    return flags


def run_port(imdb_pkl: Path, settings: dict, work: Path, timeout: float, graph: str = "fast") -> Run:
    work.mkdir()
    command = [sys.executable, str(REPO_ROOT / "lstm" / "train.py"), *as_flags(settings),
               "--data-dir", str(imdb_pkl.parent), "--seed", "123", "--floatX", "float64",
               "--protocol", "tutorial", "--sampler", "uniform", "--graph", graph]
    env = dict(os.environ, PYTHONPATH=_python_path(REPO_ROOT))
    return _run("port", command, work, env, timeout)


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------

@dataclass
class Line:
    number: int  # 1-based line number in the run's stdout
    kind: str
    values: tuple[str, ...]
    text: str


def progress_lines(stdout: str) -> list[Line]:
    """The lines both programs print in the same format, parsed; others (options, timings) are skipped."""
    found = []
    for number, text in enumerate(stdout.splitlines(), 1):
        for kind, pattern in LINE_PATTERNS.items():
            match = pattern.match(text.strip())
            if match:
                found.append(Line(number, kind, match.groups(), text.strip()))
                break
    return found


def relative_difference(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if 0 < scale < math.inf else math.inf


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_integer(text: str) -> bool:
    return re.fullmatch(r"-?\d+", text) is not None


def compare(original: list[Line], port: list[Line], rtol: float) -> tuple[list[str], float]:
    """Mismatch descriptions and the largest relative difference of the non-integer numbers."""
    problems, largest = [], 0.0
    if len(original) != len(port):
        problems.append(f"the original printed {len(original)} progress lines, the port {len(port)}")
    for a, b in zip(original, port):
        where = f"original line {a.number} {a.text!r} vs port line {b.number} {b.text!r}"
        if a.kind != b.kind:
            problems.append(where)
            continue
        for u, v in zip(a.values, b.values):
            x, y = _number(u), _number(v)
            if x is None or y is None or (_is_integer(u) and _is_integer(v)):
                if u != v:
                    problems.append(where)
                continue
            difference = relative_difference(x, y)
            largest = max(largest, difference)
            if difference > rtol:
                problems.append(f"{where} (relative difference {difference:.3g})")
    return problems, largest


def summarise(lines: list[Line]) -> str:
    counts = {}
    for line in lines:
        counts[line.kind] = counts.get(line.kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def parse_setting(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare string such as optimizer=sgd
    return name.strip(), parsed


def train_lstm_parameters() -> set[str]:
    sys.path.insert(0, str(REPO_ROOT))
    from dltutorials_is.tutorials.lstm import train_lstm

    return set(inspect.signature(train_lstm).parameters)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--original", type=Path, help="folder with the original lstm.py and imdb.py "
                        f"(default: $DLTUTORIALS_ORIGINAL, else {DEFAULT_ORIGINALS})")
    source.add_argument("--from-git", type=Path, metavar="GIT_DIR",
                        help="take code/lstm.py and code/imdb.py from HEAD of this DeepLearningTutorials clone")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data", help="folder holding imdb.pkl "
                        "(default: %(default)s)")
    parser.add_argument("--set", type=parse_setting, action="append", default=[], metavar="NAME=VALUE",
                        help="a train_lstm keyword for both runs, e.g. --set dim_proj=16 (repeatable); "
                             f"defaults: {DEFAULT_SETTINGS}, the rest as in the original")
    parser.add_argument("--graph", choices=("fast", "tutorial"), default="fast",
                        help="the port's LSTM graph: fast (its default) or the tutorial's scan graph")
    add_comparison_arguments(parser)
    return parser


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    """How strictly, how long and where both tutorials' comparisons run: the same flags for each."""
    parser.add_argument("--rtol", type=float, default=1e-6, help="largest relative difference allowed "
                        "(default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run (default: %(default)s)")
    parser.add_argument("--keep", type=Path, default=None, help="keep both runs' folders and outputs here")


def locate_original(args, parser, names: tuple[str, ...]) -> tuple[Path | None, Path | None]:
    """`(folder, git_dir)`: where the original comes from. `--from-git`, `--original` or
    `$DLTUTORIALS_ORIGINAL` when given (their files are checked when they are read), else
    DEFAULT_ORIGINALS if it holds all of `names`."""
    if args.from_git:
        return None, args.from_git
    if args.original:
        return args.original, None
    if os.environ.get("DLTUTORIALS_ORIGINAL"):
        return Path(os.environ["DLTUTORIALS_ORIGINAL"]), None
    if all((DEFAULT_ORIGINALS / name).is_file() for name in names):
        return DEFAULT_ORIGINALS, None
    files = " and ".join(names)
    parser.error(f"no original {files} in {DEFAULT_ORIGINALS}, the default place; pass --original DIR (a folder "
                 f"holding {files}, e.g. the tutorial's code/ folder), set $DLTUTORIALS_ORIGINAL to such a "
                 "folder, or pass --from-git GIT_DIR (the .git folder of a DeepLearningTutorials clone)")


def run_side_by_side(work: Path, start_original, start_port):
    """Run both independent programs at once and keep their outputs in `work`; return
    `(original, port)`, or None (after printing why and the ERROR verdict) when either failed."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        original, port = pool.submit(start_original), pool.submit(start_port)
        original, port = original.result(), port.result()
    for run in (original, port):
        (work / f"{run.name}.stdout").write_text(run.stdout)
        (work / f"{run.name}.stderr").write_text(run.stderr)
        print(f"{run.name}: exit code {run.returncode}, {run.seconds:.1f} s", flush=True)
    failed = [run for run in (original, port) if run.returncode != 0]
    for run in failed:
        print(f"--- {run.name} failed; the end of its stderr:\n{run.stderr[-3000:]}", flush=True)
    if failed:
        print("VERDICT: ERROR (a run failed)")
        return None
    return original, port


def print_verdict(problems: list, nothing_compared: str | None) -> int:
    """Print the mismatches and the verdict; return the exit code: 0 same, 1 different, 2 nothing compared."""
    for problem in problems[:20]:
        print(f"  MISMATCH {problem}")
    if nothing_compared:
        print(f"VERDICT: ERROR ({nothing_compared})")
        return 2
    print("VERDICT: SAME" if not problems else f"VERDICT: DIFFERENT ({len(problems)} mismatches)")
    return 0 if not problems else 1


@contextlib.contextmanager
def workspace(keep: Path | None, prefix: str):
    """The folder both runs write to: a fresh temporary one, removed afterwards, unless --keep named one."""
    work = Path(tempfile.mkdtemp(prefix=prefix)) if keep is None else keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"outputs kept in {work}", file=sys.stderr)


def describe_source(folder: Path | None, git_dir: Path | None) -> str:
    return f"HEAD of {git_dir}" if git_dir else str(folder)


def fetch_original(work: Path, folder: Path | None, git_dir: Path | None, paths: dict[str, str]) -> Path:
    """The original's files (`paths`: name -> path in the repository) in work/original-source."""
    source = work / "original-source"
    source.mkdir(exist_ok=True)
    try:
        if git_dir:
            extract_original(git_dir, source, paths=paths)
        else:
            copy_original(folder, source, names=tuple(paths))
    except OriginalNotFound as error:
        sys.exit(f"error: {error}")
    return source


def main_lstm(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    folder, git_dir = locate_original(args, parser, tuple(GIT_PATHS))
    settings = dict(DEFAULT_SETTINGS)
    known = train_lstm_parameters() - {"protocol", "data_dir", "seed", "data_seed", "sampler", "p", "graph"}
    for name, value in args.set:
        if name not in known:
            parser.error(f"--set {name}: not a train_lstm hyperparameter shared with the original "
                         f"({', '.join(sorted(known))})")
        settings[name] = value
    imdb_pkl = args.data_dir / "imdb.pkl"
    if not imdb_pkl.is_file():
        sys.exit(f"error: {imdb_pkl} not found; build it with `python data/prepare_imdb.py`")

    with workspace(args.keep, "diff-lstm-") as work:
        source = fetch_original(work, folder, git_dir, GIT_PATHS)
        print(f"original taken from {describe_source(folder, git_dir)}", flush=True)
        print(f"settings: {settings}; the port's graph: {args.graph}", flush=True)
        runs = run_side_by_side(
            work,
            lambda: run_original(source, imdb_pkl, settings, work / "original", args.timeout),
            lambda: run_port(imdb_pkl, settings, work / "port", args.timeout, args.graph),
        )
        if runs is None:
            return 2
        original, port = runs
        original_lines, port_lines = progress_lines(original.stdout), progress_lines(port.stdout)
        problems, largest = compare(original_lines, port_lines, args.rtol)
        print(f"compared {len(original_lines)} progress lines ({summarise(original_lines)})")
        print(f"largest relative difference: {largest:.3g} (allowed {args.rtol:g})")
        return print_verdict(problems, None if original_lines else "no progress lines to compare")


# ---------------------------------------------------------------------------------------------
# RNN-RBM
# ---------------------------------------------------------------------------------------------

RNNRBM_GIT_PATHS = {"rnnrbm.py": "code/rnnrbm.py"}
RNNRBM_SEED = 0xBEEF  # hard-coded in the original: numpy.random.seed(0xbeef) at import

# Runs inside the original's process (cwd: its code/ folder, with ../data next to it).
RNNRBM_ORIGINAL_DRIVER = """
import glob, json, sys, types
from dltutorials_is import backend
backend.configure()
settings = json.loads(sys.argv[1])
import aesara
aesara.config.floatX = settings["floatX"]
import rnnrbm
songs = settings["songs"] or None
rnnrbm.glob = types.SimpleNamespace(glob=lambda pattern: sorted(glob.glob(pattern))[:songs])
rnnrbm.test_rnnrbm(batch_size=settings["batch_size"], num_epochs=settings["epochs"])
"""

ORIGINAL_EPOCH = re.compile(r"^Epoch (\d+/\d+)$")


@dataclass
class EpochValue:
    label: str  # "i/n"
    text: str  # the monitor as printed (original) or logged (port)


def run_rnnrbm_original(source: Path, data_dir: Path, settings: dict, work: Path, timeout: float) -> Run:
    """The original's `test_rnnrbm`, which reads `../data/Nottingham/train/*.mid` relative to itself."""
    code = work / "code"
    code.mkdir(parents=True)
    copy_original(source, code, names=tuple(RNNRBM_GIT_PATHS))
    (work / "data").symlink_to(data_dir.resolve())
    env = dict(os.environ, PYTHONPATH=_python_path(*shim_path(), code, REPO_ROOT), MPLBACKEND="Agg")
    return _run("original", [sys.executable, "-c", RNNRBM_ORIGINAL_DRIVER, json.dumps(settings)], code, env, timeout)


def run_rnnrbm_port(data_dir: Path, settings: dict, work: Path, timeout: float) -> Run:
    work.mkdir()
    command = [sys.executable, str(REPO_ROOT / "rnnrbm" / "train.py"), "--data-dir", str(data_dir),
               "--batch-size", str(settings["batch_size"]), "--num-epochs", str(settings["epochs"]),
               "--floatX", settings["floatX"], "--graph", settings["graph"], "--seed", str(RNNRBM_SEED),
               "--sampler", "uniform", "--eval-splits", "", "--saveto", str(work / "rnnrbm_model.npz"),
               "--log", str(work / "log.jsonl")]
    if settings["songs"]:
        command += ["--max-songs", str(settings["songs"])]
    env = dict(os.environ, PYTHONPATH=_python_path(REPO_ROOT))
    return _run("port", command, work, env, timeout)


def original_epoch_values(stdout: str) -> list[EpochValue]:
    """Each `Epoch i/n` line of the original with the number printed on the next line."""
    lines = [line.strip() for line in stdout.splitlines()]
    return [EpochValue(match.group(1), lines[i + 1]) for i, line in enumerate(lines[:-1])
            if (match := ORIGINAL_EPOCH.match(line))]


def port_epoch_values(log: Path, epochs: int) -> list[EpochValue]:
    """The port's per-epoch `train_monitor_during_epoch`, at full precision, from its JSON-lines log."""
    if not log.is_file():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [EpochValue(f"{r['epoch']}/{epochs}", repr(r["train_monitor_during_epoch"])) for r in records]


def compare_epochs(original: list[EpochValue], port: list[EpochValue],
                   rtol: float) -> tuple[list[str], float, list[str]]:
    """(mismatch descriptions, largest relative difference, one table row per epoch)."""
    problems, largest, rows = [], 0.0, []
    if len(original) != len(port):
        problems.append(f"the original printed {len(original)} epochs, the port logged {len(port)}")
    for a, b in zip(original, port):
        x, y = _number(a.text), _number(b.text)
        if a.label != b.label or x is None or y is None:
            problems.append(f"original 'Epoch {a.label}' {a.text!r} vs port epoch {b.label} {b.text!r}")
            continue
        difference = relative_difference(x, y)
        largest = max(largest, difference)
        rows.append(f"{a.label:>9}  {a.text:>24}  {b.text:>24}  {difference:.3g}")
        if difference > rtol:
            problems.append(f"epoch {a.label}: original {a.text}, port {b.text} (relative difference {difference:.3g})")
    return problems, largest, rows


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_rnnrbm_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diff_against_original.py rnnrbm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--original", type=Path, help="folder with the original rnnrbm.py "
                        f"(default: $DLTUTORIALS_ORIGINAL, else {DEFAULT_ORIGINALS})")
    source.add_argument("--from-git", type=Path, metavar="GIT_DIR",
                        help="take code/rnnrbm.py from HEAD of this DeepLearningTutorials clone")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data",
                        help="folder holding Nottingham/ (default: %(default)s)")
    parser.add_argument("--songs", type=int, default=100, help="train on the first N training songs in sorted "
                        "order, 0 for all 694 (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=2, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=100,
                        help="frames per training chunk (default: %(default)s, the tutorial's)")
    parser.add_argument("--floatX", choices=("float64", "float32"), default="float64", help="(default: %(default)s)")
    parser.add_argument("--graph", choices=("fast", "tutorial"), default="fast",
                        help="the port's training graph, rnnrbm/train.py --graph (default: %(default)s)")
    add_comparison_arguments(parser)
    return parser


def check_nottingham(data_dir: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from dltutorials_is.datasets.download import DataError
    from dltutorials_is.datasets.nottingham import split_files

    try:
        split_files(data_dir, "train")
    except DataError as error:
        sys.exit(f"error: {error}")


def main_rnnrbm(argv=None) -> int:
    parser = build_rnnrbm_parser()
    args = parser.parse_args(argv)
    folder, git_dir = locate_original(args, parser, tuple(RNNRBM_GIT_PATHS))
    if args.songs < 0:
        parser.error(f"--songs must be 0 (all) or positive, not {args.songs}")
    check_nottingham(args.data_dir)
    settings = {"songs": args.songs, "epochs": args.epochs, "batch_size": args.batch_size, "floatX": args.floatX,
                "graph": args.graph}

    with workspace(args.keep, "diff-rnnrbm-") as work:
        source = fetch_original(work, folder, git_dir, RNNRBM_GIT_PATHS)
        print(f"original taken from {describe_source(folder, git_dir)}", flush=True)
        shown = dict(settings, songs=settings["songs"] or "all")
        print(f"settings: {shown}, seed {RNNRBM_SEED:#x}", flush=True)
        runs = run_side_by_side(
            work,
            lambda: run_rnnrbm_original(source, args.data_dir, settings, work / "original", args.timeout),
            lambda: run_rnnrbm_port(args.data_dir, settings, work / "port", args.timeout),
        )
        if runs is None:
            return 2
        original, port = runs
        original_values = original_epoch_values(original.stdout)
        port_values = port_epoch_values(work / "port" / "log.jsonl", args.epochs)
        problems, largest, rows = compare_epochs(original_values, port_values, args.rtol)
        print(f"{'epoch':>9}  {'original monitor':>24}  {'port monitor':>24}  relative difference")
        print("\n".join(rows))
        print(f"compared {len(rows)} epochs; largest relative difference: {largest:.3g} (allowed {args.rtol:g})")
        return print_verdict(problems, None if original_values else "the original printed no epoch")


def main(argv=None) -> int:
    """`[lstm] ARGS` diffs the LSTM tutorial (the original command line), `rnnrbm ARGS` the RNN-RBM."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["rnnrbm"]:
        return main_rnnrbm(argv[1:])
    return main_lstm(argv[1:] if argv[:1] == ["lstm"] else argv)


if __name__ == "__main__":
    sys.exit(main())
