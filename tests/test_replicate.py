"""The replication grid (dltutorials_is/replicate/) with a fake, instant model behind the real loop."""
import json
import os
import pickle
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from dltutorials_is.cluster import parallel_backend
from dltutorials_is.io import exclusive_lock
from dltutorials_is.io import read_json_lines as read_log
from dltutorials_is.models.base import StepResult
from dltutorials_is.replicate.__main__ import _parse_cells, build_parser
from dltutorials_is.replicate.grid import RUN_LOCK, Backend, Experiment, FimOutcome, run_grid
from dltutorials_is.replicate.plots import plot_grid, plotted_runs
from dltutorials_is.replicate.report import regression_fraction, sign_flip_p, write_report
from dltutorials_is.replicate.runs import RunLog, load_grid
from dltutorials_is.replicate.specs import FIGURES, RunSpec, grid_specs, run_dir

N_TRAIN = 20
PRIVATE_STEPS = 7 * N_TRAIN


class FakeModel:
    """A 'model' whose error shrinks by a factor per epoch (spread over its updates), with its own noise
    stream as part of its state; it records every resumption in `state_dir`."""

    BASES = ("w",)

    def __init__(self, spec, factor, regress_arm, state_dir):
        self.spec, self.factor, self.regress_arm, self.state_dir = spec, factor, regress_arm, state_dir
        self.n_train = N_TRAIN
        self.updates_per_epoch = -(-N_TRAIN // spec.batch_size)
        self.value, self.updates = 0.5, 0
        self.noise = np.random.RandomState(spec.seed)

    @property
    def epoch(self) -> int:
        return self.updates // self.updates_per_epoch

    def train_step(self, indices, weights):
        regress = self.spec.arm == self.regress_arm and self.epoch >= 3
        self.value *= (1.3 if regress else self.factor) ** (1 / self.updates_per_epoch) * (1 + 0.001 * self.noise.rand())
        self.updates += 1
        return StepResult(self.value)

    def losses(self, indices):
        return 1.0 + np.asarray(indices, dtype=float)

    def get_state(self):
        return {"value": self.value, "updates": self.updates, "noise": self.noise.get_state()}

    def set_state(self, state):
        self.value, self.updates = state["value"], state["updates"]
        self.noise.set_state(state["noise"])
        with open(Path(self.state_dir) / "train_calls.txt", "a") as f:
            f.write(f"{self.spec.run_id} resumed after {self.epoch}\n")


class FakeBackend(Backend):
    """Prepares FakeModels: `is_gain` faster for IS arms (a number, or one per step size). It records every FIM call and every run
    prepared in files of `state_dir`, and can crash once at a chosen (run, epoch) like a killed process."""

    def __init__(self, state_dir, figure="fig4", is_gain=0.1, crash=None, regress_arm=None,
                 log_grad_variance=False, grad_var_ratio=0.5, constant_error=0.45, epoch_seconds=0.0):
        self.state_dir = Path(state_dir)
        self.figure = figure
        self.is_gain = is_gain
        self.crash = crash  # (run_id, epoch)
        self.regress_arm = regress_arm  # fig6: this arm's cost goes back up after epoch 3
        self.log_grad_variance = log_grad_variance
        self.grad_var_ratio = grad_var_ratio
        self.constant_error = constant_error
        self.epoch_seconds = epoch_seconds  # slows the fake down, so a worker can be killed mid-run

    def protocol_key(self, spec):
        return f"b{spec.batch_size}_subset{spec.train_subset}"

    def mine_importance(self, spec, workdir, n_jobs=1, parallel=None):
        with open(self.state_dir / "fim_calls.txt", "a") as f:
            f.write(f"{self.protocol_key(spec)} {spec.seed}\n")
        with open(self.state_dir / "fim_workers.txt", "a") as f:
            f.write(f"{n_jobs} {parallel} {os.getpid()}\n")
        rng = np.random.RandomState(spec.seed)
        norm = 1.0 + 0.01 * rng.rand(N_TRAIN)
        displacement = rng.rand(N_TRAIN) ** 4 + 0.01
        return FimOutcome(p={"norm": norm / norm.sum(), "displacement": displacement / displacement.sum()},
                          private_steps=PRIVATE_STEPS, info={"n_train": N_TRAIN})

    def prepare(self, spec, rng):
        with open(self.state_dir / "train_calls.txt", "a") as f:
            f.write(f"{spec.run_id}\n")
        with open(self.state_dir / "pids.txt", "a") as f:
            f.write(f"{spec.run_id} {os.getpid()}\n")
        gain = self.is_gain[spec.step_size] if isinstance(self.is_gain, dict) else self.is_gain
        factor = 0.8 - (gain if spec.arm.startswith("is-") else 0.0)
        model = FakeModel(spec, factor, self.regress_arm, self.state_dir)

        def metrics(ctx):
            if self.crash == (spec.run_id, model.epoch) and not (self.state_dir / "crashed").exists():
                (self.state_dir / "crashed").touch()
                raise RuntimeError("simulated kill")
            with ctx.evaluation(N_TRAIN):
                time.sleep(self.epoch_seconds)
                value = model.value
            if self.figure == "fig6":
                values = {"cost": value}
            else:
                values = {"train_err": value, "valid_err": value * 1.1, "valid_err_constant": self.constant_error}
            if self.log_grad_variance and spec.arm.startswith("is-"):  # as the real backends: IS arms only
                values["grad_var_ratio"] = self.grad_var_ratio
            return values

        return Experiment(model, batch_size=spec.batch_size, metrics=metrics)


def calls(state_dir, name):
    path = Path(state_dir) / name
    return path.read_text().splitlines() if path.exists() else []


def specs(arms=("uniform", "is-paper"), seeds=(0, 1, 2), cells=((16, 0.1), (16, 0.5)), epochs=4, figure="fig4"):
    return grid_specs(figure, cells, arms, seeds, epochs, train_subset=N_TRAIN)


def test_killed_run_resumes_from_its_checkpoint_and_finished_runs_are_not_recomputed(tmp_path):
    grid = specs(arms=("uniform",), seeds=(0, 1), cells=((16, 0.5),))
    victim = grid[0]
    backend = FakeBackend(tmp_path, crash=(victim.run_id, 3))
    statuses = run_grid(backend, grid, tmp_path / "out", progress=False)
    assert statuses[victim.run_id].startswith("failed") and statuses[grid[1].run_id] == "done"
    assert not (run_dir(tmp_path / "out", victim) / "done").exists()
    finished_log = run_dir(tmp_path / "out", grid[1]) / "log.jsonl"
    finished_mtime = finished_log.stat().st_mtime_ns

    statuses = run_grid(backend, grid, tmp_path / "out", progress=False)
    assert statuses == {victim.run_id: "done", grid[1].run_id: "skipped"}
    assert finished_log.stat().st_mtime_ns == finished_mtime
    assert calls(tmp_path, "train_calls.txt") == [victim.run_id, grid[1].run_id, victim.run_id,
                                                  f"{victim.run_id} resumed after 2"]
    resumed = read_log(run_dir(tmp_path / "out", victim) / "log.jsonl")
    assert [r["epoch"] for r in resumed] == [0, 1, 2, 3, 4]

    # Resuming restores the RNG and counters: the same numbers as a run that was never killed.
    (tmp_path / "clean").mkdir()
    run_grid(FakeBackend(tmp_path / "clean"), grid[:1], tmp_path / "clean_out", progress=False)
    clean = read_log(run_dir(tmp_path / "clean_out", victim) / "log.jsonl")
    for key in ("train_err", "valid_err", "units", "train_units", "eval_units"):
        assert [r[key] for r in resumed] == [r[key] for r in clean]


def test_run_killed_before_its_first_checkpoint_restarts_from_scratch(tmp_path):
    grid = specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),))
    backend = FakeBackend(tmp_path, crash=(grid[0].run_id, 1))
    run_grid(backend, grid, tmp_path / "out", progress=False)
    assert [r["epoch"] for r in read_log(run_dir(tmp_path / "out", grid[0]) / "log.jsonl")] == [0]
    assert not (run_dir(tmp_path / "out", grid[0]) / "checkpoint.pkl").exists()
    assert run_grid(backend, grid, tmp_path / "out", progress=False) == {grid[0].run_id: "done"}
    assert calls(tmp_path, "train_calls.txt") == [grid[0].run_id, grid[0].run_id]  # never resumed
    assert [r["epoch"] for r in read_log(run_dir(tmp_path / "out", grid[0]) / "log.jsonl")] == [0, 1, 2, 3, 4]


