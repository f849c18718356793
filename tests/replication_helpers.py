"""Tiny versions of the replication's real backends, importable by a test's subprocess.

`test_replication_engine.py` runs them in-process and in `python -c` subprocesses (which put this
folder on `sys.path`), so they live here rather than in the test module.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from dltutorials_is.datasets.midi import midiread
from dltutorials_is.datasets.nottingham import split_files
from dltutorials_is.replicate.backends import LstmBackend, RnnRbmBackend
from dltutorials_is.replicate.grid import run_grid
from dltutorials_is.replicate.specs import grid_specs

#: The RNN-RBM's sizes in these tests (the tutorial's are 150 / 100 / 15).
TINY_RNNRBM = dict(n_hidden=7, n_hidden_recurrent=5, k=2)

#: The fig6 grid of these tests: the first 2 training songs (17 chunks of 20 frames), 4 epochs.
RNNRBM_SPECS = grid_specs("fig6", [(20, 0.01)], ["uniform", "online"], [5], epochs=4, train_subset=2,
                          subset_mode="first")

#: Online IS switches on once its smoothed τ exceeds the break-even (B + 3b)/3b = 2 of B=3, b=1; three
#: chunks of these tiny models score alike (τ ≈ 1), so the tests lower the threshold to have IS updates
#: within 4 epochs (τ starts at 0 and passes 0.9 after about 22 updates, in the second epoch).
ONLINE_OPTIONS = {"tau_threshold": 0.9}

#: The LSTM's options in these tests: sizes shrunk, everything else the replication's.
TINY_LSTM = dict(LstmBackend.OPTIONS, dim_proj=4, n_words=30, maxlen=20, valid_batch_size=8)


class Watched:
    """Mixin for a backend: watch each epoch's metrics call (made at the end of every epoch, and for
    epoch 0 before training) without changing a number the run computes.

    delay: seconds to sleep there, so a subprocess can be killed in the middle of a run.
    states: if not None, `states[run_id]` gets the model's state (`get_state()`: parameters, random
        streams, ...) at every epoch's end, epoch 0's (W(0)) first (in-process runs only:
        `run_grid(..., n_jobs=1)`).
    """

    delay: float = 0.0
    states: dict | None = None

    def prepare(self, spec, rng):
        experiment = super().prepare(spec, rng)
        measure = experiment.metrics

        def metrics(ctx):
            values = measure(ctx)
            if self.states is not None:
                self.states.setdefault(spec.run_id, []).append(experiment.model.get_state())
            if self.delay:
                time.sleep(self.delay)
            return values

        experiment.metrics = metrics
        return experiment


class TinyRnnRbmBackend(Watched, RnnRbmBackend):
    """`RnnRbmBackend` with a tiny model (the spec's step size, batch size and seed, as the real one)
    and `ONLINE_OPTIONS`.

    With `subset_mode="first"`, `songs` reads only the first `train_subset` MIDI files, as the real
    one reads all 694 (5 s) before keeping them; the test checks it gives the same songs.
    """

    def __init__(self, data_dir=None, floatX="float64", delay: float = 0.0, record: bool = False):
        super().__init__(data_dir, floatX, grad_variance_samples=4)
        self.delay = delay
        self.states = {} if record else None

    def config(self, spec):
        return replace(super().config(spec), **TINY_RNNRBM)

    def songs(self, spec):
        if spec.subset_mode != "first" or spec.train_subset is None:
            return super().songs(spec)
        config = self.config(spec)
        return [midiread(path, config.r, config.dt).piano_roll.astype(self.floatX)
                for path in split_files(self.data_dir, "train")[:spec.train_subset]]

    def prepare(self, spec, rng):
        experiment = super().prepare(spec, rng)
        experiment.online_options = {**experiment.online_options, **ONLINE_OPTIONS}
        return experiment


class TinyLstmBackend(Watched, LstmBackend):
    """`LstmBackend` with a tiny LSTM (`TINY_LSTM`), on the imdb.pkl in `data_dir`."""

    OPTIONS = TINY_LSTM

    def __init__(self, data_dir, floatX="float64", record: bool = False):
        super().__init__(data_dir, floatX, grad_variance_samples=4)
        self.states = {} if record else None


def run_rnnrbm_grid(out, delay: float = 0.0) -> dict:
    """`RNNRBM_SPECS` into `out`, serially; the runs' statuses (what a test's subprocess calls)."""
    return run_grid(TinyRnnRbmBackend(delay=delay), RNNRBM_SPECS, Path(out), n_jobs=1, progress=False)
