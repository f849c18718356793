"""Minimal stand-in for `six`, used only when the real package is not installed."""
PY2, PY3 = False, True