def test_a_log_line_cut_short_by_a_kill_is_dropped(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epo')
    assert read_log(log) == [{"epoch": 0}, {"epoch": 1}]


def test_fim_is_computed_once_per_protocol_and_seed_and_charged_to_is_arms_only(tmp_path):
    grid = specs(arms=("uniform", "is-paper", "is-best", "is-displacement"), seeds=(0, 1))
    run_grid(FakeBackend(tmp_path), grid, tmp_path / "out", progress=False)
    assert sorted(calls(tmp_path, "fim_calls.txt")) == [f"b16_subset{N_TRAIN} 0", f"b16_subset{N_TRAIN} 1"]
    logs = load_grid(tmp_path / "out")
    assert all(log.done for log in logs) and len(logs) == len(grid)
    for log in logs:
        first, last = log.records[0], log.records[-1]
        if log.spec.arm == "uniform":
            assert last["fim_units"] == 0 and last["fim_wall_s"] == 0
        else:
            assert first["fim_units"] == last["fim_units"] == 3 * PRIVATE_STEPS
            assert last["wall_s"] == pytest.approx(last["train_wall_s"] + last["fim_wall_s"])
            assert last["units"] == last["train_units"] + 3 * PRIVATE_STEPS
    kinds = {log.spec.arm: log.fim_kind for log in logs}
    assert kinds == {"uniform": None, "is-paper": "norm", "is-best": "displacement", "is-displacement": "displacement"}

    # A rerun with more step sizes reuses the saved FIM.
    run_grid(FakeBackend(tmp_path), specs(arms=("is-paper",), seeds=(0, 1), cells=((16, 1.0),)), tmp_path / "out",
             progress=False)
    assert len(calls(tmp_path, "fim_calls.txt")) == 2


def test_each_fim_is_mined_by_the_grid_on_all_its_workers_before_any_run(tmp_path):
    grid = specs(arms=("is-paper",), seeds=(0, 1), cells=((16, 0.5),))
    run_grid(FakeBackend(tmp_path), grid, tmp_path / "out", n_jobs=2, progress=False)
    # Mined from the grid's process, one FIM after another, each handed the whole pool for its samples.
    assert calls(tmp_path, "fim_workers.txt") == [f"2 None {os.getpid()}"] * 2
    run_pids = {line.split()[1] for line in calls(tmp_path, "pids.txt")}
    assert str(os.getpid()) not in run_pids


def test_forward_pass_units(tmp_path):
    epochs = 3
    grid = specs(arms=("uniform", "replacement", "online"), seeds=(0,), cells=((8, 0.5),), epochs=epochs)
    run_grid(FakeBackend(tmp_path), grid, tmp_path / "out", progress=False)
    logs = {log.spec.arm: log for log in load_grid(tmp_path / "out")}
    for arm in ("uniform", "replacement"):
        records = logs[arm].records
        assert [r["units"] for r in records] == [3 * N_TRAIN * e for e in range(epochs + 1)]
        assert [r["eval_units"] for r in records] == [N_TRAIN * (e + 1) for e in range(epochs + 1)]
        assert records[-1]["scoring_units"] == 0
    online = logs["online"].records[-1]
    updates = epochs * -(-N_TRAIN // 8)
    assert online["train_units"] == 3 * 8 * updates  # full batches of b: 3 per sample
    assert online["scoring_units"] >= 8 * updates  # at least the uniform batches were scored
    assert online["units"] == online["train_units"] + online["scoring_units"]
    assert online["online_updates"] == updates


def test_parallel_grid_gives_the_same_logs_as_a_serial_one(tmp_path):
    grid = specs(arms=("uniform", "is-paper"), seeds=(0,), cells=((16, 0.5),), epochs=2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run_grid(FakeBackend(tmp_path / "a"), grid, tmp_path / "serial", n_jobs=1, progress=False)
    statuses = run_grid(FakeBackend(tmp_path / "b"), grid, tmp_path / "parallel", n_jobs=2, progress=False)
    assert set(statuses.values()) == {"done"}
    for spec in grid:
        serial = read_log(run_dir(tmp_path / "serial", spec) / "log.jsonl")
        parallel = read_log(run_dir(tmp_path / "parallel", spec) / "log.jsonl")
        assert [r["train_err"] for r in serial] == [r["train_err"] for r in parallel]


def test_plots_are_written_for_every_x_axis(tmp_path):
    grid = specs(arms=("uniform", "replacement", "is-paper", "is-best", "online"), seeds=(0, 1))
    run_grid(FakeBackend(tmp_path, log_grad_variance=True), grid, tmp_path / "out", progress=False)
    paths = plot_grid(tmp_path / "out", tmp_path / "png")
    assert sorted(p.name for p in paths) == ["fig4_epoch.png", "fig4_grad_variance.png", "fig4_units.png",
                                              "fig4_wall_s.png"]
    assert all(p.stat().st_size > 10_000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_curves_leave_out_an_unfinished_seed_once_its_arm_has_a_finished_one():
    def log(arm, seed, done):
        spec = RunSpec(figure="fig4", arm=arm, seed=seed, batch_size=16, step_size=0.5, epochs=3)
        return RunLog(spec, [{"epoch": 0, "valid_err": 0.5}], done, None)

    finished, unfinished, alone = log("online", 1, True), log("online", 2, False), log("uniform", 2, False)
    assert plotted_runs([finished, unfinished, alone]) == [finished, alone]


def test_an_auc_figure_is_drawn_when_the_logs_carry_auc(tmp_path):
    grid = specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),), epochs=2)
    run_grid(FakeBackend(tmp_path), grid, tmp_path / "out", progress=False)
    assert "fig4_auc.png" not in {p.name for p in plot_grid(tmp_path / "out", tmp_path / "png")}
    log_path = run_dir(tmp_path / "out", grid[0]) / "log.jsonl"
    records = read_log(log_path)
    log_path.write_text("".join(json.dumps(dict(r, train_auc=0.5 + 0.1 * r["epoch"])) + "\n" for r in records))
    assert "fig4_auc.png" in {p.name for p in plot_grid(tmp_path / "out", tmp_path / "png")}


def _report_for(tmp_path, is_gain):
    grid = specs(arms=("uniform", "is-paper"), seeds=(0, 1, 2), cells=((16, 0.1), (16, 0.5), (16, 1.0)), epochs=5)
    run_grid(FakeBackend(tmp_path, is_gain=is_gain), grid, tmp_path / "fig4", progress=False)
    output = tmp_path / "REPLICATION.md"
    write_report({"fig4": [tmp_path / "fig4"], "fig6": [tmp_path / "missing"]}, output, tmp_path / "docs")
    return output.read_text()


def _verdict(text, claim, arm_label="IS, FIM norm (paper)"):
    section = text.split(f"#### Claim: {claim}")[1]
    line = next(l for l in section.splitlines() if l.startswith(f"- **{arm_label}:"))
    return line.split(":", 1)[1].split("**")[0].strip()


def test_report_verdicts_follow_the_logs(tmp_path):
    (tmp_path / "win").mkdir()
    (tmp_path / "lose").mkdir()
    win = _report_for(tmp_path / "win", is_gain=0.2)
    lose = _report_for(tmp_path / "lose", is_gain=-0.1)
    claim = "IS valid err drops faster than uniform at every step size"
    assert _verdict(win, claim) == "held"
    assert _verdict(lose, claim) == "did not hold"
    assert "Not run: no logs" in win  # fig6 was not run
    assert "![win_fig4_epoch](docs/win_fig4_epoch.png)" in win  # figures named after the grid folder
    # The commands and the scale shown come from the grid's own files.
    assert "subset mode ['random']" in win and "seeds [0, 1, 2]" in win
    # The λ claim is judged from the logs: a gain peaking at λ = 0.5 holds it, one peaking at λ = 1 does not.
    (tmp_path / "peak05").mkdir()
    (tmp_path / "peak1").mkdir()
    claim = "the gain is largest at λ = 0.5 and small at λ = 0.1"
    assert _verdict(_report_for(tmp_path / "peak05", is_gain={0.1: 0.02, 0.5: 0.2, 1.0: 0.1}), claim) == "held"
    assert _verdict(_report_for(tmp_path / "peak1", is_gain={0.1: 0.02, 0.5: 0.1, 1.0: 0.2}), claim) == "did not hold"


def test_fig6_regression_claim_flips_with_the_logs(tmp_path):
    def report(regress_arm, where):
        where.mkdir()
        grid = specs(arms=("uniform", "is-paper"), seeds=(0, 1, 2), cells=((50, 0.3),), epochs=8, figure="fig6")
        run_grid(FakeBackend(where, figure="fig6", is_gain=0.0, regress_arm=regress_arm), grid, where / "fig6",
                 progress=False)
        write_report({"fig6": [where / "fig6"]}, where / "R.md", where / "docs")
        return (where / "R.md").read_text()

    claim = "at batch 50, λ = 0.3 uniform regresses while IS keeps decreasing"
    assert _verdict(report("uniform", tmp_path / "a"), claim) == "held"
    assert _verdict(report("is-paper", tmp_path / "b"), claim) == "did not hold"
    assert _verdict(report(None, tmp_path / "c"), claim) == "did not hold"


def test_statistics_helpers():
    assert sign_flip_p([-1.0, -2.0, -1.5]) == pytest.approx(0.25)  # the floor with 3 seeds
    assert sign_flip_p([-1.0, 1.0]) == pytest.approx(1.0)

    class Log:
        records = [{"cost": 10.0}, {"cost": 4.0}, {"cost": 2.0}, {"cost": 3.0}]

    assert regression_fraction(Log, "cost") == pytest.approx(1 / 8)


def test_cells_from_the_command_line():
    parser = build_parser()
    args = parser.parse_args(["fig6", "--cells", "50:0.3", "100:0.003"])
    assert _parse_cells(args, FIGURES["fig6"]) == [(50, 0.3), (100, 0.003)]
    args = parser.parse_args(["fig4", "--step-sizes", "0.5", "0.1"])
    assert _parse_cells(args, FIGURES["fig4"]) == [(16, 0.5), (16, 0.1)]
    args = parser.parse_args(["fig6", "--batch-sizes", "100"])
    assert _parse_cells(args, FIGURES["fig6"]) == [(100, 0.001), (100, 0.003)]
    with pytest.raises(SystemExit):
        _parse_cells(parser.parse_args(["fig4", "--cells", "16-0.5"]), FIGURES["fig4"])


def test_a_run_another_process_is_training_is_left_to_it(tmp_path):
    spec = RunSpec("fig4", "uniform", 0, 16, 0.5, 2, N_TRAIN)
    directory = run_dir(tmp_path / "out", spec)
    directory.mkdir(parents=True)
    with exclusive_lock(directory / RUN_LOCK) as held:  # as the same grid started a second time would find it
        assert held
        status = run_grid(FakeBackend(tmp_path), [spec], tmp_path / "out", progress=False)
        assert status[spec.run_id].startswith("failed") and f"pid {os.getpid()} is training it" in status[spec.run_id]
        assert not (directory / "log.jsonl").exists() and not (directory / "spec.json").exists()
    assert run_grid(FakeBackend(tmp_path), [spec], tmp_path / "out", progress=False)[spec.run_id] == "done"


def test_a_run_directory_is_never_reused_for_another_spec(tmp_path):
    spec = RunSpec("fig4", "uniform", 0, 16, 0.5, 2, N_TRAIN)
    run_grid(FakeBackend(tmp_path), [spec], tmp_path / "out", progress=False)
    (run_dir(tmp_path / "out", spec) / "done").unlink()
    other = RunSpec("fig4", "uniform", 0, 16, 0.5, 2, N_TRAIN, subset_mode="first")
    status = run_grid(FakeBackend(tmp_path), [other], tmp_path / "out", progress=False)
    assert status[other.run_id].startswith("failed") and "different spec" in status[other.run_id]


def test_report_names_failed_runs_and_leaves_them_out(tmp_path):
    grid = specs(arms=("uniform", "is-paper"), seeds=(0, 1), cells=((16, 0.5),), epochs=3)
    victim = next(s for s in grid if s.arm == "is-paper" and s.seed == 1)
    run_grid(FakeBackend(tmp_path, crash=(victim.run_id, 2)), grid, tmp_path / "fig4", progress=False)
    write_report({"fig4": [tmp_path / "fig4"]}, tmp_path / "R.md", tmp_path / "docs")
    text = (tmp_path / "R.md").read_text()
    line = next(l for l in text.splitlines() if f"`{victim.run_id}`" in l)
    assert line.startswith(f"  - `{victim.run_id}`: last logged epoch 1 of 3 (train_cost_during_epoch ")
    assert line.endswith("; error: RuntimeError: simulated kill")
    assert "runs: 3 finished of 4 started" in text
    assert "| b=16, λ=0.5 | is-paper |" in text and "| 1/1 |" in text  # one paired seed left


def test_report_labels_a_reduced_scale(tmp_path):
    text = _report_for(tmp_path, is_gain=0.2)
    assert "## Figure 4: LSTM on IMDB, SGD, batch 16: reduced data" in text
    assert "**Short of the paper's protocol**: 20 training samples instead of all (random subset)" in text
    assert "5 epochs instead of 20" in text and "(16, 0.05) not run" in text


def test_report_counts_seeds_per_arm_not_over_the_grid(tmp_path):
    grid = (specs(arms=("uniform",), seeds=(0, 1, 2), cells=((16, 0.5),), epochs=2)
            + specs(arms=("is-paper",), seeds=(0, 1), cells=((16, 0.5),), epochs=2))
    unfinished = next(s for s in grid if s.arm == "is-paper" and s.seed == 1)  # counts no more than a missing one
    run_grid(FakeBackend(tmp_path, crash=(unfinished.run_id, 2)), grid, tmp_path / "fig4", progress=False)
    write_report({"fig4": [tmp_path / "fig4"]}, tmp_path / "R.md", tmp_path / "docs")
    assert "as few as 1 seed(s) for a (cell, arm)" in (tmp_path / "R.md").read_text()


def test_report_has_a_section_per_grid_with_its_data_scale_figures_and_compute(tmp_path):
    paper = grid_specs("fig4", ((16, 0.5),), ("uniform",), (0,), 2)  # whole training set, whole sets
    run_grid(FakeBackend(tmp_path), paper, tmp_path / "paper_scale" / "fig4", progress=False)
    reduced = specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),), epochs=3)
    run_grid(FakeBackend(tmp_path), reduced, tmp_path / "reduced" / "fig4", progress=False)
    write_report({"fig4": [tmp_path / "paper_scale" / "fig4", tmp_path / "reduced" / "fig4"]}, tmp_path / "R.md",
                 tmp_path / "docs")
    text = (tmp_path / "R.md").read_text()
    assert text.index("batch 16: paper-scale data") < text.index("batch 16: reduced data")
    assert {p.name for p in (tmp_path / "docs").glob("*_epoch.png")} == {"paper_scale_fig4_epoch.png",
                                                                          "reduced_fig4_epoch.png"}
    last = read_log(run_dir(tmp_path / "paper_scale" / "fig4", paper[0]) / "log.jsonl")[-1]
    hours = sum(last[f"{k}_wall_s"] for k in ("train", "eval", "setup")) / 3600
    assert f"- compute so far: {hours:.2f} core-hours (train " in text.split("reduced data")[0]


