"""The port against the original tutorials: `tools/diff_against_original.py` runs the original
`lstm.py` / `rnnrbm.py` and the port side by side, on the same data and settings, and compares what
they print.

The originals (unchanged, BSD) are in `../shared/originals` beside the repository's root folder, on a
developer's machine and in CI alike. These tests never skip: a missing originals folder, original
file or data set is a failure (`make test` prepares the data before running them). They are kept
small (tiny LSTM, three songs) because the first compilation of each original graph is slow.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from diff_tool import TOOL, tool

REPO = Path(__file__).resolve().parents[1]
ORIGINALS = REPO.parent / "shared" / "originals"
DATA = REPO / "data"
LSTM_FILES = ("lstm.py", "imdb.py")
RNNRBM_FILES = ("rnnrbm.py",)
TIMEOUT = 900  # seconds for one invocation of the tool (two programs side by side)




# ---------------------------------------------------------------------------------------------
# What the runs need: the originals and the data (missing ones fail, never skip)
# ---------------------------------------------------------------------------------------------

def _originals_holding(names: tuple[str, ...]) -> Path:
    if not ORIGINALS.is_dir():
        pytest.fail(f"the original tutorials' folder {ORIGINALS} is missing: these tests need the project's "
                    "shared/ folder (with originals/lstm.py, imdb.py and rnnrbm.py) beside the repository's "
                    "root folder", pytrace=False)
    missing = [name for name in names if not (ORIGINALS / name).is_file()]
    if missing:
        pytest.fail(f"{ORIGINALS} has no {' or '.join(missing)} (the original tutorial's file, unchanged)",
                    pytrace=False)
    return ORIGINALS


@pytest.fixture(scope="module")
def lstm_original() -> Path:
    """The folder holding the original lstm.py and imdb.py."""
    return _originals_holding(LSTM_FILES)


@pytest.fixture(scope="module")
def rnnrbm_original() -> Path:
    """The folder holding the original rnnrbm.py."""
    return _originals_holding(RNNRBM_FILES)


@pytest.fixture(scope="module")
def imdb_data() -> Path:
    if not (DATA / "imdb.pkl").is_file():
        pytest.fail(f"{DATA / 'imdb.pkl'} is missing: run `make data` (or python data/prepare_imdb.py) first",
                    pytrace=False)
    return DATA


@pytest.fixture(scope="module")
def nottingham_data() -> Path:
    if not any((DATA / "Nottingham" / "train").glob("*.mid")):
        pytest.fail(f"{DATA / 'Nottingham' / 'train'} holds no songs: run `make data` "
                    "(or python data/prepare_nottingham.py) first", pytrace=False)
    return DATA


def run_tool(*args: str) -> str:
    """The tool's stdout; fails the test, showing both outputs, unless it exits 0."""
    done = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout


def largest_relative_difference(stdout: str) -> float:
    found = re.search(r"largest relative difference: (\S+)", stdout)
    assert found, stdout
    return float(found.group(1))


# ---------------------------------------------------------------------------------------------
# Where the tool looks for the originals
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, names", [("lstm", LSTM_FILES), ("rnnrbm", RNNRBM_FILES)])
def test_the_tool_finds_the_originals_beside_the_repository_by_default(mode, names, monkeypatch):
    expected = _originals_holding(names)
    monkeypatch.delenv("DLTUTORIALS_ORIGINAL", raising=False)
    parser = tool.build_parser() if mode == "lstm" else tool.build_rnnrbm_parser()
    assert tool.locate_original(parser.parse_args([]), parser, names) == (expected, None)
    # An explicit place still wins over the default.
    monkeypatch.setenv("DLTUTORIALS_ORIGINAL", "/elsewhere")
    assert tool.locate_original(parser.parse_args([]), parser, names) == (Path("/elsewhere"), None)
    assert tool.locate_original(parser.parse_args(["--original", "here"]), parser, names) == (Path("here"), None)
    assert tool.locate_original(parser.parse_args(["--from-git", "g"]), parser, names) == (None, Path("g"))


