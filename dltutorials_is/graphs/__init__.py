"""Symbolic Aesara graphs: a model is (params, inputs, per-sample losses, monitors); nothing is compiled here."""
