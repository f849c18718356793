"""The BLAS that dltutorials_is.backend gives Aesara: correct, never forced on a user, optional."""

import json
import os
import shlex
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from dltutorials_is import backend

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter, so that dltutorials_is configures Aesara before Aesara is imported.
PRODUCTS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import dltutorials_is
    from dltutorials_is import backend
    import aesara, aesara.tensor as at

    floatX = sys.argv[1]
    aesara.config.floatX = floatX
    rng = np.random.RandomState(0)
    a, b, c = (rng.uniform(-1, 1, shape).astype(floatX) for shape in [(16, 128), (128, 512), (16, 512)])
    v = rng.uniform(-1, 1, 128).astype(floatX)
    A, B, C, V = at.matrix(), at.matrix(), at.matrix(), at.vector()
    gemm = aesara.function([A, B, C], C + at.dot(A, B))
    gemv = aesara.function([V, B], at.dot(V, B))
    a64, b64, c64, v64 = (x.astype(np.float64) for x in (a, b, c, v))
    errors = [float(np.max(np.abs(gemm(a, b, c) - (c64 + a64 @ b64)))),
              float(np.max(np.abs(gemv(v, b) - v64 @ b64)))]
    ops = sorted({type(n.op).__name__ for f in (gemm, gemv) for n in f.maker.fgraph.apply_nodes})
    print(json.dumps(dict(errors=errors, ops=ops, ldflags=aesara.config.blas__ldflags,
                          chosen=backend._choice.ldflags if backend._choice else None,
                          describe=backend.describe())))
""")


def run_products(floatX, aesara_flags):
    """Run PRODUCTS_SCRIPT with ``AESARA_FLAGS`` as given (None: unset); return its JSON result."""
    env = {k: v for k, v in os.environ.items() if k != "AESARA_FLAGS"}
    if aesara_flags is not None:
        env["AESARA_FLAGS"] = aesara_flags
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", PRODUCTS_SCRIPT, floatX], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def flags_without_blas():
    """This process's AESARA_FLAGS minus any blas__ldflags, so the backend gets to choose."""
    flags = backend.parse_aesara_flags(os.environ.get("AESARA_FLAGS", ""))
    return ",".join(f"{key}={shlex.quote(value)}" for key, value in flags.items() if key != "blas__ldflags")


@pytest.mark.parametrize("floatX, tolerance", [("float64", 1e-10), ("float32", 1e-4)])
def test_configured_blas_gives_numpy_results(floatX, tolerance):
    result = run_products(floatX, flags_without_blas())
    assert max(result["errors"]) < tolerance
    if any(backend._checks_out(library) for library in available_libraries()):
        # A library was found, so it is what Aesara links, through its C BLAS ops (not NumPy loops).
        assert result["chosen"] is not None and result["ldflags"] == result["chosen"]
        assert "CGemv" in result["ops"] and "Gemm" in result["ops"]


def test_explicit_user_ldflags_reach_aesara_untouched():
    result = run_products("float64", "blas__ldflags=")  # explicitly empty: the NumPy C-API loops
    assert result["ldflags"] == ""
    assert result["chosen"] is None
    assert "already set" in result["describe"]
    assert max(result["errors"]) < 1e-10


def available_libraries():
    return [library for library in (finder() for finder in backend.FINDERS) if library is not None]


def usable_library():
    """A real BLAS on this machine that the backend accepts, or skip."""
    for library in available_libraries():
        if backend._checks_out(library):
            return library
    pytest.skip("no LP64 BLAS library on this machine")


@pytest.mark.parametrize("aesara_flags", ["blas__ldflags=-lblas", "floatX=float32,blas__ldflags=", "blas__ldflags='-L/x -lfoo'"])
def test_user_ldflags_in_aesara_flags_are_respected(aesara_flags):
    environ = {"AESARA_FLAGS": aesara_flags, "AESARARC": os.devnull}
    chosen, reason = backend.choose(environ, [usable_library])
    assert chosen is None and "already set" in reason


