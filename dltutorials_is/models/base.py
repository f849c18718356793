"""What every consumer of a model relies on: the training loop, FIM, the variance probe, the replication
and the benchmarks.

A model is one tutorial's network *bound to a training set*: a training step names samples by their
index in that set, so samplers (which only ever see indices) and the model meet in one call,
`train_step(indices, weights)`. The model owns its compiled functions and its whole state (parameters,
optimiser accumulators, random streams), so nobody outside wires graph → gradient → optimiser, and a
checkpoint is `get_state()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np

from dltutorials_is.errors import UserError


@dataclass(frozen=True)
class StepResult:
    """What one training step reports, measured *before* its update (the tutorials' convention).

    `monitor` is a model's own training diagnostic (the RNN-RBM's pseudo-log-likelihood), if it has one.
    `params_finite` is False when the update made a parameter NaN or infinite although the cost was
    finite (a step size far too large); `applied` is False when the model did not apply (or undid) the
    update because of a non-finite cost or parameters.
    """

    cost: float
    monitor: float | None = None
    params_finite: bool = True
    applied: bool = True

    @property
    def finite(self) -> bool:
        """The cost is finite and so are the parameters after the step: training can go on."""
        return bool(np.isfinite(self.cost)) and self.params_finite


class Model(Protocol):
    """The interface (structural: the two models do not inherit from it).

    train_step(indices, weights): one update on those training samples, sample `indices[k]` weighed
        by `weights[k]`; a step whose cost is not finite is *not applied* (the parameters stay the
        last good ones), so the loop can stop and still save a usable model. A step that makes a
        parameter NaN or infinite is reported (`StepResult.params_finite`), and undone if the model
        can afford to (`StepResult.applied`).
    losses(indices): per-sample losses (>= 0) of those training samples at the current parameters,
        without updating them (online importance sampling scores with it).
    gradient(index): one training sample's gradient, by parameter name, at the current parameters in
        evaluation mode; the model's state, random streams included, is the same afterwards.
    base_matrices(params): the matrices FIM can score (`BASES`, the paper's first), from parameter values.
    get_params() / set_params(values): the parameter values by name.
    get_state() / set_state(state): everything that continues a run exactly (parameters, optimiser
        accumulators, random streams); picklable numpy values.
    reset(seed, rng): the tutorial's W(0) and random streams for `seed` (W(0) drawn from `rng` when
        given, as the tutorial's loop shares one RandomState); optimiser accumulators zeroed.
    set_step_size(value): the step size of the next updates.
    """

    BASES: tuple[str, ...]
    n_train: int

    def train_step(self, indices: np.ndarray, weights: np.ndarray) -> StepResult: ...

    def losses(self, indices: Sequence[int]) -> np.ndarray: ...

    def gradient(self, index: int) -> Mapping[str, np.ndarray]: ...

    def base_matrices(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def get_params(self) -> dict[str, np.ndarray]: ...

    def set_params(self, values: Mapping[str, np.ndarray]) -> None: ...

    def get_state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...

    def reset(self, seed: int, rng: np.random.RandomState | None = None) -> None: ...

    def set_step_size(self, value: float) -> None: ...


class ModelStateError(UserError, ValueError):
    """A saved state or parameter set that does not fit this model; the message says why."""


def stream_states(srng) -> list[np.ndarray]:
    """Copies of every sub-stream state of an MRG random stream, in creation order."""
    return [state.get_value() for state, *_ in srng.state_updates]


def set_stream_states(srng, states: Sequence[np.ndarray]) -> None:
    """Put back what `stream_states` returned (for the same graphs, so the same streams)."""
    if len(states) != len(srng.state_updates):
        raise ModelStateError(f"the saved state has {len(states)} random streams, this model {len(srng.state_updates)}")
    for (state, *_), value in zip(srng.state_updates, states):
        state.set_value(np.asarray(value, dtype=state.dtype))


def reseed_first_streams(srng, seed: int, n_used: int) -> None:
    """`srng.seed(seed)` for the first `n_used` sub-streams of every random state only, ~100× faster.

    A sample of n ≤ `n_used` numbers reads only the first n sub-streams (an MRG state for a symbolic
    shape holds 15,360 of them), so what it draws is the same as after a full `srng.seed(seed)`.
    FIM reseeds a private model's stream for every sample, where this is what makes it cheap.
    """
    srng.set_rstate(seed)
    for state_var, new_state, _, _ in srng.state_updates:
        state = state_var.get_value()
        n = min(n_used, len(state))
        state[:n] = srng.get_substream_rstates(n, new_state.owner.outputs[1].dtype)
        state_var.set_value(state, borrow=True)
