"""Bad inputs and crashes: a clear one-line error before any work is spent, and nothing saved that is
not good. Every command is called in-process through its `main(argv)` (one subprocess checks that no
traceback reaches the terminal); nothing here trains more than a tiny model for a few updates."""
from __future__ import annotations

import argparse
import importlib.util
import pickle
import re
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import dask
import distributed  # noqa: F401  (registers its config defaults before the test sets one of them)
import mido
import numpy as np
import pytest

from dltutorials_is import errors, io
from dltutorials_is.datasets.download import DataError
from dltutorials_is.datasets.midi import MidiError
from dltutorials_is.datasets.nottingham import load_nottingham
from dltutorials_is.errors import OutputError, SettingError, UserError, entry_point
from dltutorials_is.fim.driver import FIMError
from dltutorials_is.graphs import lstm as lstm_graph
from dltutorials_is.graphs.lstm import ModelFileError
from dltutorials_is.loop import TrainingDiverged, fit
from dltutorials_is.models.base import ModelStateError
from dltutorials_is.models.rnnrbm import RnnRbmConfig, RnnRbmModel
from dltutorials_is.replicate import __main__ as replicate
from dltutorials_is.replicate.backends import make_backend
from dltutorials_is.replicate.specs import RunSpec
from dltutorials_is.sampling.samplers import SongOrderSampler
from dltutorials_is.tutorials import lstm as lstm_training
from dltutorials_is.tutorials.rnnrbm import CheckpointError, TrainingState, read_checkpoint, save_checkpoint

import aesara  # noqa: E402  (after dltutorials_is, which sets up Aesara's BLAS)

REPO = Path(__file__).resolve().parents[1]


def _script(relative: str):
    """A script as a module, under a name no other test's copy of it can shadow."""
    name = "user_errors_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPTS = {name: _script(name) for name in (
    "lstm/train.py", "lstm/fim.py", "lstm/variance.py", "rnnrbm/train.py", "rnnrbm/fim.py", "rnnrbm/generate.py",
    "data/prepare_imdb.py", "data/prepare_nottingham.py",
)}


def run_main(name: str, argv: list, capsys) -> tuple[int, str, str]:
    """`main(argv)` of a script (or "replicate"), its status and what it printed."""
    main = replicate.main if name == "replicate" else SCRIPTS[name].main
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


@pytest.fixture
def float64():
    previous = aesara.config.floatX
    aesara.config.floatX = "float64"
    yield
    aesara.config.floatX = previous


# ---------------------------------------------------------------------------------------------
# 1. One error boundary for every entry point
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("error_type, old_base", [
    (DataError, RuntimeError), (ModelFileError, ValueError), (ModelStateError, ValueError),
    (CheckpointError, RuntimeError), (FIMError, RuntimeError), (MidiError, ValueError),
    (TrainingDiverged, RuntimeError), (SettingError, ValueError), (OutputError, OSError), (io.NotSaved, RuntimeError),
])
def test_the_projects_errors_are_user_errors_and_keep_their_old_base(error_type, old_base):
    assert issubclass(error_type, UserError) and issubclass(error_type, old_base)


def test_the_boundary_prints_one_line_for_user_errors_and_lets_bugs_and_ctrl_c_through(capsys):
    @entry_point
    def main(argv=None):
        kind = argv[0]
        if kind == "user":
            raise DataError("no data here\nat all — fetch it")
        if kind == "bug":
            raise ZeroDivisionError("a bug")
        if kind == "interrupt":
            raise KeyboardInterrupt
        return None if kind == "none" else 3

    assert main(["user"]) == 1
    assert capsys.readouterr().err == "error: no data here at all — fetch it\n"
    with pytest.raises(ZeroDivisionError):
        main(["bug"])
    with pytest.raises(KeyboardInterrupt):
        main(["interrupt"])
    assert main(["none"]) == 0 and main(["other"]) == 3


def test_every_command_goes_through_the_boundary():
    for name, module in SCRIPTS.items():
        assert getattr(module.main, "__wrapped__", None) is not None, name
    assert replicate.main.__wrapped__ is not None


