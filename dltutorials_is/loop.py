"""The one training loop, for both models, the tutorials and the replication alike.

    for epoch:
        for (indices, weights) in sampler.epoch(rng):
            step = model.train_step(indices, weights)
            stop if the cost or the new parameters are not finite
            hooks.after_update(...)
        hooks.end_epoch(...)

What differs between the tutorials' printing, mid-epoch validation, saving and early stopping, the
RNN-RBM's no-update evaluation and the replication's metrics and checkpoints is a `Hook`, not a copy of
this loop. The divergence policy lives here once: a non-finite cost, or a step that made the parameters
non-finite, stops training with `TrainingDiverged`, after every hook's `diverged` has seen the model
(still the last good one unless the step says it was applied).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from dltutorials_is.errors import UserError
from dltutorials_is.models.base import Model, StepResult


class TrainingDiverged(UserError, RuntimeError):
    """The cost, or the parameters after a step, became NaN or infinite; the message says whether the
    step was applied."""


def divergence_message(step: StepResult, epoch: int, updates: int, indices) -> str:
    where = f"at epoch {epoch + 1}, update {updates} (samples {np.asarray(indices).tolist()[:8]})"
    if not np.isfinite(step.cost):
        what = f"the cost became {step.cost} {where}"
    else:
        what = f"the step {where} made the parameters NaN or infinite, although its cost {step.cost} was finite"
    applied = "that update was not applied" if not step.applied else "that update could not be undone"
    return f"{what}; {applied} — lower the step size (or check the data) and train again"


@dataclass
class Progress:
    """Where the loop is; hooks read it and may set `stop`."""

    epoch: int  # 0-based index of the current epoch
    updates: int = 0  # updates done since `fit` was called
    samples: int = 0  # samples the current epoch's updates trained on
    indices: np.ndarray | None = None  # the last update's samples, weights and result
    weights: np.ndarray | None = None
    step: StepResult | None = None
    batches: object = ()  # the current epoch's `sampler.epoch(rng)`: a list, or a sized lazy iterable
    stop: bool = False  # set by a hook: finish this update, skip the rest of the run
    interrupted: bool = False  # Ctrl+C ended the run


class Hook:
    """Override what you need; every method gets the model and the loop's `Progress`."""

    def start_epoch(self, model: Model, progress: Progress) -> None:
        pass

    def after_update(self, model: Model, progress: Progress) -> None:
        pass

    def end_epoch(self, model: Model, progress: Progress) -> None:
        """Called after every epoch, also one a hook stopped early (`progress.stop`), not an interrupted one."""

    def diverged(self, model: Model, progress: Progress) -> None:
        """The last step's cost, or the parameters after it, were not finite (`progress.step`); unless
        `progress.step.applied`, the model still holds the parameters before it."""


def fit(model: Model, sampler, rng: np.random.RandomState, epochs: int, hooks: list[Hook] = (),
        start_epoch: int = 0, progress_bar: bool = True) -> Progress:
    """Train `model` for epochs `start_epoch` .. `epochs - 1` on the batches `sampler.epoch(rng)` draws.

    Returns the final `Progress` (its `stop` set when a hook stopped the run, `interrupted` on Ctrl+C,
    which ends the run after the current update like the tutorials). Raises `TrainingDiverged`.
    """
    state = Progress(epoch=start_epoch)
    try:
        for epoch in range(start_epoch, epochs):
            state.epoch, state.samples, state.batches = epoch, 0, sampler.epoch(rng)
            for hook in hooks:
                hook.start_epoch(model, state)
            bar = tqdm(state.batches, desc=f"epoch {epoch + 1}", unit="update", leave=False, file=sys.stderr,
                       disable=None if progress_bar else True)
            for indices, weights in bar:
                step = model.train_step(indices, weights)
                state.indices, state.weights, state.step = indices, weights, step
                state.updates += 1
                state.samples += len(indices)
                if not step.finite:
                    for hook in hooks:
                        hook.diverged(model, state)
                    raise TrainingDiverged(divergence_message(step, epoch, state.updates, indices))
                for hook in hooks:
                    hook.after_update(model, state)
                if state.stop:
                    break
            bar.close()
            for hook in hooks:
                hook.end_epoch(model, state)
            if state.stop:
                break
    except KeyboardInterrupt:
        state.interrupted = True
    return state
