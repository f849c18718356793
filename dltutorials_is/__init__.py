"""Aesara port of the deeplearning.net LSTM and RNN-RBM tutorials, with Fast Importance Mining."""

__version__ = "0.1.0"

from dltutorials_is import backend as _backend  # noqa: E402  (must run before aesara is imported)

_backend.configure()
