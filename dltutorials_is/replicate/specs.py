"""What a replication grid is made of: the figures' default grids, one run's spec, and where it lives.

A grid is the product of cells (batch size × step size), arms and seeds (`grid_specs`). Cost
accounting (Krause et al. 2015): a training update on B samples costs 3·B forward-pass units
(forward + backward ≈ 3 forwards); a FIM private step on one sample costs 3; the online sampler's
scoring pass costs 1 per scored sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

UNITS_PER_UPDATE_SAMPLE = 3  # forward + backward of one sample, in forward passes
UNITS_PER_FIM_STEP = 3
DEFAULT_ARMS = ("uniform", "replacement", "is-paper", "is-best", "online")
PAPER_SCORE = "norm"
#: Every arm a grid can run: the defaults and IS with P from one FIM score kind (`fim.driver.SCORE_KINDS`).
ARMS = DEFAULT_ARMS + ("is-norm", "is-displacement", "is-path", "is-grad0")


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
        metric_labels={"train_err": "training error", "valid_err": "validation error", "train_auc": "training AUC",
                       "valid_auc": "validation AUC"},
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


def run_dir(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / spec.run_id


def fim_dir(out: Path, protocol_key: str, seed: int) -> Path:
    return out / "fim" / protocol_key / f"seed{seed}"
