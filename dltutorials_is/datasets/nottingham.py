"""The Nottingham folk-tune data set as the RNN-RBM tutorial used it: one piano-roll per MIDI file."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .download import DataError, default_data_dir
from .midi import MidiError, midiread

SPLITS = ("train", "valid", "test")
EXPECTED_FILES = {"train": 694, "valid": 173, "test": 170}
PREPARE_COMMAND = "python data/prepare_nottingham.py"


def prepare_command(data_dir: Path | None) -> str:
    """The command that fetches the data into `data_dir` (the default data folder when None)."""
    return PREPARE_COMMAND if data_dir is None else f"{PREPARE_COMMAND} --data-dir {data_dir}"


def split_dir(data_dir: Path | None, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return Path(data_dir or default_data_dir()) / "Nottingham" / split


def split_files(data_dir: Path | None, split: str) -> list[Path]:
    """The split's MIDI files in sorted order (the tutorial took `glob` order, which is the OS's)."""
    folder = split_dir(data_dir, split)
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist: fetch the Nottingham data with `{prepare_command(data_dir)}`")
    files = sorted(folder.glob("*.mid"))
    if not files:
        raise DataError(f"{folder} holds no .mid files: fetch the Nottingham data with `{prepare_command(data_dir)}`")
    return files


def load_nottingham(
    data_dir: Path | None = None,
    split: str = "train",
    r: tuple[int, int] = (21, 109),
    dt: float = 0.3,
    on_bad: str = "error",
    dtype: str = "float64",
) -> list[np.ndarray]:
    """Piano-rolls (frames x (r[1]-r[0]), 0/1) of one split, one per song, in sorted file order.

    on_bad="error" stops at the first unreadable file, naming it; on_bad="skip" leaves such files
    out with one warning that counts and names them. An empty result is always an error.
    """
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', not {on_bad!r}")
    rolls, skipped = [], []
    for path in split_files(data_dir, split):
        try:
            rolls.append(midiread(path, r, dt).piano_roll.astype(dtype))
        except MidiError as error:
            if on_bad == "error":
                raise DataError(f"{error} — run with --on-bad skip to leave such files out (on_bad='skip' from "
                                f"Python), or fetch the data again with `{prepare_command(data_dir)}`") from error
            skipped.append(path.name)
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable MIDI file(s) in {split_dir(data_dir, split)}: {shown}")
    if not rolls:
        raise DataError(
            f"the {split} set in {split_dir(data_dir, split)} is empty after skipping "
            f"{len(skipped)} unreadable file(s): re-fetch it with `{prepare_command(data_dir)}`"
        )
    return rolls


def unreadable_files(data_dir: Path | None = None, r: tuple[int, int] = (21, 109), dt: float = 0.3) -> list[str]:
    """`"<split>/<file>: <reason>"` for every MIDI file of the three splits that does not read into a
    piano-roll (truncated, corrupt, no notes), at the tutorial's `r` and `dt`."""
    bad = []
    for split in SPLITS:
        for path in split_files(data_dir, split):
            try:
                midiread(path, r, dt)
            except MidiError as error:
                reason = str(error).removeprefix(f"{path}: ")
                bad.append(f"{split}/{path.name}: {reason}")
    return bad
