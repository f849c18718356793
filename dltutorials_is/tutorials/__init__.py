"""The two tutorials' training runs (`train_lstm`, the RNN-RBM's `train`): the one training loop with
the hooks that print, validate, stop early, evaluate and save as the originals did."""
