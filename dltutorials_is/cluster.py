"""Where the long jobs' parallel work runs: processes on this machine (joblib's loky), or the workers of a
dask.distributed cluster. FIM shards and replication runs are independent, resumable tasks that write
their results atomically into the output folder, so a task lost with its worker is simply run again
elsewhere, continuing from what it had written (the folder must be on a file system every worker sees).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from joblib import Parallel, parallel_config

SCHEDULER_HELP = ("run on the workers of the dask.distributed scheduler at ADDRESS (e.g. tcp://10.0.0.1:8786, "
                  "started with `dask scheduler` and `dask worker ADDRESS`); the output folder must be on a file "
                  "system every worker sees")


@contextlib.contextmanager
def dask_cluster(scheduler: str | None = None, local_workers: int | None = None) -> Iterator[str]:
    """A dask client for the block: connected to `scheduler`, or to a new local cluster of
    `local_workers` single-threaded worker processes. Yields the joblib backend name, "dask"."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler):
            yield "dask"
        return
    with LocalCluster(n_workers=local_workers, threads_per_worker=1) as cluster, Client(cluster):
        yield "dask"


@contextlib.contextmanager
def parallel_backend(backend: str | None, scheduler: str | None, n_jobs: int) -> Iterator[str | None]:
    """The joblib backend for the block: "dask" with a scheduler address (or `backend="dask"`, which
    starts a local cluster of `n_jobs` workers), else `backend` as given (None: joblib's default)."""
    if scheduler or backend == "dask":
        with dask_cluster(scheduler, n_jobs if n_jobs > 0 else None) as name:
            yield name
    else:
        yield backend


def pool(n_jobs: int, backend: str | None, return_as: str = "generator") -> Parallel:
    """A joblib pool on `backend` (None: joblib's default) yielding results as they come."""
    with parallel_config(backend=backend) if backend else contextlib.nullcontext():
        return Parallel(n_jobs=n_jobs, return_as=return_as)
