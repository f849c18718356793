"""Fast Importance Mining (the paper's Algorithm 2): the model-agnostic `driver` and one private-training
plug-in per model (`lstm`, with its C kernels in `lstm_kernels`, and `rnnrbm`)."""