def test_no_traceback_reaches_the_terminal(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "rnnrbm" / "generate.py"), "--checkpoint",
                             str(tmp_path / "missing.npz"), "--out", str(tmp_path / "s")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: no checkpoint at {tmp_path / 'missing.npz'}; train one with `python rnnrbm/train.py --saveto "
        f"{tmp_path / 'missing.npz'}`"]


# ---------------------------------------------------------------------------------------------
# 2. Every output location checked before any work starts
# ---------------------------------------------------------------------------------------------

def test_check_writable_creates_the_folder_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "new" / "deeper" / "model.npz"
    assert io.check_writable(target, "--saveto") == target
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []
    assert io.check_writable_dir(tmp_path / "grid", "--out").is_dir()
    assert list((tmp_path / "grid").iterdir()) == []


def test_check_writable_names_what_is_in_the_way(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"--saveto .*/file/a/m.npz: .*/file is a file, not a folder — "):
        io.check_writable(tmp_path / "file" / "a" / "m.npz", "--saveto")
    with pytest.raises(OutputError, match="it is a folder — give the name of a file"):
        io.check_writable(tmp_path, "--saveto")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        io.check_writable_dir(tmp_path / "file", "--out")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)  # (tests run as root: chmod would not stop it)
    with pytest.raises(OutputError, match="is not writable \\(Permission denied\\) — choose a location"):
        io.check_writable(tmp_path / "m.npz", "--saveto")


def test_many_outputs_probe_each_folder_once_and_still_find_a_folder_in_the_way(tmp_path, monkeypatch):
    probes = []
    real_mkstemp = io.tempfile.mkstemp
    monkeypatch.setattr(io.tempfile, "mkstemp", lambda **kw: probes.append(kw["dir"]) or real_mkstemp(**kw))
    names = [tmp_path / f"sample{n}{suffix}" for n in range(1, 1001) for suffix in (".mid", ".png")]
    io.check_all_writable([*names, tmp_path / "other" / "x.mid"], "--out")
    assert probes == [tmp_path, tmp_path / "other"]
    (tmp_path / "sample700.png").mkdir()
    with pytest.raises(OutputError, match="--out .*/sample700.png: it is a folder"):
        io.check_all_writable(names, "--out")


def _blocked_argv(tmp_path: Path) -> dict:
    """Per command, arguments whose output sits under a file; the data folder is empty, so an error about
    the output (not about missing data) shows the check came first."""
    blocked, empty = tmp_path / "file", tmp_path / "empty"
    parts_blocked = tmp_path / "p.pkl"
    return {
        "lstm/train.py --saveto": ("lstm/train.py", ["--saveto", blocked / "m.npz", "--data-dir", empty]),
        "lstm/train.py --importance": ("lstm/train.py", ["--is", "--importance", blocked / "p.pkl", "--saveto", "",
                                                         "--data-dir", empty]),
        "rnnrbm/train.py --saveto": ("rnnrbm/train.py", ["--saveto", blocked / "m.npz", "--data-dir", empty]),
        "rnnrbm/train.py --log": ("rnnrbm/train.py", ["--saveto", tmp_path / "m.npz", "--log", blocked / "m.jsonl",
                                                      "--data-dir", empty]),
        "lstm/fim.py --out": ("lstm/fim.py", ["--out", blocked / "p.pkl", "--data-dir", empty]),
        "lstm/fim.py shards": ("lstm/fim.py", ["--out", parts_blocked, "--data-dir", empty]),
        "rnnrbm/fim.py --out": ("rnnrbm/fim.py", ["--out", blocked / "p.pkl", "--data-dir", empty]),
        "rnnrbm/fim.py shards": ("rnnrbm/fim.py", ["--out", parts_blocked, "--data-dir", empty]),
        "rnnrbm/generate.py --out": ("rnnrbm/generate.py", ["--out", blocked / "s", "--checkpoint", tmp_path / "none"]),
        "replicate fig4 --out": ("replicate", ["fig4", "--out", blocked, "--data-dir", empty]),
        "replicate fig6 --out": ("replicate", ["fig6", "--out", blocked / "grid", "--data-dir", empty]),
        "replicate report --output": ("replicate", ["report", "--output", blocked / "R.md", "--figures", tmp_path / "f"]),
        "replicate report --figures": ("replicate", ["report", "--output", tmp_path / "R.md", "--figures", blocked]),
        "replicate plot --figures": ("replicate", ["plot", tmp_path, "--figures", blocked / "png"]),
        "data/prepare_imdb.py --data-dir": ("data/prepare_imdb.py", ["--data-dir", blocked]),
        "data/prepare_nottingham.py --data-dir": ("data/prepare_nottingham.py", ["--data-dir", blocked / "data"]),
    }