def test_report_compares_is_with_the_replacement_control(tmp_path):
    grid = specs(arms=("uniform", "replacement", "is-paper"), seeds=(0, 1), cells=((16, 0.5),), epochs=3)
    run_grid(FakeBackend(tmp_path, is_gain=0.1), grid, tmp_path / "fig4", progress=False)
    write_report({"fig4": [tmp_path / "fig4"]}, tmp_path / "R.md", tmp_path / "docs")
    text = (tmp_path / "R.md").read_text()
    assert _verdict(text, "(control, not the paper's) IS beats uniform sampling *with replacement*") == "held"


def test_report_warns_when_no_model_beat_the_constant_predictor(tmp_path):
    def report(constant_error, where):
        where.mkdir()
        grid = specs(arms=("uniform", "is-paper"), seeds=(0,), cells=((16, 0.5),), epochs=2)
        run_grid(FakeBackend(where, constant_error=constant_error), grid, where / "fig4", progress=False)
        write_report({"fig4": [where / "fig4"]}, where / "R.md", where / "docs")
        return (where / "R.md").read_text()

    warning = "No arm beat the constant (majority-class) predictor"
    assert warning in report(0.01, tmp_path / "a")  # the fake's errors (≥ 0.2) never beat 0.01
    assert warning not in report(0.45, tmp_path / "b")


