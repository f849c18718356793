"""Files that survive a kill, and fingerprints of what a result was computed from.

Output checks: `check_writable`, `check_all_writable` and `check_writable_dir` try, before a command
spends any work, that its outputs can be written where they will be, so a bad path fails in the first
second, not after a night of training. Atomic writes: a killed run leaves either the old file or the
complete new one, never half (and the temporary file it was writing is deleted by the next write of that
file). Finite checks: `require_finite` refuses to save parameters holding NaN or inf. JSON-lines logs:
one record per line, appended and fsynced, so a kill leaves only whole lines (and a cut last line is
dropped when read back). Fingerprints: a SHA-256 over data and settings, so a saved result can tell
whether it belongs to the data it is asked to serve. Pickles from disk: `load_pickles` reads plain data
(and the few classes a caller allows) from a file nobody vouches for, without letting a garbled file
build arbitrary objects or make the unpickler allocate gigabytes. Locks: `exclusive_lock` keeps two
processes from writing one run's files at once.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import pickle
import pickletools
import re
import socket
import tempfile
import time
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
    check_all_writable([path], flag)
    return Path(path)


def check_all_writable(paths, flag: str | None = None) -> None:
    """`check_writable` for many files, each folder probed once: a series of thousands of outputs
    (say `generate.py --count 100000`) would otherwise create and remove a temporary file per name."""
    probed = set()
    for path in map(Path, paths):
        what = _named(path, flag)
        if path.is_dir():
            raise OutputError(f"cannot write {what}: it is a folder — give the name of a file")
        if path.parent not in probed:
            _probe_folder(path.parent, what)
            probed.add(path.parent)


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


#: This machine, as temporary file names spell it: the host name's first label (no dots, so a temporary
#: file of target `a` never reads as one of target `a.b`).
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"
#: A temporary file older than this is stale whoever wrote it: a writer touches its file until it renames it.
STALE_SECONDS = 3600


def _temporary_prefix(path: Path) -> str:
    """`.<name>.<host>-<pid>.`: what `write_atomically`'s temporary files for `path` start with (mkstemp
    then adds 8 random characters and `.tmp`), so a later write can tell whether their writer still runs."""
    return f".{path.name}.{_HOST}-{os.getpid()}."


def _temporary_name(name: str) -> re.Pattern:
    """The names `write_atomically` gives temporary files for a target called `name`: with the writer's
    host and pid, or (files written before they carried them) mkstemp's 8 random characters alone."""
    return re.compile(rf"\.{re.escape(name)}\.(?:(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.)?[a-z0-9_]{{8}}\.tmp")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it runs, as another user
        return True
    return True


def remove_stale_temporaries(path: Path | str, now: float | None = None) -> list[Path]:
    """Delete the temporary files that interrupted `write_atomically` calls left for target `path` (a kill
    between writing and renaming leaves one; a FIM artefact's can be hundreds of MB). Only names of
    exactly `_temporary_name`'s form for this target are candidates, and only stale ones go: written on
    this machine by a process that no longer runs, or untouched for `STALE_SECONDS` (written elsewhere,
    or before names carried the writer). Returns what was deleted."""
    path = Path(path)
    pattern, now = _temporary_name(path.name), time.time() if now is None else now
    removed = []
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        match = pattern.fullmatch(candidate.name)
        if match is None or not candidate.is_file() or candidate.is_symlink():
            continue
        mine = match["pid"] is not None and match["host"] == _HOST
        if mine and int(match["pid"]) == os.getpid():
            continue  # this process's own write of the same target (another thread): not stale
        try:
            stale = (mine and not _running(int(match["pid"]))) or now - candidate.stat().st_mtime > STALE_SECONDS
            if stale:
                candidate.unlink()
                removed.append(candidate)
        except OSError:  # gone meanwhile, or not ours to delete
            continue
    return removed