@pytest.mark.parametrize("saveto", ["existing", "new/"])
def test_lstm_saveto_naming_a_folder_is_refused_not_saved_as_hidden_files(saveto, tmp_path, capsys, float64):
    (tmp_path / "existing").mkdir()
    status, out, err = run_main("lstm/train.py", ["--saveto", f"{tmp_path}/{saveto}", "--data-dir", tmp_path], capsys)
    assert status == 1
    assert_one_error_line(err, "it is a folder — give the name of a file, such as ")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("case", list(_blocked_argv(Path("/x"))))
def test_an_unwritable_output_fails_before_any_work(case, tmp_path, capsys, float64):
    (tmp_path / "file").write_text("in the way")
    (tmp_path / "p.pkl.parts").write_text("in the way of the shard folder")
    (tmp_path / "empty").mkdir()
    name, argv = _blocked_argv(tmp_path)[case]
    status, out, err = run_main(name, argv, capsys)
    assert status == 1
    assert_one_error_line(err, "cannot write", "is a file, not a folder")
    assert not (tmp_path / "R.md").exists() and not (tmp_path / "m.npz").exists()


# ---------------------------------------------------------------------------------------------
# 3. Checkpoints are finite, and "the last good model" is the last good one
# ---------------------------------------------------------------------------------------------

N_WORDS = 50


def write_tiny_imdb(data_dir: Path, n_train=40, n_test=12) -> Path:
    rng = np.random.RandomState(3)

    def split(n):
        return ([list(map(int, rng.randint(1, N_WORDS, size=rng.randint(3, 9)))) for _ in range(n)],
                [int(v) for v in rng.randint(0, 2, size=n)])

    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "imdb.pkl", "wb") as f:
        pickle.dump(split(n_train), f)
        pickle.dump(split(n_test), f)
    return data_dir


TINY_LSTM = ["--dim-proj", 4, "--n-words", N_WORDS, "--test-size", 0, "--no-use-dropout", "--batch-size", 4,
             "--disp-freq", 1000]


def tiny_lstm_params(dim=4, seed=0) -> dict:
    return lstm_graph.init_params({"n_words": N_WORDS, "dim_proj": dim, "ydim": 2}, np.random.RandomState(seed))


def test_save_model_refuses_nan_and_keeps_what_the_files_held(tmp_path, float64):
    saveto = str(tmp_path / "model.npz")
    good = tiny_lstm_params()
    lstm_training.save_model(saveto, good, [], {"dim_proj": 4})
    before = (Path(saveto).read_bytes(), Path(f"{saveto}.pkl").read_bytes())
    bad = dict(good, lstm_U=np.full_like(good["lstm_U"], np.nan))
    with pytest.raises(io.NotSaved, match="lstm_U hold NaN or inf .* keeps what it held"):
        lstm_training.save_model(saveto, bad, [], {"dim_proj": 5})
    assert (Path(saveto).read_bytes(), Path(f"{saveto}.pkl").read_bytes()) == before