def test_report_tells_how_often_online_is_switched_on(tmp_path):
    grid = specs(arms=("uniform", "online"), seeds=(0,), cells=((4, 0.5),), epochs=2)
    run_grid(FakeBackend(tmp_path), grid, tmp_path / "fig4", progress=False)
    write_report({"fig4": [tmp_path / "fig4"]}, tmp_path / "R.md", tmp_path / "docs")
    logged = load_grid(tmp_path / "fig4")
    last = next(log for log in logged if log.spec.arm == "online").records[-1]
    share = last["online_is_updates"] / last["online_updates"]
    assert f"| b=4, λ=0.5 | 1 | {share:.3g} | {last['online_tau']:.3g} |" in (tmp_path / "R.md").read_text()


def test_report_summarises_the_gradient_variance_ratio(tmp_path):
    grid = specs(arms=("uniform", "is-paper"), seeds=(0, 1, 2), cells=((16, 0.5),), epochs=4)
    run_grid(FakeBackend(tmp_path, log_grad_variance=True), grid, tmp_path / "fig4", progress=False)
    output = tmp_path / "REPLICATION.md"
    write_report({"fig4": [tmp_path / "fig4"]}, output, tmp_path / "docs")
    section = output.read_text().split("### Does P reduce the gradient variance?")[1].split("###")[0]
    rows = [line for line in section.splitlines() if line.startswith("| b=16")]
    assert rows == ["| b=16, λ=0.5 | is-paper | 3 | 0.5 | 0.5 | 0.5 | 0.5 | 0.5 | 1 |"]


