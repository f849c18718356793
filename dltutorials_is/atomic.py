"""Atomic file writes: a killed run leaves either the old file or the complete new one, never half."""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable


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
