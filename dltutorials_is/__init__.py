"""Aesara port of the deeplearning.net LSTM and RNN-RBM tutorials, with Fast Importance Mining."""

__version__ = "0.1.0"