def test_user_ldflags_in_aesararc_are_respected(tmp_path):
    rc_file = tmp_path / "aesararc"
    rc_file.write_text("[blas]\nldflags = -lopenblas\n")
    environ = {"AESARA_FLAGS": "floatX=float32", "AESARARC": str(rc_file)}
    assert backend.user_blas_ldflags(environ) == "-lopenblas"
    assert backend.choose(environ, [usable_library])[0] is None


def test_a_subprocess_recognises_the_library_its_parent_chose():
    library = usable_library()
    environ = {"AESARA_FLAGS": backend._with_flag("floatX=float32", "blas__ldflags", library.ldflags),
               "AESARARC": os.devnull}
    assert backend.choose(environ, [lambda: library])[0] == library


def test_chosen_library_is_added_to_aesara_flags_in_a_form_aesara_parses(monkeypatch):
    from aesara.configparser import parse_config_string

    library = usable_library()
    environ = {"AESARA_FLAGS": "floatX=float32,compiledir=/tmp/x", "AESARARC": os.devnull}
    monkeypatch.setattr(backend, "FINDERS", [lambda: library])
    monkeypatch.setattr(backend, "_choice", backend._choice)  # restored afterwards, like the rest
    monkeypatch.setattr(backend, "_reason", backend._reason)
    monkeypatch.delitem(sys.modules, "aesara", raising=False)  # as when configure() runs before Aesara
    assert backend.configure(environ) == library
    flags = parse_config_string(environ["AESARA_FLAGS"])
    assert flags == {"floatX": "float32", "compiledir": "/tmp/x", "blas__ldflags": library.ldflags}


def test_missing_or_broken_libraries_fall_back_to_the_next_then_to_aesaras_default(tmp_path):
    environ = {"AESARARC": os.devnull}
    missing = backend.BlasLibrary("missing", str(tmp_path / "libblas_missing.so.1"))
    not_a_blas = backend.BlasLibrary("libc", "libc.so.6")  # loads, but has no dgemm_
    assert backend.choose(environ, [lambda: missing, lambda: not_a_blas, lambda: None])[0] is None
    library = usable_library()
    assert backend.choose(environ, [lambda: missing, lambda: library])[0] == library


def test_a_library_that_miscomputes_is_refused(monkeypatch):
    library = usable_library()
    honest = backend._gemm_and_gemv

    def off_by_a_little(loaded, dtype, rng):
        operands, (c, y) = honest(loaded, dtype, rng)
        c[3, 5] *= 1.001
        return operands, (c, y)

    monkeypatch.setattr(backend, "_gemm_and_gemv", off_by_a_little)
    assert not backend._checks_out(library)


def test_only_numpy_distutils_blas_search_warnings_are_silenced():
    message = "\n    Blas (http://www.netlib.org/blas/) libraries not found.\n    Directories to search ..."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend._silence_numpy_distutils_blas_warnings()
        warnings.warn_explicit(message, UserWarning, "system_info.py", 1, module="numpy.distutils.system_info")
        warnings.warn_explicit(message, UserWarning, "other.py", 1, module="some.other.module")
        warnings.warn_explicit("another warning", UserWarning, "system_info.py", 1,
                               module="numpy.distutils.system_info")
    assert [str(w.message) for w in caught] == [message, "another warning"]


def test_gemm_check_computes_the_product():
    library = usable_library()
    import ctypes

    (a, b, x), (c, y) = backend._gemm_and_gemv(ctypes.CDLL(library.path), np.float64, np.random.RandomState(1))
    np.testing.assert_allclose(c, a @ b, rtol=1e-12)
    np.testing.assert_allclose(y, a @ x, rtol=1e-12)


THREAD_GETTERS = {"openblas_set_num_threads": "openblas_get_num_threads", "MKL_Set_Num_Threads": "MKL_Get_Max_Threads"}


def test_blas_runs_one_thread_unless_a_thread_variable_says_otherwise():
    import ctypes

    library = usable_library()
    loaded = ctypes.CDLL(library.path)
    set_threads, get_threads = getattr(loaded, library.set_threads), getattr(loaded, THREAD_GETTERS[library.set_threads])
    try:
        set_threads(2)
        backend._use_one_thread_unless_told(library, {library.thread_variables[0]: "2"})
        assert get_threads() == 2
        backend._use_one_thread_unless_told(library, {})
        assert get_threads() == 1
    finally:
        set_threads(1)