def test_a_huge_step_size_leaves_the_good_lstm_model_untouched_and_says_why(tmp_path, capsys, float64):
    """sgd at λ = 1e308 with weight decay: the first update's cost is finite, but it makes the
    classifier's weights infinite. No validation has measured a model yet, so nothing is saved over
    the good file there."""
    data = write_tiny_imdb(tmp_path / "data")
    saveto = tmp_path / "model.npz"
    lstm_training.save_model(str(saveto), tiny_lstm_params(), [], {"dim_proj": 4})
    before = (saveto.read_bytes(), Path(f"{saveto}.pkl").read_bytes())
    status, out, err = run_main("lstm/train.py", [*TINY_LSTM, "--data-dir", data, "--saveto", saveto,
                                                  "--optimizer", "sgd", "--lrate", "1e308", "--decay-c", 100,
                                                  "--valid-freq", 1000, "--max-epochs", 1], capsys)
    assert status == 1
    assert "bad parameters detected: at epoch 0, update 1" in out and "U NaN or infinite" in out
    assert f"Not saved: no validation has measured a model of this run yet" in out
    assert_one_error_line(err, "the training diverged", "lower --lrate")
    assert (saveto.read_bytes(), Path(f"{saveto}.pkl").read_bytes()) == before


TINY_RNNRBM = dict(n_hidden=5, n_hidden_recurrent=4, batch_size=20, k=1, seed=11)


@pytest.fixture(scope="module")
def tiny_rnnrbm():
    return RnnRbmModel(RnnRbmConfig(**TINY_RNNRBM), np.random.RandomState(TINY_RNNRBM["seed"]))


def _state(epochs_done=3) -> TrainingState:
    return TrainingState(epochs_done, np.random.RandomState(0).get_state(), {})


def test_rnnrbm_checkpoints_with_nan_are_never_written_nor_read(tiny_rnnrbm, tmp_path):
    path = tmp_path / "model.npz"
    save_checkpoint(path, tiny_rnnrbm, _state())
    before = path.read_bytes()
    good = tiny_rnnrbm.get_params()
    tiny_rnnrbm.params["bh"].set_value(np.full_like(good["bh"], np.inf))
    try:
        with pytest.raises(io.NotSaved, match="bh hold NaN or inf"):
            save_checkpoint(path, tiny_rnnrbm, _state(4))
    finally:
        tiny_rnnrbm.set_params(good)
    assert path.read_bytes() == before
    with np.load(path) as saved:  # an old checkpoint of a diverged run
        arrays = dict(saved)
    arrays["param/W"] = np.full_like(arrays["param/W"], np.nan)
    np.savez(tmp_path / "diverged.npz", **arrays)
    with pytest.raises(CheckpointError, match="W hold NaN or inf .* train a new one"):
        read_checkpoint(tmp_path / "diverged.npz")


def test_an_rnnrbm_step_that_makes_parameters_infinite_is_undone(tiny_rnnrbm):
    """λ = 1e308 and an IS weight of 1e10: the step's cost is finite, its update overflows."""
    chunk = (np.random.RandomState(0).rand(20, 88) < 0.15).astype("float64")
    tiny_rnnrbm.use_data([chunk])
    before = tiny_rnnrbm.get_params()
    tiny_rnnrbm.set_step_size(1e308)
    try:
        step = tiny_rnnrbm.train_step(np.array([0]), np.array([1e10]))
        assert np.isfinite(step.cost) and not step.params_finite and not step.applied and not step.finite
        for name, value in before.items():
            np.testing.assert_array_equal(tiny_rnnrbm.get_params()[name], value, err_msg=name)

        class HugeWeights:
            def epoch(self, rng):
                return [(np.array([0]), np.array([1e10]))]

        with pytest.raises(TrainingDiverged, match="update 1 .* made the parameters NaN or infinite, although its "
                                                   "cost .* was finite; that update was not applied — lower"):
            fit(tiny_rnnrbm, HugeWeights(), np.random.RandomState(0), 1, progress_bar=False)
    finally:
        tiny_rnnrbm.set_step_size(0.001)


def test_a_huge_step_size_leaves_the_good_rnnrbm_checkpoint_and_log_untouched(tiny_rnnrbm, tmp_path, capsys):
    saveto, log = tmp_path / "model.npz", tmp_path / "model.jsonl"
    save_checkpoint(saveto, tiny_rnnrbm, _state(3))
    log.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
    before = saveto.read_bytes(), log.read_bytes()
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_RNNRBM.items()]
    status, out, err = run_main("rnnrbm/train.py", [*sizes, "--lr", "1e308", "--max-songs", 1, "--eval-splits", "",
                                                    "--num-epochs", 1, "--saveto", saveto], capsys)
    assert status == 1
    assert_one_error_line(err, "at epoch 1, update", "that update was not applied",
                          f"{saveto} keeps its last good checkpoint (3 epoch(s) done)", "— lower the step size")
    assert (saveto.read_bytes(), log.read_bytes()) == before


