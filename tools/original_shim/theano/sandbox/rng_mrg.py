"""Theano's `MRG_RandomStreams` is Aesara's `MRG_RandomStream` (same generator, same streams)."""
from aesara.sandbox.rng_mrg import MRG_RandomStream as MRG_RandomStreams  # noqa: F401