class SampleRankingBackend(FakeBackend):
    """A FIM whose norm scores rank the samples alike under every seed and whose displacement scores
    reverse their ranking from one seed to the next."""

    def mine_importance(self, spec, workdir, n_jobs=1, parallel=None):
        rank = np.arange(1.0, N_TRAIN + 1)
        displacement = rank if spec.seed % 2 == 0 else rank[::-1]
        return FimOutcome(p={"norm": rank / rank.sum(), "displacement": displacement / displacement.sum()},
                          private_steps=PRIVATE_STEPS, info={"n_train": N_TRAIN})


def test_report_says_how_alike_two_seeds_fims_rank_the_samples(tmp_path):
    grid = specs(arms=("uniform", "is-paper"), seeds=(0, 1), cells=((16, 0.5),), epochs=2)
    run_grid(SampleRankingBackend(tmp_path), grid, tmp_path / "fig4", progress=False)
    write_report({"fig4": [tmp_path / "fig4"]}, tmp_path / "R.md", tmp_path / "docs")
    section = (tmp_path / "R.md").read_text().split("### Importance (FIM)")[1].split("###")[0]
    assert "- b16_subset20, seeds 0 and 1: displacement -1, norm 1" in section.splitlines()


def test_report_shows_how_far_from_1_a_variance_ratio_is_that_rounds_to_1(tmp_path):
    grid = specs(arms=("uniform", "is-paper"), seeds=(0,), cells=((16, 0.5),), epochs=2)
    run_grid(FakeBackend(tmp_path, log_grad_variance=True, grad_var_ratio=1 - 7.7e-7), grid, tmp_path / "fig4",
             progress=False)
    write_report({"fig4": [tmp_path / "fig4"]}, tmp_path / "R.md", tmp_path / "docs")
    assert "| b=16, λ=0.5 | is-paper | 1 | 1 − 7.7e-07 | 1 − 7.7e-07 | 1 − 7.7e-07 | 1 − 7.7e-07 | 1 − 7.7e-07 | 1 |" \
        in (tmp_path / "R.md").read_text()