def test_reloading_a_finished_rnnrbm_run_says_so_before_any_work(tiny_rnnrbm, tmp_path, capsys):
    saveto = tmp_path / "model.npz"
    save_checkpoint(saveto, tiny_rnnrbm, _state(3))
    status, _, err = run_main("rnnrbm/train.py", ["--reload", "--saveto", saveto, "--num-epochs", 3,
                                                  "--data-dir", tmp_path / "no-data"], capsys)
    assert status == 1
    assert_one_error_line(err, "has already done 3 of --num-epochs 3", "pass a larger --num-epochs")


def test_resuming_with_other_songs_is_a_user_error():
    sampler = SongOrderSampler([(0, 0), (0, 1), (1, 0)])
    with pytest.raises(ModelStateError, match="song order is of 3 songs, this training set has 2 — resume with"):
        sampler.set_state({"song_order": np.arange(3)})


# ---------------------------------------------------------------------------------------------
# 4. Every numeric flag checked at parse time, the same way everywhere
# ---------------------------------------------------------------------------------------------

BAD_FLAGS = {
    "lstm/train.py": [
        ["--lrate", "inf"], ["--lrate", "-1"], ["--lrate", "nan"], ["--patience", "0"], ["--valid-batch-size", "0"],
        ["--max-epochs", "0"], ["--test-size", "-2"], ["--seed", "0"], ["--seed", "2147462579"],
        ["--noise-std", "nan"], ["--dim-proj", "0"], ["--batch-size", "0"], ["--disp-freq", "0"],
        ["--save-freq", "0"], ["--decay-c", "-1"], ["--decay-c", "inf"], ["--maxlen", "-1"], ["--n-words", "1"],
    ],
    "lstm/fim.py": [
        ["--dim-proj", "0"], ["--eps", "0"], ["--eps", "inf"], ["--step-size", "-1"], ["--step-size", "nan"],
        ["--max-iters", "0"], ["--pilot", "0"], ["--shard-size", "0"], ["--n-jobs", "0"], ["--n-jobs", "-2"],
        ["--seed", "-1"],
    ],
    "lstm/variance.py": [["--samples", "0"], ["--subset-seed", "-1"], ["--base", "nonsense"], ["--test-size", "-5"]],
    "rnnrbm/train.py": [
        ["--lr", "-1"], ["--lr", "inf"], ["--num-epochs", "0"], ["--max-songs", "0"], ["--max-songs", "-1"],
        ["--k", "0"], ["--dt", "0"], ["--dt", "0.001"], ["--dt", "nan"], ["--r", "50", "40"], ["--r", "0", "129"],
        ["--r", "-1", "10"], ["--r", "21", "21"], ["--seed", "-1"], ["--seed", "4294967296"], ["--batch-size", "0"],
        ["--n-hidden", "0"], ["--eval-splits", "train"], ["--eval-splits", "valid,bogus"], ["--on-bad", "ignore"],
    ],
    "rnnrbm/fim.py": [
        ["--eps", "0"], ["--lr", "-1"], ["--max-iters", "0"], ["--pilot", "0"], ["--shard-size", "0"],
        ["--n-jobs", "0"], ["--max-songs", "0"], ["--r", "60", "50"], ["--dt", "0"], ["--k", "0"],
        ["--on-bad", "ignore"],
    ],
    "rnnrbm/generate.py": [["--count", "0"], ["--count", "-1"]],
    "replicate": [
        ["fig4", "--step-sizes", "-1"], ["fig4", "--step-sizes", "inf"], ["fig4", "--epochs", "0"],
        ["fig4", "--n-jobs", "0"], ["fig4", "--seeds", "0"], ["fig4", "--seeds", "1", "-3"], ["fig6", "--seeds", "-1"],
        ["fig4", "--train-subset", "0"], ["fig4", "--eval-subset", "0"], ["fig4", "--batch-sizes", "0"],
        ["fig4", "--cells", "16-0.5"], ["fig4", "--cells", "0:0.5"], ["fig4", "--cells", "16:-1"],
        ["fig6", "--cells", "50:nan"], ["fig4", "--arms", "bogus"], ["fig4", "--on-bad", "skip"],
        ["fig6", "--n-jobs", "-5"],
    ],
    "data/prepare_imdb.py": [["--n-jobs", "0"]],
}


