"""The tutorial's three optimisers, each split into two compiled functions.

`f_grad_shared(*inputs) -> cost` computes the minibatch cost and stores the gradients (and the
optimiser's running averages) in shared variables; `f_update(lr)` then moves the parameters.
The split lets the training loop look at the cost before the parameters change.

The arithmetic is the tutorial's, operation for operation, with one change of spelling:
squares are written `at.square(g)` where the tutorial wrote `g ** 2`. Theano rewrote `g ** 2`
into `sqr(g)` anyway, so the numbers are the same; in Aesara 2.9.4 the rewrite that does this
(`local_pow_specialize`) fails an assertion when `g` is a `Gemm` output whose static shape is more
precise than the `pow` node's, and without the rewrite `pow(g, 2)` is computed by C `pow`, which
differs from `g * g` in the last bit for about one value in 1200.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, NamedTuple

import numpy as np
import aesara
import aesara.tensor as at


def _state(tparams: OrderedDict, suffix: str) -> list:
    """One zero-initialised shared variable per parameter, named `<param>_<suffix>`."""
    return [aesara.shared(np.zeros_like(p.get_value()), name=f"{name}_{suffix}") for name, p in tparams.items()]


class Optimiser(NamedTuple):
    """The tutorial's pair, plus where the optimiser keeps its state (so a model can save and restore it).

    `gradients`: the shared variables `f_grad_shared` stores the minibatch's gradient in, in parameter
    order; `accumulators`: every shared variable the optimiser owns, `gradients` included.
    """

    f_grad_shared: Callable
    f_update: Callable
    gradients: list
    accumulators: list


def _compile(name: str, inputs: list, cost, gradient_updates: list, lr, parameter_updates: list,
             gradients: list, accumulators: list) -> Optimiser:
    """The two functions every optimiser returns (see the module docstring)."""
    f_grad_shared = aesara.function(inputs, cost, updates=gradient_updates, name=f"{name}_f_grad_shared")
    f_update = aesara.function([lr], [], updates=parameter_updates, on_unused_input="ignore", name=f"{name}_f_update")
    return Optimiser(f_grad_shared, f_update, gradients, accumulators)


def sgd(lr, tparams: OrderedDict, grads: list, inputs: list, cost) -> Optimiser:
    """Plain SGD: p ← p − lr·g."""
    gshared = _state(tparams, "grad")
    parameter_updates = [(p, p - lr * g) for p, g in zip(tparams.values(), gshared)]
    return _compile("sgd", inputs, cost, list(zip(gshared, grads)), lr, parameter_updates, gshared, gshared)


def adadelta(lr, tparams: OrderedDict, grads: list, inputs: list, cost) -> Optimiser:
    """ADADELTA (Zeiler, 2012; decay 0.95, ε 1e-6). Ignores `lr`, as in the tutorial."""
    zipped_grads = _state(tparams, "grad")
    running_up2 = _state(tparams, "rup2")
    running_grads2 = _state(tparams, "rgrad2")
    gradient_updates = [(zg, g) for zg, g in zip(zipped_grads, grads)]
    gradient_updates += [(rg2, 0.95 * rg2 + 0.05 * at.square(g)) for rg2, g in zip(running_grads2, grads)]

    updir = [
        -at.sqrt(ru2 + 1e-6) / at.sqrt(rg2 + 1e-6) * zg
        for zg, ru2, rg2 in zip(zipped_grads, running_up2, running_grads2)
    ]
    parameter_updates = [(ru2, 0.95 * ru2 + 0.05 * at.square(ud)) for ru2, ud in zip(running_up2, updir)]
    parameter_updates += [(p, p + ud) for p, ud in zip(tparams.values(), updir)]
    return _compile("adadelta", inputs, cost, gradient_updates, lr, parameter_updates, zipped_grads,
                    zipped_grads + running_up2 + running_grads2)


def rmsprop(lr, tparams: OrderedDict, grads: list, inputs: list, cost) -> Optimiser:
    """RMSProp as in the tutorial: gradients scaled by a running estimate of their standard
    deviation, with momentum 0.9. Ignores `lr`: the step size 1e-4 is fixed, as in the tutorial."""
    zipped_grads = _state(tparams, "grad")
    running_grads = _state(tparams, "rgrad")
    running_grads2 = _state(tparams, "rgrad2")
    gradient_updates = [(zg, g) for zg, g in zip(zipped_grads, grads)]
    gradient_updates += [(rg, 0.95 * rg + 0.05 * g) for rg, g in zip(running_grads, grads)]
    gradient_updates += [(rg2, 0.95 * rg2 + 0.05 * at.square(g)) for rg2, g in zip(running_grads2, grads)]

    updir = _state(tparams, "updir")
    new_updir = [
        0.9 * ud - 1e-4 * zg / at.sqrt(rg2 - at.square(rg) + 1e-4)
        for ud, zg, rg, rg2 in zip(updir, zipped_grads, running_grads, running_grads2)
    ]
    parameter_updates = list(zip(updir, new_updir))
    parameter_updates += [(p, p + step) for p, step in zip(tparams.values(), new_updir)]
    return _compile("rmsprop", inputs, cost, gradient_updates, lr, parameter_updates, zipped_grads,
                    zipped_grads + running_grads + running_grads2 + updir)


OPTIMISERS = {"sgd": sgd, "adadelta": adadelta, "rmsprop": rmsprop}


def get_optimiser(name: str) -> Callable:
    """`sgd`, `adadelta` or `rmsprop` by name."""
    if name not in OPTIMISERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMISERS)}")
    return OPTIMISERS[name]