def test_a_verdict_from_too_few_seeds_says_it_is_a_direction_only(tmp_path):
    def verdict_line(seeds, where):
        grid = specs(arms=("uniform", "is-paper"), seeds=seeds, cells=((16, 0.5),), epochs=3)
        run_grid(FakeBackend(where), grid, where / "fig4", progress=False)
        write_report({"fig4": [where / "fig4"]}, where / "R.md", where / "docs")
        section = (where / "R.md").read_text().split("#### Claim: IS valid err drops faster")[1]
        return next(l for l in section.splitlines() if l.startswith("- **IS, FIM norm (paper):"))

    (tmp_path / "two").mkdir()
    (tmp_path / "six").mkdir()
    assert "a direction, not evidence" in verdict_line((0, 1), tmp_path / "two")
    assert "a direction, not evidence" not in verdict_line(tuple(range(6)), tmp_path / "six")


def test_report_puts_the_hand_written_summary_first(tmp_path):
    grid = specs(arms=("uniform", "is-paper"), seeds=(0, 1, 2), cells=((16, 0.5),), epochs=4)
    run_grid(FakeBackend(tmp_path), grid, tmp_path / "fig4", progress=False)
    summary = tmp_path / "summary.md"
    summary.write_text("## Summary\n\nWhy λ = 2 was run.\n")
    output = tmp_path / "REPLICATION.md"
    write_report({"fig4": [tmp_path / "fig4"]}, output, tmp_path / "docs", summary)
    text = output.read_text()
    assert text.index("Why λ = 2 was run.") < text.index("## Figure 4")