def _parse(name: str, argv: list[str]):
    if name == "replicate":
        return replicate.build_parser().parse_args(argv)
    module = SCRIPTS[name]
    if hasattr(module, "parse_args"):
        return module.parse_args(argv)
    if hasattr(module, "build_parser"):
        return module.build_parser().parse_args(argv)
    return module.main(argv)  # the parser is built in main; a bad flag stops it before anything else


@pytest.mark.parametrize("name, argv", [(name, argv) for name, cases in BAD_FLAGS.items() for argv in cases],
                         ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_a_bad_value_is_an_argparse_error(name, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parse(name, argv)
    assert exit_.value.code == 2
    assert "error: " in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, commands", [
    ("--n-jobs", "0", [("lstm/fim.py", []), ("rnnrbm/fim.py", []), ("replicate", ["fig4"]), ("data/prepare_imdb.py", [])]),
    ("--max-iters", "0", [("lstm/fim.py", []), ("rnnrbm/fim.py", [])]),
    ("--eps", "-0.5", [("lstm/fim.py", []), ("rnnrbm/fim.py", [])]),
    ("--seed", "0", [("lstm/train.py", []), ("lstm/fim.py", []), ("lstm/variance.py", [])]),
    ("--r", "30 20", [("rnnrbm/train.py", []), ("rnnrbm/fim.py", [])]),
])
def test_the_same_mistake_gets_the_same_message_everywhere(flag, value, commands, capsys):
    messages = set()
    for name, prefix in commands:
        with pytest.raises(SystemExit):
            _parse(name, [*prefix, flag, *value.split()])
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"error: argument {flag}" in line
        messages.add(re.sub(r"^.*error: argument [^:]*: ", "", line))  # "<prog>: error: argument --flag[/--alias]: "
    assert len(messages) == 1, messages


def test_the_values_that_mean_all_or_default_are_accepted():
    lstm = SCRIPTS["lstm/train.py"]
    assert lstm.parse_args(["--test-size", "0"]).test_size == 0  # 0 and -1: all test reviews
    assert lstm.parse_args(["--test-size", "-1"]).test_size == -1
    assert lstm.parse_args(["--seed", "2147462578"]).seed == 2147462578
    rnnrbm = SCRIPTS["rnnrbm/train.py"].parse_args(["--seed", "0", "--r", "0", "128", "--eval-splits", ""])
    assert (rnnrbm.seed, rnnrbm.r, rnnrbm.eval_splits) == (0, (0, 128), ())
    assert SCRIPTS["rnnrbm/train.py"].parse_args([]).eval_splits == ("valid", "test")
    assert SCRIPTS["rnnrbm/fim.py"].parse_args(["--n-jobs", "-1"]).jobs == -1
    args = replicate.build_parser().parse_args(["fig6", "--seeds", "0", "--cells", "50:0.3", "--on-bad", "skip"])
    assert (args.seeds, args.cells, args.on_bad) == ([0], [(50, 0.3)], "skip")


@pytest.mark.parametrize("name", ["lstm/train.py", "lstm/fim.py", "lstm/variance.py"])
def test_an_abbreviation_of_a_flag_spelt_two_ways_names_that_flag(name, capsys):
    assert _parse(name, ["--dim", "8", "--use"]).dim_proj == 8  # --dim-proj/--dim_proj, --use-dropout/--use_dropout
    with pytest.raises(SystemExit):  # an abbreviation of two different flags stays ambiguous
        _parse("lstm/train.py", ["--valid", "5"])
    assert "ambiguous option: --valid could match --valid-freq" in capsys.readouterr().err


