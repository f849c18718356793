"""Piano-roll chunks: the RNN-RBM's training samples (the paper's footnote 5).

A chunk is up to `batch_size` consecutive frames of one song; the tutorial's loop cut every song into
such chunks, in order, and took one SGD step per chunk.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dltutorials_is.io import fingerprint


def make_chunks(songs: Sequence[np.ndarray], batch_size: int) -> list[tuple[int, int]]:
    """(song index, first frame) of every chunk, song by song, as the tutorial's loop cut them."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    return [(s, start) for s, song in enumerate(songs) for start in range(0, len(song), batch_size)]


def chunk_arrays(songs: Sequence[np.ndarray], batch_size: int, dtype: str | None = None) -> list[np.ndarray]:
    """Every chunk's frames, song by song (in `dtype` if given)."""
    if dtype is not None:
        songs = [np.asarray(s, dtype=dtype) for s in songs]
    return [songs[s][start : start + batch_size] for s, start in make_chunks(songs, batch_size)]


def training_fingerprint(songs: Sequence[np.ndarray], batch_size: int) -> str:
    """Identifies the chunked training set (independent of floatX), for FIM artefacts."""
    lengths = np.array([len(s) for s in songs], dtype="int64")
    return fingerprint("rnnrbm-chunks", batch_size, lengths, np.concatenate(songs).astype("uint8"))
