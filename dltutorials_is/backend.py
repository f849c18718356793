"""Point Aesara at a fast BLAS before it is imported.

Aesara 2.9 links its compiled dot products against the library named by ``blas__ldflags``.
With the pip wheels of NumPy that flag comes out empty (NumPy's bundled OpenBLAS is an ILP64
build with renamed symbols, so Aesara cannot link ``dgemm_`` from it) and Aesara falls back to
slow NumPy C-API loops, warning "Using NumPy C-API based implementation for BLAS functions".

``configure()`` looks for a usable LP64 BLAS (Intel MKL if the optional ``mkl`` wheel is
installed, else the OpenBLAS bundled in SciPy's wheel, else a system OpenBLAS), checks that it
computes a small GEMM and GEMV correctly, adds it to ``AESARA_FLAGS`` and runs it on one thread.
It never overrides a user's own ``blas__ldflags`` or thread-count variables and never fails:
without a usable library Aesara keeps its own default. ``benchmarks/bench_blas.py`` and
``benchmarks/bench_lstm.py`` measure the choices.
"""

import configparser
import ctypes
import glob
import importlib.util
import logging
import os
import shlex
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Tuple

import numpy as np

_logger = logging.getLogger(__name__)

#: Set by ``configure()``: the library it chose, or a sentence saying why it chose none.
_choice: Optional["BlasLibrary"] = None
_reason = "dltutorials_is.backend.configure() has not run"


@dataclass(frozen=True)
class BlasLibrary:
    """A shared library exporting the Fortran LP64 BLAS symbols (``dgemm_``, ``sgemv_``, ...)."""

    name: str
    path: str
    #: Its C function ``void f(int)`` setting the number of threads, and the variables it obeys.
    set_threads: Optional[str] = None
    thread_variables: Tuple[str, ...] = ()

    @property
    def ldflags(self) -> str:
        """Aesara ``blas__ldflags`` linking exactly this file, found again at run time by rpath.

        ``-Wl,-L`` rather than ``-L``: Aesara's own ``-L`` check only recognises files named
        ``*.so`` and would warn about versioned names such as ``libmkl_rt.so.3``.
        """
        directory, filename = os.path.split(self.path)
        return f"-Wl,-L{directory} -Wl,-rpath,{directory} -l:{filename}"


_OPENBLAS_THREADS = dict(set_threads="openblas_set_num_threads",
                         thread_variables=("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"))


def _newest(paths: Iterable[str]) -> Optional[str]:
    found = sorted(paths)
    return found[-1] if found else None


