"""Files that survive a kill, and fingerprints of what a result was computed from.

Output checks: `check_writable` and `check_writable_dir` try, before a command spends any work, that
its outputs can be written where they will be, so a bad path fails in the first second, not after
a night of training. Atomic writes: a killed run leaves either the old file or the complete new one,
never half. Finite checks: `require_finite` refuses to save parameters holding NaN or inf. JSON-lines
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

from dltutorials_is.errors import OutputError, UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _named(path: Path, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def _blocking_file(folder: Path) -> Path | None:
    """The file (not folder) standing at `folder` or at one of its ancestors, if any."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def _probe_folder(folder: Path, what: str) -> None:
    """Create `folder` if missing, then create and remove a temporary file in it."""
    blocker = _blocking_file(folder)
    if blocker is not None:
        raise OutputError(f"cannot write {what}: {blocker} is a file, not a folder — choose another path, or move "
                          "that file away")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write {what}: cannot create the folder {folder} ({error.strerror or error}) — "
                          "choose a location you can write to") from error
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.", suffix=".tmp")
    except OSError as error:
        raise OutputError(f"cannot write {what}: the folder {folder} is not writable ({error.strerror or error}) — "
                          "choose a location you can write to, or fix its permissions") from error
    os.close(fd)
    os.unlink(probe)


def check_writable(path: Path | str, flag: str | None = None) -> Path:
    """Make sure a file can be (atomically) written at `path`, before any work is spent on it.

    Creates its folder if missing and creates and removes a temporary file beside it (which is what
    `write_atomically` needs). Raises `OutputError` naming `flag` (e.g. "--saveto") and the path for a
    folder standing at `path`, a file standing where a folder must be, or a read-only location.
    """
    path = Path(path)
    what = _named(path, flag)
    if path.is_dir():
        raise OutputError(f"cannot write {what}: it is a folder — give the name of a file")
    _probe_folder(path.parent, what)
    return path


def check_writable_dir(folder: Path | str, flag: str | None = None) -> Path:
    """Make sure files can be written inside `folder` (created if missing); `OutputError` if not."""
    folder = Path(folder)
    _probe_folder(folder, _named(folder, flag))
    return folder


class NotSaved(UserError, RuntimeError):
    """Refused to save parameters holding NaN or inf; whatever was at the path is left as it was."""


def non_finite(arrays) -> list[str]:
    """The names of the arrays (a mapping) holding a NaN or an infinity."""
    return [name for name, value in arrays.items()
            if np.asarray(value).dtype.kind in "fc" and not np.all(np.isfinite(value))]


def require_finite(arrays, path: Path | str) -> None:
    """Raise `NotSaved` before `arrays` with NaN or inf could be written over `path`."""
    bad = non_finite(arrays)
    if bad:
        raise NotSaved(f"not saving {path}: {', '.join(bad)} hold NaN or inf (the training diverged) — {path} "
                       "keeps what it held; lower the step size and train again")


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