def test_a_finished_grid_asked_for_more_epochs_continues_as_if_it_had_never_stopped(tmp_path):
    short, long = (specs(arms=("uniform", "is-paper"), seeds=(0,), cells=((16, 0.5),), epochs=e) for e in (2, 5))
    for name in ("extended", "straight"):
        (tmp_path / name).mkdir()
    run_grid(FakeBackend(tmp_path / "extended"), short, tmp_path / "extended_out", progress=False)
    statuses = run_grid(FakeBackend(tmp_path / "extended"), long, tmp_path / "extended_out", progress=False)
    assert set(statuses.values()) == {"done"}
    assert calls(tmp_path / "extended", "fim_calls.txt") == ["b16_subset20 0"]  # FIM is not mined again
    run_grid(FakeBackend(tmp_path / "straight"), long, tmp_path / "straight_out", progress=False)
    for spec in long:
        extended = read_log(run_dir(tmp_path / "extended_out", spec) / "log.jsonl")
        assert [r["epoch"] for r in extended] == [0, 1, 2, 3, 4, 5]
        straight = read_log(run_dir(tmp_path / "straight_out", spec) / "log.jsonl")
        assert _without_clocks(extended) == _without_clocks(straight), spec.run_id
        assert json.loads((run_dir(tmp_path / "extended_out", spec) / "spec.json").read_text())["epochs"] == 5
        assert f"{spec.run_id} resumed after 2" in calls(tmp_path / "extended", "train_calls.txt")  # not retrained


def test_a_finished_run_is_neither_shortened_nor_extended_without_its_checkpoint(tmp_path):
    grid = specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),), epochs=3)
    run_grid(FakeBackend(tmp_path), grid, tmp_path / "out", progress=False)
    directory = run_dir(tmp_path / "out", grid[0])
    log_before = (directory / "log.jsonl").read_text()
    shorter = specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),), epochs=2)
    assert "logged 3 epochs; it cannot be shortened" in run_grid(FakeBackend(tmp_path), shorter, tmp_path / "out",
                                                                 progress=False)[grid[0].run_id]
    (directory / "checkpoint.pkl").unlink()
    longer = specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),), epochs=4)
    assert "no checkpoint" in run_grid(FakeBackend(tmp_path), longer, tmp_path / "out", progress=False)[grid[0].run_id]
    assert (directory / "log.jsonl").read_text() == log_before and (directory / "done").exists()
    assert run_grid(FakeBackend(tmp_path), grid, tmp_path / "out", progress=False) == {grid[0].run_id: "skipped"}


def test_a_grid_is_resumed_only_with_the_float_type_it_was_started_with(tmp_path):
    from dltutorials_is.errors import SettingError

    grid = specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),), epochs=2)
    backend = FakeBackend(tmp_path)
    backend.floatX = "float32"
    run_grid(backend, grid, tmp_path / "out", progress=False)
    assert json.loads((tmp_path / "out" / "grid.json").read_text())["floatX"] == "float32"
    backend.floatX = "float64"
    with pytest.raises(SettingError, match="grid of --floatX float32 runs"):
        run_grid(backend, grid, tmp_path / "out", progress=False)
    manifest = json.loads((tmp_path / "out" / "grid.json").read_text())
    del manifest["floatX"]  # a grid from before the float type was recorded: float64, as every one was
    (tmp_path / "out" / "grid.json").write_text(json.dumps(manifest))
    assert run_grid(backend, grid, tmp_path / "out", progress=False) == {grid[0].run_id: "skipped"}


def test_a_grid_run_in_pieces_lists_every_command_and_every_run_asked_for(tmp_path):
    uniform = specs(arms=("uniform",), seeds=(0, 1), cells=((16, 0.5),), epochs=2)
    online = specs(arms=("online",), seeds=(1,), cells=((16, 0.5),), epochs=2)
    for grid, command in ((uniform, "uniform"), (online, "online"), (uniform[:1], "uniform")):
        run_grid(FakeBackend(tmp_path), grid, tmp_path / "out", command=command, progress=False)
    manifest = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert manifest["commands"] == ["uniform", "online"]
    assert manifest["specs"] == [asdict(s) for s in uniform + online]


