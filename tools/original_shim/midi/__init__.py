"""Stand-in for the RNN-RBM tutorial's `midi` package (its `midi/utils.py` reader and writer)."""