def remove_stale_temporaries_in(folder: Path | str) -> list[Path]:
    """`remove_stale_temporaries` for every target whose temporary files are in `folder` (a job resuming
    there: its targets are not all written again)."""
    names = set()
    for candidate in Path(folder).glob(".*.tmp"):
        match = re.fullmatch(r"\.(.+?)\.(?:[A-Za-z0-9-]+-\d+\.)?[a-z0-9_]{8}\.tmp", candidate.name)
        if match:
            names.add(match[1])
    return [removed for name in sorted(names) for removed in remove_stale_temporaries(Path(folder) / name)]


def write_atomically(path: Path | str, write: Callable, mode: str = "wb") -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`. Temporary files
    of earlier writes of `path` that were killed before renaming are deleted first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
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


@contextlib.contextmanager
def exclusive_lock(path: Path | str):
    """Hold an exclusive lock on the file `path` (created if missing) while the block runs; yields
    False at once, without waiting, if another process holds it (the file then says which: host and
    pid). The kernel's `flock` is released when its holder dies, even by SIGKILL, so a killed job never
    leaves a stale lock for the next one to clear by hand."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


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


# ---------------------------------------------------------------------------------------------
# Pickles from files nobody vouches for


class PickleRefused(pickle.UnpicklingError):
    """Bytes that are not a pickle this project reads: garbled, truncated, or asking for objects
    its formats never hold. The message says what and where."""


#: Opcodes none of the project's formats produce: persistent ids, the extension registry, old-style
#: instances and out-of-band buffers.
_REFUSED_OPCODES = frozenset({"PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEXT_BUFFER",
                              "READONLY_BUFFER"})
#: Opcodes that call what a GLOBAL put on the stack: only reachable when a caller allows globals.
_CALLING_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})


def _opcode_tables():
    """Per byte value: 1 + the argument size of an opcode with a fixed-size argument (or none) that needs
    no other check, else 0; and the opcode's name (None: not an opcode)."""
    steps, names = [0] * 256, [None] * 256
    for op in pickletools.opcodes:
        code = ord(op.code)
        names[code] = op.name
        n = op.arg.n if op.arg is not None else 0
        special = op.name in _REFUSED_OPCODES | _CALLING_OPCODES | _MEMO_PUTS | {"PROTO", "STOP", "FRAME"}
        if n >= 0 and not special:
            steps[code] = 1 + n
    return steps, names


_STEP, _OPCODE_NAMES = _opcode_tables()
_LENGTH_PREFIX = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
                  pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}
_ARGUMENT_SIZE = {ord(op.code): op.arg.n for op in pickletools.opcodes if op.arg is not None}


def check_pickles(data: bytes, count: int = 1, allow_globals: bool = False) -> int:
    """Walk `count` consecutive pickles in `data` opcode by opcode, building nothing; return where
    the last one ends. Raises PickleRefused for an unknown or refused opcode, an argument running past
    the end (truncation), a length or memo index no real pickle has (the C unpickler would allocate
    memory for it before noticing: a random file can make it take gigabytes), or, unless
    `allow_globals`, any opcode that imports or calls something.

    A memo index may not exceed the number of memo entries stored so far: picklers number them
    0, 1, 2, … in order, so this holds for every pickle Python (2 or 3) writes.
    """
    n, pos, done, stored = len(data), 0, 0, 0
    step_of, names, sizes = _STEP, _OPCODE_NAMES, _ARGUMENT_SIZE
    data = data if isinstance(data, bytes) else bytes(data)
    while done < count:
        try:
            while True:  # the common case, kept tight: opcodes with a fixed-size argument (or none)
                step = step_of[data[pos]]
                if not step:
                    break
                pos += step
        except IndexError:
            raise PickleRefused(f"truncated: pickle {done + 1} of {count} ends without its STOP opcode "
                                f"at byte {n}") from None
        op = data[pos]
        name, start = names[op], pos
        pos += 1
        if name is None or name in _REFUSED_OPCODES:
            what = "not a pickle opcode" if name is None else f"opcode {name}, which no file of this project holds"
            raise PickleRefused(f"byte {op:#04x} at offset {start} is {what}")
        if name in _CALLING_OPCODES and not allow_globals:
            raise PickleRefused(f"opcode {name} at offset {start} would import or call an object; "
                                "this file should hold plain data only")
        size = sizes.get(op)
        if size is None:  # no argument: STOP, MEMOIZE, STACK_GLOBAL, REDUCE, BUILD, NEWOBJ(_EX)
            pass
        elif size == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if name == "GLOBAL" else 1):
                end = data.find(b"\n", pos)
                if end < 0:
                    raise PickleRefused(f"truncated: the argument of {name} at offset {start} has no end of line")
                line, pos = data[pos:end], end + 1
            if name == "PUT" and (not line.isdigit() or len(line) > 19 or int(line) > stored):
                raise PickleRefused(f"PUT at offset {start} stores memo entry {bytes(line[:20])!r} after "
                                    f"{stored} entries")
        elif size in _LENGTH_PREFIX:
            width, signed = _LENGTH_PREFIX[size]
            length = int.from_bytes(data[pos : pos + width], "little", signed=signed)
            pos += width
            if pos > n or length < 0 or length > n - pos:
                raise PickleRefused(f"truncated or garbled: {name} at offset {start} announces {length} bytes, "
                                    f"{max(n - pos, 0)} remain")
            pos += length
        else:  # a fixed-size argument that needs a check
            value = int.from_bytes(data[pos : pos + size], "little")
            pos += size
            if pos > n:
                continue  # reported as truncated by the loop above
            if name == "PROTO" and value > pickle.HIGHEST_PROTOCOL:
                raise PickleRefused(f"PROTO at offset {start} asks for pickle protocol {value}")
            if name == "FRAME" and value > n - pos:
                raise PickleRefused(f"truncated: FRAME at offset {start} announces {value} bytes, {n - pos} remain")
            if name == "LONG_BINPUT" and value > stored:
                raise PickleRefused(f"LONG_BINPUT at offset {start} stores memo entry {value} after {stored} entries")
        if name in _MEMO_PUTS:
            stored += 1
        elif name == "STOP":
            done, stored = done + 1, 0
    return pos


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed: frozenset, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed = allowed

    def find_class(self, module: str, name: str):
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        raise PickleRefused(f"the pickle asks for {module}.{name}, which this file should not hold")


#: What pickled numpy arrays, dtypes and scalars refer to (numpy 1 and 2 spell the module differently;
#: `_frombuffer` is protocol 5's). None allocates more than the pickle's own bytes hold.
NUMPY_GLOBALS = frozenset(
    (f"numpy{core}.{module}", name)
    for core in (".core", "._core")
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
) | {("numpy", "ndarray"), ("numpy", "dtype")}


def load_pickles(data: bytes, count: int = 1, allowed_globals=frozenset(), encoding: str = "ASCII") -> list:
    """The `count` consecutive pickles in `data` (bytes read from a file), unpickled only after
    `check_pickles` found nothing a real pickle of plain data lacks, and with only the (module, name)
    pairs in `allowed_globals` importable. Without globals, what comes out is built from None, bools,
    numbers, strings, bytes, lists, tuples, dicts and sets alone.

    Raises PickleRefused, or whatever the unpickler raises for a garbled file (callers turn every
    exception into their own error: a random file can raise nearly any type)."""
    allowed = frozenset(allowed_globals)
    check_pickles(data, count, allow_globals=bool(allowed))
    # A buffered reader: the C unpickler then reads ahead (peek) instead of calling read() per opcode.
    stream = io.BufferedReader(io.BytesIO(data), buffer_size=1 << 16)
    return [_RestrictedUnpickler(stream, allowed, encoding=encoding).load() for _ in range(count)]
