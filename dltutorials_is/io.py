"""Files that survive a kill, and fingerprints of what a result was computed from.

Atomic writes: a killed run leaves either the old file or the complete new one, never half. JSON-lines
logs: one record per line, appended and fsynced, so a kill leaves only whole lines (and a cut last line
is dropped when read back). Fingerprints: a SHA-256 over data and settings, so a saved result can tell
whether it belongs to the data it is asked to serve.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: Path | str, write: Callable, mode: str = "wb") -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's private 0600 is not what a saved result should have
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_pickle(obj, path: Path | str, protocol: int = 4) -> None:
    write_atomically(path, lambda f: pickle.dump(obj, f, protocol=protocol))


def atomic_write_text(path: Path | str, text: str) -> None:
    write_atomically(path, lambda f: f.write(text), mode="w")


def append_json_line(path: Path | str, record: dict) -> None:
    """Append one record to a JSON-lines log, on disk before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_lines(path: Path | str) -> list[dict]:
    """The whole lines of a JSON-lines log; a line cut short by a kill (and what follows) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def rewrite_json_lines(path: Path | str, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def fingerprint(*parts) -> str:
    """SHA-256 over arrays, sequences of integer sequences, scalars and strings, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (str, bytes, int, float)) or part is None:
            h.update(repr(part).encode())
            continue
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
        else:  # a list of sequences (e.g. reviews as word-index lists)
            seqs = [np.asarray(s, dtype="int64").ravel() for s in part]
            lengths = np.array([len(s) for s in seqs], dtype="int64")
            h.update(b"seqs" + lengths.tobytes())
            arr = np.concatenate(seqs) if seqs else np.zeros(0, "int64")
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()