def test_a_grid_folder_takes_one_figure_in_the_grid_and_in_the_report(tmp_path):
    from dltutorials_is.errors import SettingError

    fig4 = specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),), epochs=2)
    run_grid(FakeBackend(tmp_path), fig4, tmp_path / "fig4", progress=False)
    manifest = (tmp_path / "fig4" / "grid.json").read_text()
    fig6 = specs(arms=("uniform",), seeds=(0,), cells=((50, 0.3),), epochs=2, figure="fig6")
    with pytest.raises(SettingError, match="is a fig4 grid; give the fig6 grid another --out"):
        run_grid(FakeBackend(tmp_path, figure="fig6"), fig6, tmp_path / "fig4", progress=False)
    assert (tmp_path / "fig4" / "grid.json").read_text() == manifest
    assert not run_dir(tmp_path / "fig4", fig6[0]).exists()
    with pytest.raises(SettingError, match="is a fig4 grid: pass it with --fig4, not --fig6"):
        write_report({"fig6": [tmp_path / "fig4"]}, tmp_path / "R.md", tmp_path / "docs")
    assert not (tmp_path / "R.md").exists()


def test_an_unfinished_run_can_be_asked_to_stop_earlier_than_first_planned(tmp_path):
    first, second = (specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),), epochs=e) for e in (6, 3))
    backend = FakeBackend(tmp_path, crash=(first[0].run_id, 2))  # killed after logging epoch 1 of 6
    run_grid(backend, first, tmp_path / "out", progress=False)
    assert run_grid(backend, second, tmp_path / "out", progress=False) == {second[0].run_id: "done"}
    (tmp_path / "clean").mkdir()
    run_grid(FakeBackend(tmp_path / "clean"), second, tmp_path / "clean_out", progress=False)
    shortened = read_log(run_dir(tmp_path / "out", second[0]) / "log.jsonl")
    assert [r["epoch"] for r in shortened] == [0, 1, 2, 3]
    assert _without_clocks(shortened) == _without_clocks(read_log(run_dir(tmp_path / "clean_out", second[0]) / "log.jsonl"))


def _without_clocks(records):
    return [{k: v for k, v in r.items() if not k.endswith("wall_s")} for r in records]


def test_grid_on_a_dask_cluster_survives_a_killed_worker_with_the_logs_of_a_serial_run(tmp_path):
    """A real scheduler and two worker processes on localhost; one worker is killed (SIGKILL) while it
    trains a run. The run is rescheduled, resumes from its checkpoint, and every log equals a serial run's."""
    from distributed import LocalCluster

    grid = specs(arms=("uniform", "online", "is-paper"), seeds=(0, 1), cells=((8, 0.5),), epochs=5)
    for name in ("serial", "dask"):
        (tmp_path / name).mkdir()
    run_grid(FakeBackend(tmp_path / "serial"), grid, tmp_path / "serial_out", progress=False)

    out, state = tmp_path / "dask_out", tmp_path / "dask"
    backend = FakeBackend(state, epoch_seconds=0.3)
    statuses = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with parallel_backend(None, cluster.scheduler_address, 2) as parallel:
            runner = threading.Thread(target=lambda: statuses.update(
                run_grid(backend, grid, out, n_jobs=2, progress=False, parallel=parallel)))
            runner.start()
            killed, deadline = None, time.monotonic() + 120
            while killed is None and time.monotonic() < deadline:
                for line in calls(state, "pids.txt"):
                    run_id, pid = line.split()
                    directory = out / "runs" / run_id
                    if 2 <= len(read_log(directory / "log.jsonl")) <= 3:  # epochs 1-2 of 5 logged: mid-run
                        os.kill(int(pid), signal.SIGKILL)
                        killed = run_id
                        break
                time.sleep(0.05)
            runner.join(timeout=180)
    assert killed is not None, "no run was caught mid-way"
    assert not runner.is_alive() and set(statuses.values()) == {"done"}, statuses
    assert calls(state, "train_calls.txt").count(killed) == 2  # prepared again on a live worker ...
    assert any(line.startswith(f"{killed} resumed after ") for line in calls(state, "train_calls.txt"))  # ... resumed
    for spec in grid:
        serial = read_log(run_dir(tmp_path / "serial_out", spec) / "log.jsonl")
        assert _without_clocks(read_log(run_dir(out, spec) / "log.jsonl")) == _without_clocks(serial), spec.run_id


def test_a_checkpoint_of_an_older_version_restarts_its_run_with_a_message(tmp_path, capsys):
    grid = specs(arms=("uniform",), seeds=(0,), cells=((16, 0.5),), epochs=3)
    directory = run_dir(tmp_path / "out", grid[0])
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text(json.dumps(asdict(grid[0])))
    (directory / "log.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    with open(directory / "checkpoint.pkl", "wb") as f:  # the layout the backends' own loops wrote
        pickle.dump({"epoch": 1, "backend": {"value": 0.3}, "rng": None, "counters": {}, "sampler_state": None}, f)
    assert run_grid(FakeBackend(tmp_path), grid, tmp_path / "out", progress=False) == {grid[0].run_id: "done"}
    assert "not a checkpoint of this version; the run starts over" in capsys.readouterr().err
    assert calls(tmp_path, "train_calls.txt") == [grid[0].run_id]  # prepared once, never resumed
    assert [r["epoch"] for r in read_log(directory / "log.jsonl")] == [0, 1, 2, 3]
