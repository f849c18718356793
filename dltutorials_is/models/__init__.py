"""One model per tutorial behind one interface (`base.Model`): the LSTM classifier and the RNN-RBM,
each owning its compiled functions and its whole state."""