def _find_mkl() -> Optional[BlasLibrary]:
    """Intel MKL's single dynamic library, as the ``mkl`` wheel installs it in ``<prefix>/lib``."""
    path = _newest(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so.*")))
    return BlasLibrary("Intel MKL (mkl wheel)", path, "MKL_Set_Num_Threads",
                       ("MKL_NUM_THREADS", "OMP_NUM_THREADS")) if path else None


def _find_scipy_openblas() -> Optional[BlasLibrary]:
    """The LP64 OpenBLAS that SciPy's wheel bundles in ``site-packages/scipy.libs``."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = os.path.join(os.path.dirname(list(spec.submodule_search_locations)[0]), "scipy.libs")
    path = _newest(glob.glob(os.path.join(libs, "libopenblas*.so")))
    return BlasLibrary("OpenBLAS (SciPy wheel)", path, **_OPENBLAS_THREADS) if path else None


def _find_system_openblas() -> Optional[BlasLibrary]:
    """Debian's OpenBLAS (``apt-get install libopenblas0-pthread``), when a user installed it."""
    path = _newest(glob.glob("/usr/lib/*-linux-gnu/libopenblas.so.0"))
    return BlasLibrary("OpenBLAS (system)", path, **_OPENBLAS_THREADS) if path else None


#: Tried in this order; the order is the speed ranking measured by benchmarks/bench_blas.py.
FINDERS: List[Callable[[], Optional[BlasLibrary]]] = [_find_mkl, _find_scipy_openblas, _find_system_openblas]


def parse_aesara_flags(text: str) -> Dict[str, str]:
    """``AESARA_FLAGS`` as Aesara reads it: comma-separated ``key=value``, shell-style quoting."""
    splitter = shlex.shlex(text, posix=True)
    splitter.whitespace = ","
    splitter.whitespace_split = True
    return dict(pair.strip().split("=", 1) for pair in splitter if "=" in pair)


def user_blas_ldflags(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The ``blas__ldflags`` a user set in ``AESARA_FLAGS`` or an ``.aesararc`` file, else None.

    Read the way Aesara reads them (``AESARA_FLAGS``, then the files named by ``AESARARC``,
    default ``~/.aesararc``), because Aesara itself must not be imported yet.
    """
    flags = parse_aesara_flags(environ.get("AESARA_FLAGS", ""))
    if "blas__ldflags" in flags:
        return flags["blas__ldflags"]
    files = [os.path.expanduser(f) for f in environ.get("AESARARC", "~/.aesararc").split(os.pathsep)]
    parser = configparser.RawConfigParser()
    try:
        parser.read(files)
    except configparser.Error:
        return None  # Aesara will report the broken file itself.
    return parser.get("blas", "ldflags", fallback=None)


def _by_reference(*values):
    """Fortran BLAS takes every argument by address."""
    return [ctypes.byref(value) for value in values]


def pointer(array: np.ndarray):
    """The array's data as a C pointer for a ctypes BLAS call (a bare int would pass as a 32-bit C int)."""
    return array.ctypes.data_as(ctypes.c_void_p)


def _gemm_and_gemv(library: ctypes.CDLL, dtype, rng: np.random.RandomState):
    """Compute ``a @ b`` and ``a @ x`` with the library's ``?gemm_``/``?gemv_``; also return the operands."""
    prefix, scalar = ("d", ctypes.c_double) if dtype == np.float64 else ("s", ctypes.c_float)
    m, n, k = 37, 29, 53  # odd sizes exercise both the vectorised loops and their tails
    a = np.asfortranarray(rng.uniform(-1, 1, (m, k)).astype(dtype))
    b = np.asfortranarray(rng.uniform(-1, 1, (k, n)).astype(dtype))
    x = rng.uniform(-1, 1, k).astype(dtype)
    c = np.zeros((m, n), dtype=dtype, order="F")
    y = np.zeros(m, dtype=dtype)
    size = {name: ctypes.c_int(value) for name, value in dict(m=m, n=n, k=k, one=1).items()}
    no_transpose, one, zero = ctypes.c_char(b"N"), scalar(1.0), scalar(0.0)
    gemm, gemv = getattr(library, prefix + "gemm_"), getattr(library, prefix + "gemv_")
    gemm(*_by_reference(no_transpose, no_transpose, size["m"], size["n"], size["k"], one), pointer(a),
         *_by_reference(size["m"]), pointer(b), *_by_reference(size["k"], zero), pointer(c), *_by_reference(size["m"]))
    gemv(*_by_reference(no_transpose, size["m"], size["k"], one), pointer(a), *_by_reference(size["m"]),
         pointer(x), *_by_reference(size["one"], zero), pointer(y), *_by_reference(size["one"]))
    return (a, b, x), (c, y)


def _checks_out(library: BlasLibrary) -> bool:
    """Whether the library loads and its GEMM and GEMV agree with NumPy, in float64 and float32.

    Guards against a broken install and against BLAS builds that miscompute on this CPU.
    """
    try:
        loaded = ctypes.CDLL(library.path)
        rng = np.random.RandomState(0)
        for dtype, tolerance in ((np.float64, 1e-12), (np.float32, 1e-5)):
            (a, b, x), (c, y) = _gemm_and_gemv(loaded, dtype, rng)
            a, b, x = (operand.astype(np.float64) for operand in (a, b, x))
            if not (np.allclose(c, a @ b, rtol=tolerance, atol=tolerance * a.shape[1])
                    and np.allclose(y, a @ x, rtol=tolerance, atol=tolerance * a.shape[1])):
                _logger.debug("BLAS %s skipped: wrong %s results on this CPU", library.path, np.dtype(dtype).name)
                return False
    except (OSError, AttributeError) as error:  # missing file or dependency, or not a BLAS
        _logger.debug("BLAS %s skipped: %s", library.path, error)
        return False
    return True


def _silence_numpy_distutils_blas_warnings() -> None:
    """Hide the three multi-line UserWarnings numpy.distutils prints when Aesara probes for a BLAS.

    They describe NumPy's own build-time search and do not apply to a pip-installed NumPy; Aesara's
    one-line "Using NumPy C-API based implementation" warning still says what matters.
    """
    for message in (r"\s*Optimized \(vendor\) Blas libraries are not found",
                    r"\s*Blas \(http://www\.netlib\.org/blas/\) (libraries|sources) not found"):
        warnings.filterwarnings("ignore", message=message, category=UserWarning,
                                module=r"numpy\.distutils\.system_info")


def _with_flag(aesara_flags: str, key: str, value: str) -> str:
    """``AESARA_FLAGS`` with ``key=value`` appended, quoted so commas in ``value`` survive."""
    pair = f"{key}={shlex.quote(value)}"
    return f"{aesara_flags},{pair}" if aesara_flags.strip() else pair


def _use_one_thread_unless_told(library: BlasLibrary, environ: Mapping[str, str]) -> None:
    """Run the library's BLAS on one thread, unless one of its thread-count variables is set.

    The LSTM's products are small (16 x 128 by 128 x 512 per scan step). Measured on 2 shared cores
    (benchmarks/bench_lstm.py, float64): with two threads an update took 1.8x (OpenBLAS) to 3.3x
    (MKL) the CPU time of one thread, so two can at best about match one on an idle machine, and
    were 2.4x to 3.3x slower in wall time on a busy one (float32: 1.1x CPU, 1.3x wall, OpenBLAS).
    The setting is the library's, so it also holds for SciPy's own calls into the same OpenBLAS.
    Set OPENBLAS_NUM_THREADS / MKL_NUM_THREADS (or OMP_NUM_THREADS) to choose otherwise.
    """
    told = [name for name in library.thread_variables if name in environ]
    if told or library.set_threads is None:
        _logger.debug("BLAS threads left to %s", told or "the library")
        return
    try:
        getattr(ctypes.CDLL(library.path), library.set_threads)(1)
    except (OSError, AttributeError) as error:
        _logger.debug("BLAS threads left to the library: %s", error)


def blas_threads_note(library: BlasLibrary, environ: Mapping[str, str] = os.environ) -> str:
    """How many threads the chosen library runs, as configure() left it."""
    told = [f"{name}={environ[name]}" for name in library.thread_variables if name in environ]
    return ", ".join(told) if told else "1 thread"


def choose(environ: Mapping[str, str] = os.environ,
           finders: Optional[List[Callable[[], Optional[BlasLibrary]]]] = None) -> Tuple[Optional[BlasLibrary], str]:
    """The BLAS to give Aesara (None: leave Aesara's setting alone) and a sentence saying why.

    A ``blas__ldflags`` already set is kept. If it names one of our libraries exactly (a
    subprocess inheriting its parent's choice, or a benchmark), that library is returned, so
    that it gets the same thread setting.
    """
    found = (finder() for finder in (FINDERS if finders is None else finders))
    libraries = [library for library in found if library is not None]
    user_ldflags = user_blas_ldflags(environ)
    if user_ldflags is not None:
        named = [library for library in libraries if library.ldflags == user_ldflags]
        return (named[0] if named else None), "blas__ldflags as already set in AESARA_FLAGS or .aesararc"
    for library in libraries:
        if any(c.isspace() or c in "'\"" for c in library.path):
            _logger.debug("BLAS %s skipped: Aesara cannot link a path with spaces or quotes", library.path)
        elif _checks_out(library):
            return library, f"chosen by dltutorials_is.backend: {library.path}"
    return None, "no usable BLAS found by dltutorials_is.backend, so Aesara's own default"


def configure(environ: MutableMapping[str, str] = os.environ) -> Optional[BlasLibrary]:
    """Make Aesara link the fastest usable BLAS unless the user chose one; return the library used.

    Runs from ``dltutorials_is/__init__.py``, before the package imports Aesara (which reads
    ``AESARA_FLAGS`` once, at import). The flag also reaches subprocesses such as dask workers.
    """
    global _choice, _reason
    _silence_numpy_distutils_blas_warnings()
    _choice, _reason = choose(environ)
    if _choice is None:
        _logger.debug("BLAS: %s", _reason)
        return None
    if user_blas_ldflags(environ) != _choice.ldflags:
        environ["AESARA_FLAGS"] = _with_flag(environ.get("AESARA_FLAGS", ""), "blas__ldflags", _choice.ldflags)
        if "aesara" in sys.modules:  # imported before us: its config read AESARA_FLAGS already
            sys.modules["aesara"].config.blas__ldflags = _choice.ldflags
    _use_one_thread_unless_told(_choice, environ)
    return _choice


def describe() -> str:
    """One line naming the BLAS that Aesara's compiled dot products use, and why (imports aesara)."""
    import aesara

    ldflags = aesara.config.blas__ldflags
    if _choice is not None and ldflags == _choice.ldflags:
        return f"{_choice.name}, {blas_threads_note(_choice)} ({_reason})"
    what = f"blas__ldflags={ldflags!r}" if ldflags else "no BLAS: NumPy C-API loops (slow)"
    told = [f"{name}={os.environ[name]}" for name in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
            if name in os.environ]
    return f"{what}{' [' + ' '.join(told) + ']' if told else ''} ({_reason})"