@pytest.mark.parametrize("argv", [[], ["lstm"], ["rnnrbm"]])
def test_without_any_original_the_error_says_what_to_pass(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DLTUTORIALS_ORIGINAL", raising=False)
    monkeypatch.setattr(tool, "DEFAULT_ORIGINALS", tmp_path / "shared" / "originals")
    with pytest.raises(SystemExit) as exited:
        tool.main(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "shared" / "originals") in error
    assert all(way in error for way in ("--original DIR", "$DLTUTORIALS_ORIGINAL", "--from-git GIT_DIR"))


# ---------------------------------------------------------------------------------------------
# LSTM: every progress line the same
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("graph", ["fast", "tutorial"])
def test_lstm_port_prints_the_same_lines_as_the_original(lstm_original, imdb_data, graph):
    settings = ["max_epochs=1", "dim_proj=16", "maxlen=60", "test_size=100", "dispFreq=5", "validFreq=15",
                "saveFreq=30"]
    stdout = run_tool("lstm", "--original", str(lstm_original), "--data-dir", str(imdb_data), "--graph", graph,
                      "--rtol", "1e-9", *[a for s in settings for a in ("--set", s)])
    assert "VERDICT: SAME" in stdout
    compared = re.search(r"^compared (\d+) progress lines \((.*)\)$", stdout, re.MULTILINE)
    assert compared, stdout
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) ([a-z ]+)", compared.group(2))}
    # Costs at every dispFreq update and errors at every validFreq update were compared, not just counts.
    assert counts.get("update", 0) >= 2 and counts.get("errors", 0) >= 2, stdout
    # Same function, same random numbers, float64: the fast graph adds inside matrix products in another order.
    assert largest_relative_difference(stdout) <= 1e-9


# ---------------------------------------------------------------------------------------------
# RNN-RBM: every epoch's monitor the same, at two batch sizes
# ---------------------------------------------------------------------------------------------

RNNRBM_EPOCHS = 2
RNNRBM_BATCH_SIZES = (50, 100)
EPOCH_ROW = re.compile(r"^\s*(\d+)/(\d+)\s+(\S+)\s+(\S+)\s+(\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def rnnrbm_diff(rnnrbm_original, nottingham_data):
    """`diff(batch_size)`: the tool's stdout for three songs, RNNRBM_EPOCHS epochs, float64; each batch
    size runs once per module."""
    outputs = {}

    def diff(batch_size: int) -> str:
        if batch_size not in outputs:
            outputs[batch_size] = run_tool(
                "rnnrbm", "--original", str(rnnrbm_original), "--data-dir", str(nottingham_data),
                "--songs", "3", "--epochs", str(RNNRBM_EPOCHS), "--batch-size", str(batch_size),
                "--floatX", "float64", "--rtol", "1e-12")
        return outputs[batch_size]

    return diff


def epoch_monitors(stdout: str) -> list[tuple[float, float]]:
    """(original, port) monitor per epoch from the tool's table, checking the epochs are 1..n of n."""
    rows = EPOCH_ROW.findall(stdout)
    expected = [(epoch, RNNRBM_EPOCHS) for epoch in range(1, RNNRBM_EPOCHS + 1)]
    assert [(int(i), int(n)) for i, n, *_ in rows] == expected, stdout
    return [(float(original), float(port)) for *_, original, port, _ in rows]


@pytest.mark.parametrize("batch_size", RNNRBM_BATCH_SIZES)
def test_rnnrbm_port_trains_to_the_same_monitor_as_the_original(batch_size, rnnrbm_diff):
    stdout = rnnrbm_diff(batch_size)
    assert "VERDICT: SAME" in stdout
    assert f"compared {RNNRBM_EPOCHS} epochs" in stdout
    for original, port in epoch_monitors(stdout):
        assert -200 < original < 0  # a per-frame log-likelihood over 88 units, not an empty epoch
        # Same graph, same random numbers, same arithmetic: float64 values agree to the last digit.
        assert abs(original - port) <= 1e-12 * abs(original)
    assert largest_relative_difference(stdout) <= 1e-12


def test_rnnrbm_batch_size_reaches_both_programs(rnnrbm_diff):
    """The diffs above compare different trainings, not one training twice (reuses their runs)."""
    first, second = (epoch_monitors(rnnrbm_diff(b)) for b in RNNRBM_BATCH_SIZES)
    assert first[0][0] != second[0][0] and first[0][1] != second[0][1]