def test_plotting_a_missing_or_empty_grid_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        replicate.main(["plot", str(tmp_path / "missing")])
    assert exit_.value.code == 2 and "no such grid folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # a folder that is not a grid, e.g. the grid's runs/
        replicate.main(["plot", str(tmp_path)])
    assert exit_.value.code == 2 and "no run logs" in capsys.readouterr().err


def test_a_report_from_a_mistyped_or_empty_grid_leaves_the_report_as_it_was(tmp_path, capsys):
    report = tmp_path / "REPLICATION.md"
    report.write_text("the report the logs gave\n")
    (tmp_path / "empty").mkdir()
    common = ["--output", str(report), "--figures", str(tmp_path / "figures")]
    for grids, message in ((["--fig4", str(tmp_path / "typo")], "--fig4 "), (["--fig6", str(tmp_path / "empty"),
                           "--fig4", str(tmp_path / "empty")], "nothing to report")):
        with pytest.raises(SystemExit) as exit_:
            replicate.main(["report", *grids, *common])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert report.read_text() == "the report the logs gave\n"


# ---------------------------------------------------------------------------------------------
# 5. Crashes that are now messages
# ---------------------------------------------------------------------------------------------

def test_reloading_a_truncated_or_nan_lstm_model_is_a_message(tmp_path, capsys, float64):
    data = write_tiny_imdb(tmp_path / "data")
    np.savez(tmp_path / "good.npz", **tiny_lstm_params())
    (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:300])
    status, _, err = run_main("lstm/train.py", [*TINY_LSTM, "--data-dir", data, "--saveto", "",
                                                "--reload-model", tmp_path / "cut.npz"], capsys)
    assert status == 1
    assert_one_error_line(err, "cut.npz is not a readable .npz file (truncated or corrupt: BadZipFile")
    np.savez(tmp_path / "nan.npz", **dict(tiny_lstm_params(), b=np.array([np.nan, 0.0])))
    with pytest.raises(ModelFileError, match="b in .* holds NaN or inf"):
        lstm_graph.load_params(tmp_path / "nan.npz", tiny_lstm_params())


def test_a_maxlen_that_keeps_no_review_is_a_message(tmp_path, capsys, float64):
    data = write_tiny_imdb(tmp_path / "data")
    status, _, err = run_main("lstm/train.py", [*TINY_LSTM, "--data-dir", data, "--saveto", "", "--maxlen", 2],
                              capsys)
    assert status == 1
    assert_one_error_line(err, "maxlen=2 keeps no training review", "raise --maxlen")


def test_a_training_set_smaller_than_a_minibatch_validates_once_per_epoch():
    """`--valid-freq -1` is `len(train) // batch_size` updates, the original's rule, which is 0 here."""
    train = ([[1, 2], [3]], [0, 1])
    options = {"valid_batch_size": 64, "batch_size": 16, "validFreq": -1, "saveFreq": -1, "dispFreq": 10,
               "saveto": "", "patience": 10}
    hooks = lstm_training.TutorialLstmHooks(options, train, train, train)
    assert hooks.valid_freq == hooks.save_freq == 1

    class Model:
        def error(self, split, batches):
            return 0.5

        def get_params(self):
            return {}

    progress = type("P", (), {"updates": 1, "epoch": 0, "step": type("S", (), {"cost": 0.7})(), "stop": False})()
    hooks.train_batches = lstm_training.sequential_batches(2, 16)
    hooks.after_update(Model(), progress)  # used to divide by zero
    assert hooks.history_errs == [[0.5, 0.5]]


# ---------------------------------------------------------------------------------------------
# 6. Advice that can be followed
# ---------------------------------------------------------------------------------------------

