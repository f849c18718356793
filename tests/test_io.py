"""dltutorials_is.io: pickles read from files nobody vouches for; leftovers of interrupted atomic writes."""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dltutorials_is.io import (
    _HOST,
    NUMPY_GLOBALS,
    STALE_SECONDS,
    PickleRefused,
    atomic_pickle,
    atomic_write_text,
    check_pickles,
    exclusive_lock,
    load_pickles,
    remove_stale_temporaries_in,
)

REPO = Path(__file__).resolve().parents[1]

PLAIN = ([[2, 3, 300, 70000, 2**40]], [0, 1], {"a": 1.5, "é": None, 3: (True, False)}, "x" * 300, -7)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_round_trips_in_every_protocol(protocol):
    data = pickle.dumps(PLAIN, protocol=protocol) + pickle.dumps([1, 2], protocol=protocol) + b"trailing"
    assert load_pickles(data, count=2) == [PLAIN, [1, 2]]


@pytest.mark.parametrize("protocol", range(3, pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_arrays_and_scalars_load_when_allowed(protocol):
    obj = {"a": np.arange(5.0), "b": np.zeros(3, bool), "s": np.float64(2.5), "i": np.int64(3)}
    data = pickle.dumps(obj, protocol=protocol)
    (out,) = load_pickles(data, allowed_globals=NUMPY_GLOBALS)
    for key, value in obj.items():
        np.testing.assert_array_equal(out[key], value)
        assert np.asarray(out[key]).dtype == np.asarray(value).dtype
    with pytest.raises(PickleRefused, match="plain data only"):
        load_pickles(data)  # without globals, nothing that imports or calls


class Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_objects_outside_the_allowed_globals_are_never_built(capsys):
    with pytest.raises(PickleRefused, match="builtins.print"):
        load_pickles(pickle.dumps([Sneaky()], protocol=4), allowed_globals=NUMPY_GLOBALS)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("bad, message", [
    (b"\x80\x02N" + b"r" + (2**30).to_bytes(4, "little") + b".", "memo entry 1073741824 after 0 entries"),
    (b"\x80\x02Np99999999\n.", "PUT at offset 3 stores memo entry"),
    (b"\x80\x04\x8e" + (2**62).to_bytes(8, "little") + b"abc.", "announces 4611686018427387904 bytes"),
    (b"\x80\x02X\xff\xff\xff\x7fabc.", "announces 2147483647 bytes, 4 remain"),
    (b"\x80\x04\x95" + (2**40).to_bytes(8, "little") + b"N.", "FRAME at offset 2 announces"),
    (b"\x80\x09N.", "protocol 9"),
    (b"\x80\x02]q\x00(K\x01K\x02", "truncated"),
    (b"\x80\x02\xffN.", "byte 0xff at offset 2 is not a pickle opcode"),
    (b"\x80\x02Pid\n.", "PERSID"),
])
def test_what_would_allocate_or_call_is_refused_before_unpickling(bad, message):
    """The C unpickler would allocate memory for these (a memo of 2^31 slots: 16 GB) before noticing."""
    with pytest.raises(PickleRefused, match=message):
        load_pickles(bad)


def test_check_pickles_returns_the_end_of_the_last_pickle():
    first, second = pickle.dumps([1] * 10, protocol=2), pickle.dumps("ab", protocol=4)
    assert check_pickles(first + second + b"junk", count=2) == len(first) + len(second)
    with pytest.raises(PickleRefused, match="pickle 2 of 2"):
        check_pickles(first, count=2)


# ---------------------------------------------------------------------------------------------
# Temporary files of interrupted atomic writes


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_the_target_go_at_its_next_write_and_nothing_else(tmp_path):
    target = tmp_path / "model.npz"
    dead, alive = _dead_pid(), os.getppid()
    stale = [tmp_path / f".model.npz.{_HOST}-{dead}.a1b2c3d4.tmp",  # killed writer on this machine
             tmp_path / ".model.npz.k3j_x9q0.tmp"]  # written before names carried the writer, and old
    kept = [tmp_path / f".model.npz.{_HOST}-{alive}.zzzzzzzz.tmp",  # a writer that still runs
            tmp_path / ".model.npz.fresh123.tmp",  # old-style name but recent: maybe being written
            tmp_path / f".model.npz.otherhost-{dead}.abcdefgh.tmp",  # another machine's, recent
            tmp_path / f".model.npz.extra.{_HOST}-{dead}.abcdefgh.tmp",  # a temporary of target model.npz.extra
            tmp_path / f".other.npz.{_HOST}-{dead}.abcdefgh.tmp",  # another target's
            tmp_path / ".model.npz.tmp", tmp_path / "model.npz.tmp", tmp_path / ".model.npz.ABCDEFGH.tmp",
            tmp_path / f".model.npz.{_HOST}-{dead}.a1b2c3d4.tmp.keep"]
    for path in stale + kept:
        path.write_text("x")
    old = time.time() - 2 * STALE_SECONDS
    os.utime(stale[1], (old, old))
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name] + [p.name for p in kept])


def test_a_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "big.pkl"
    script = ("import os, sys; from dltutorials_is.io import write_atomically\n"
              f"write_atomically({str(target)!r}, lambda f: (f.write(b'x' * 1000), f.flush(), os._exit(9)))")
    assert subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)}).returncode == 9
    (leftover,) = tmp_path.glob(".big.pkl.*.tmp")
    assert leftover.stat().st_size == 1000 and not target.exists()
    atomic_pickle({"a": 1}, target)
    assert list(tmp_path.iterdir()) == [target]
    # A resuming job that does not write that target again cleans its folder's leftovers too.
    subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert [p.name for p in remove_stale_temporaries_in(tmp_path)][0].startswith(".big.pkl.")
    assert list(tmp_path.iterdir()) == [target]


def test_a_lock_refuses_a_second_holder_and_dies_with_its_holder(tmp_path):
    lock = tmp_path / ".lock"
    script = ("import os, sys; from dltutorials_is.io import exclusive_lock\n"
              f"with exclusive_lock({str(lock)!r}) as held:\n"
              "    print(held, flush=True); sys.stdin.readline(); os._exit(9)")
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "True"
        with exclusive_lock(lock) as held:
            assert held is False
        assert lock.read_text() == f"{socket.gethostname()} pid {holder.pid}\n"
    finally:
        holder.communicate("go\n")  # it dies by os._exit, without releasing anything itself
    assert holder.returncode == 9
    with exclusive_lock(lock) as held:
        assert held is True and lock.read_text() == f"{socket.gethostname()} pid {os.getpid()}\n"
