"""`theano.tensor` → `aesara.tensor`, plus `grad` (Theano exported it from here)."""
import aesara.tensor as _at
from aesara import grad  # noqa: F401

from . import nnet  # noqa: F401


def __getattr__(name):
    return getattr(_at, name)