def write_song(path: Path, pitches=(60, 64, 67)) -> Path:
    track = mido.MidiTrack()
    for pitch in pitches:
        track.append(mido.Message("note_on", note=pitch, velocity=64, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=64, time=480))
    midi = mido.MidiFile(type=0, ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(path)
    return path


def nottingham_with_a_bad_file(data_dir: Path) -> Path:
    for split in ("train", "valid", "test"):
        folder = data_dir / "Nottingham" / split
        folder.mkdir(parents=True)
        write_song(folder / "good.mid")
    good = (data_dir / "Nottingham" / "train" / "good.mid").read_bytes()
    (data_dir / "Nottingham" / "train" / "cut.mid").write_bytes(good[:30])
    return data_dir


def test_a_bad_midi_file_names_the_flag_that_skips_it(tmp_path):
    data = nottingham_with_a_bad_file(tmp_path)
    with pytest.raises(DataError, match="cut.mid: .* — run with --on-bad skip"):
        load_nottingham(data, "train")


def test_every_command_that_reads_nottingham_has_on_bad(tmp_path, monkeypatch, capsys):
    seen = {}

    def loader(*args, on_bad="error", **kwargs):
        seen["on_bad"] = on_bad
        raise DataError("stop here")

    fim_script = SCRIPTS["rnnrbm/fim.py"]
    monkeypatch.setattr(fim_script, "load_nottingham", loader)
    status, _, err = run_main("rnnrbm/fim.py", ["--on-bad", "skip", "--pilot", 2], capsys)
    assert status == 1 and seen == {"on_bad": "skip"} and "stop here" in err

    data = nottingham_with_a_bad_file(tmp_path)
    backend = make_backend("fig6", data_dir=data, on_bad="skip")
    with pytest.warns(UserWarning, match="skipped 1 unreadable MIDI file.*cut.mid"):
        songs = backend.songs(RunSpec("fig6", "uniform", 1, 20, 0.1, 1))
    assert len(songs) == 1
    with pytest.raises(DataError, match="--on-bad skip"):
        make_backend("fig6", data_dir=data).songs(RunSpec("fig6", "uniform", 1, 20, 0.1, 1))


def test_prepare_nottingham_reads_every_file_and_names_the_bad_ones(tmp_path, monkeypatch, capsys):
    script = SCRIPTS["data/prepare_nottingham.py"]
    monkeypatch.setattr(script, "fetch_archive", lambda *args: tmp_path / "Nottingham.zip")
    monkeypatch.setattr(script, "extract", lambda *args, **kwargs: tmp_path)
    monkeypatch.setattr(script, "EXPECTED_FILES", {"train": 2, "valid": 1, "test": 1})
    data = nottingham_with_a_bad_file(tmp_path)
    status, out, err = run_main("data/prepare_nottingham.py", ["--data-dir", data], capsys)
    assert status == 1 and "ready" not in out
    assert_one_error_line(err, "1 of 4 MIDI files", "train/cut.mid: not a readable MIDI file",
                          "— delete", "or train with --on-bad skip")
    write_song(data / "Nottingham" / "train" / "cut.mid")
    status, out, err = run_main("data/prepare_nottingham.py", ["--data-dir", data], capsys)
    assert status == 0 and "every file reads" in out and err == ""


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", ["replicate fig4", "lstm/fim.py", "rnnrbm/fim.py"])
@pytest.mark.parametrize("address", ["not-an-address", "closed port"])
def test_a_scheduler_that_cannot_be_reached_is_a_message_before_any_data_is_read(command, address, tmp_path, capsys):
    """Malformed, or nothing answering within dask's connect timeout (1 s here): one line, status 1, and the
    data folder is not read first (it is empty here, so reading it would fail with another message)."""
    empty = tmp_path / "data"
    empty.mkdir()
    (empty / "imdb.pkl").touch()  # the grid's data check, which runs first, only looks for the file
    if address == "closed port":
        address = f"tcp://127.0.0.1:{_closed_port()}"
    script, *argv = command.split()
    argv += ["--scheduler", address, "--data-dir", empty, "--out", tmp_path / "out"]
    io_loops = _io_loop_threads()
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        status, _, err = run_main("replicate" if script == "replicate" else script, argv, capsys)
    assert status == 1
    assert_one_error_line(err, f"cannot use the dask scheduler at {address!r}", "`dask scheduler`")
    # no half-made dask client left running: while they leaked, this test failed in the full suite only
    assert _io_loop_threads() <= io_loops


def _io_loop_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "IO loop"}
