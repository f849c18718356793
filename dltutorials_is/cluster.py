"""Where the long jobs' parallel work runs: processes on this machine (joblib's loky), or the workers of a
dask.distributed cluster. FIM shards and replication runs are independent, resumable tasks that write
their results atomically into the output folder, so a task lost with its worker is simply run again
elsewhere, continuing from what it had written (the folder must be on a file system every worker sees).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from joblib import Parallel, parallel_config
from joblib._parallel_backends import LokyBackend
from joblib.parallel import get_active_backend

from dltutorials_is.errors import UserError, one_line

SCHEDULER_HELP = ("run on the workers of the dask.distributed scheduler at ADDRESS (e.g. tcp://10.0.0.1:8786, "
                  "started with `dask scheduler` and `dask worker ADDRESS`); the output folder must be on a file "
                  "system every worker sees")


class SchedulerError(UserError, OSError):
    """The dask scheduler's address is malformed or nothing answers there: no work has started."""


@contextlib.contextmanager
def dask_cluster(scheduler: str | None = None, local_workers: int | None = None) -> Iterator[str]:
    """A dask client for the block: connected to `scheduler`, or to a new local cluster of
    `local_workers` single-threaded worker processes. Yields the joblib backend name, "dask"."""
    from distributed import Client, LocalCluster

    if scheduler:
        with _connect(scheduler):
            yield "dask"
        return
    with LocalCluster(n_workers=local_workers, threads_per_worker=1) as cluster, Client(cluster):
        yield "dask"


def _connect(scheduler: str):
    """A client of the scheduler at `scheduler`, or `SchedulerError` saying why there is none (dask raises
    ValueError for a malformed address, OSError when nothing answers within its connect timeout)."""
    from distributed import Client

    try:
        _check_answers(scheduler)
        return Client(scheduler)
    except (OSError, ValueError) as error:
        raise SchedulerError(
            f"cannot use the dask scheduler at {scheduler!r}: {one_line(error)} — give the address the "
            "scheduler printed when it started (tcp://HOST:PORT, port 8786 by default; start one with "
            "`dask scheduler`), or leave --scheduler out to run on this machine"
        ) from error


def _check_answers(scheduler: str) -> None:
    """Open and close one connection to `scheduler`: ValueError if the address is malformed, OSError if
    nothing answers within dask's connect timeout.

    Asked before any Client exists because dask does not clean up a Client that fails to connect: its
    IO-loop thread runs on (for ever, when nothing answered), and the half-made client is left to the
    cyclic garbage collector, which closes it at some later moment in whichever thread allocates then.
    """
    from distributed.comm import connect

    async def open_and_close():
        comm = await connect(scheduler)
        await comm.close()

    with ThreadPoolExecutor(1) as thread:  # a loop of its own, even if the caller's thread runs one (a notebook)
        thread.submit(asyncio.run, open_and_close()).result()


@contextlib.contextmanager
def parallel_backend(backend: str | None, scheduler: str | None, n_jobs: int) -> Iterator[str | None]:
    """The joblib backend for the block: "dask" with a scheduler address (or `backend="dask"`, which
    starts a local cluster of `n_jobs` workers), else `backend` as given (None: joblib's default)."""
    if scheduler or backend == "dask":
        with dask_cluster(scheduler, n_jobs if n_jobs > 0 else None) as name:
            yield name
    else:
        yield backend


def _exit_with_parent(parent_pid: int) -> None:
    """loky worker initializer: leave as soon as the process that started the worker is gone.

    loky cannot tell that its parent was killed (SIGKILL, or SIGTERM, which runs no clean-up): a worker
    finishes its task, waits `idle_worker_timeout` (300 s) for another and 30 s more for the dead parent,
    and one that was receiving a task when the parent died waits for the rest of it forever. A worker's
    parent process id changes when its parent dies (it is adopted), which this thread checks every second.
    """
    if os.getppid() != parent_pid:  # not started by that process directly: nothing reliable to watch
        return

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def pool(n_jobs: int, backend: str | None, return_as: str = "generator") -> Parallel:
    """A joblib pool on `backend` (None: joblib's default) yielding results as they come. loky workers
    (the default backend) exit with the process that started them (`_exit_with_parent`)."""
    if backend is None and isinstance(get_active_backend()[0], LokyBackend):
        backend = "loky"
    params = {"initializer": _exit_with_parent, "initargs": (os.getpid(),)} if backend == "loky" else {}
    with parallel_config(backend=backend, **params) if backend else contextlib.nullcontext():
        return Parallel(n_jobs=n_jobs, return_as=return_as)
