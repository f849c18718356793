"""The LSTM recurrence over a packed minibatch as two compiled Aesara ops: the fast step's core.

The tutorial pads a minibatch to its longest review and runs `scan` over every padded step, one
small matrix product and a dozen elementwise ops per step, each an inner-graph call; the padded
steps do the full work and then are masked away. Here the minibatch is *packed* (as in PyTorch's
`PackedSequence`): its reviews sorted by length, longest first, and their tokens laid out time-major
with only the real ones kept, so time step t is one contiguous block of the `batch_sizes[t]`
reviews still running, and those are the first rows of step t−1's block. The forward recurrence
and its exact gradient are each one C loop over time that calls BLAS on the running rows only.

Math: the tutorial's masked step. For a running review the mask is 1, and `m·a + (1−m)·b` with m = 1
is exactly a; a finished review's state is carried unchanged and never read again except by the
mean-pooling, which the tutorial masks out. So per running row:

    pre = h_{t-1}·U + (x_t·W + b);  i, f, o = σ(pre_i), σ(pre_f), σ(pre_o);  g = tanh(pre_c)
    c_t = f·c_{t-1} + i·g;   h_t = o·tanh(c_t);    h_{-1} = c_{-1} = 0

with σ(x) = 1/(1 + exp(−x)), Aesara's own C sigmoid. Everything not sequential (the input
product x·W, its gradients, the pooling) stays in ordinary Aesara ops, as big matrix products over the
packed tokens. `perform` implements the same in numpy: used where Aesara has no
C compiler, and tested against the C code.

Where glibc's vector math library is installed (x86-64 Linux) and the CPU has AVX2, the gates' exp and
tanh run through it, 4 doubles or 8 floats at a time: the kernels then take 0.5-0.7 of the time here.
Its values are within a few units in the last place of the scalar functions' (the tests compare both
paths at 1e-12), so the training numbers agree with the tutorial's graph to rounding, as before.
"""
from __future__ import annotations

import ctypes.util
import functools
import platform

import numpy as np
import aesara.tensor as at
from aesara.graph.basic import Apply
from aesara.gradient import DisconnectedType, disconnected_type
from aesara.link.c.op import COp
from aesara.tensor.blas import ldflags
from aesara.tensor.blas_headers import blas_header_text

from dltutorials_is.graphs.row_ops import contiguous_output

_C_TYPES = {"float64": ("double", "NPY_FLOAT64", "", "dgemm_"), "float32": ("float", "NPY_FLOAT32", "f", "sgemm_")}
#: AVX2 vectors and glibc's libmvec functions of each type (`_vector_math`)
_VECTORS = {"double": dict(V="__m256d", W=4, S="pd", EXP="_ZGVdN4v_exp", TANH="_ZGVdN4v_tanh"),
            "float": dict(V="__m256", W=8, S="ps", EXP="_ZGVdN8v_expf", TANH="_ZGVdN8v_tanhf")}


@functools.cache
def _vector_math() -> bool:
    """glibc's vector math library is there: the gates' exp and tanh then run 4 (float64) or 8 (float32) at
    a time, each within a few units in the last place of the scalar function's value. Looked up when a
    kernel is first compiled, not at import (`find_library` runs `ldconfig`)."""
    return platform.machine() == "x86_64" and ctypes.util.find_library("mvec") is not None

_VECTOR_DECLARATIONS = """
#if defined(DLT_VECTOR_MATH) && defined(__AVX2__)
#include <immintrin.h>
extern "C" __m256d _ZGVdN4v_exp(__m256d);
extern "C" __m256d _ZGVdN4v_tanh(__m256d);
extern "C" __m256 _ZGVdN8v_expf(__m256);
extern "C" __m256 _ZGVdN8v_tanhf(__m256);
#endif
"""

_MATH_TEMPLATE = """
/* x = 1 / (1 + exp(-x)) and y = tanh(x) over n values: vectors of {W} through libmvec where built with it */
static void sigmoid_{T}(const int n, {T}* __restrict__ x)
{{
    int j = 0;
#if defined(DLT_VECTOR_MATH) && defined(__AVX2__)
    const {V} one = _mm256_set1_{S}(1), sign = _mm256_set1_{S}(-0.0{F});
    for (; j + {W} <= n; j += {W}) {{
        const {V} e = {EXP}(_mm256_xor_{S}(_mm256_loadu_{S}(x + j), sign));
        _mm256_storeu_{S}(x + j, _mm256_div_{S}(one, _mm256_add_{S}(one, e)));
    }}
#endif
    for (; j < n; ++j) x[j] = 1.0{F} / (1.0{F} + exp(-x[j]));
}}

static void tanh_{T}(const int n, const {T}* __restrict__ x, {T}* __restrict__ y)
{{
    int j = 0;
#if defined(DLT_VECTOR_MATH) && defined(__AVX2__)
    for (; j + {W} <= n; j += {W}) _mm256_storeu_{S}(y + j, {TANH}(_mm256_loadu_{S}(x + j)));
#endif
    for (; j < n; ++j) y[j] = tanh(x[j]);
}}
"""

_SUPPORT_TEMPLATE = """
/* y[j] = sum_k x[k] * M[k * n_out + j]: a vector-matrix product, faster than a BLAS call for one row.
   {BLOCK} outputs are accumulated at a time (eight 512-bit registers), so that eight independent
   multiply-add chains hide the instruction's latency and the loop runs at the speed M streams in. */
static void vecmat_{T}(const int n_in, const int n_out, const {T}* __restrict__ x,
                       const {T}* __restrict__ M, {T}* __restrict__ y)
{{
    int j0 = 0;
    for (; j0 + {BLOCK} <= n_out; j0 += {BLOCK}) {{
        {T} acc[{BLOCK}];
        for (int q = 0; q < {BLOCK}; ++q) acc[q] = 0;
        for (int k = 0; k < n_in; ++k) {{
            const {T} xk = x[k];
            const {T}* __restrict__ m = M + (npy_intp)k * n_out + j0;
            for (int q = 0; q < {BLOCK}; ++q) acc[q] += xk * m[q];
        }}
        for (int q = 0; q < {BLOCK}; ++q) y[j0 + q] = acc[q];
    }}
    for (; j0 < n_out; ++j0) {{
        {T} acc = 0;
        for (int k = 0; k < n_in; ++k) acc += x[k] * M[(npy_intp)k * n_out + j0];
        y[j0] = acc;
    }}
}}

/* Row-major Y (rows x n) = X (rows x k) . M (k x n). One row: vecmat; more rows: BLAS. */
static void rowmajor_gemm_{T}(const int rows, const int k, const int n, const {T}* X, const {T}* M, {T}* Y)
{{
    if (rows == 1) {{ vecmat_{T}(k, n, X, M, Y); return; }}
    /* BLAS is column-major: there, Y^T (n x rows) = M^T (n x k) . X^T (k x rows), no transposes */
    char no = 'N';
    const {T} one = 1, zero = 0;
    {GEMM}(&no, &no, &n, &rows, &k, &one, M, &n, X, &k, &zero, Y, &n);
}}

static void lstm_packed_forward_{T}(const int T_steps, const npy_int64* bs, const int d,
                                    const {T}* __restrict__ xw, const {T}* __restrict__ b, const {T}* U,
                                    {T}* __restrict__ H, {T}* __restrict__ C, {T}* __restrict__ G)
{{
    const int d4 = 4 * d;
    npy_intp o = 0, o_prev = 0;
    for (int t = 0; t < T_steps; ++t) {{
        const int n = (int)bs[t];
        {T}* __restrict__ g = G + o * d4;                 /* pre-activations, then gate values */
        const {T}* __restrict__ x = xw + o * d4;
        /* (x·W + b) first, then h·U + that, in the tutorial's order */
        if (t > 0) rowmajor_gemm_{T}(n, d, d4, H + o_prev * d, U, g);
        for (int r = 0; r < n; ++r) {{
            {T}* __restrict__ gr = g + (npy_intp)r * d4;
            const {T}* __restrict__ xr = x + (npy_intp)r * d4;
            if (t > 0) for (int j = 0; j < d4; ++j) gr[j] += xr[j] + b[j];
            else for (int j = 0; j < d4; ++j) gr[j] = xr[j] + b[j];
        }}
        for (int r = 0; r < n; ++r) {{
            {T}* __restrict__ gr = g + (npy_intp)r * d4;
            sigmoid_{T}(3 * d, gr);
            tanh_{T}(d, gr + 3 * d, gr + 3 * d);
            {T}* __restrict__ c = C + (o + r) * d;
            {T}* __restrict__ h = H + (o + r) * d;
            for (int k = 0; k < d; ++k) {{
                const {T} c_prev = t > 0 ? C[(o_prev + r) * d + k] : 0;
                c[k] = gr[d + k] * c_prev + gr[k] * gr[3 * d + k];
            }}
            tanh_{T}(d, c, h);
            for (int k = 0; k < d; ++k) h[k] *= gr[2 * d + k];
        }}
        o_prev = o;
        o += n;
    }}
}}

/* dXW (N x 4d): the gradient with respect to every pre-activation, given dH, the gradient with
   respect to each h from outside the recurrence. dh and dc (batch_sizes[0] x d) carry the gradient
   back through time; a review's rows of them are zero until its last step is reached. UT is U
   transposed (4d x d), so that every product is an untransposed one; tanh_c is scratch for d values. */
static void lstm_packed_backward_{T}(const int T_steps, const npy_int64* bs, const npy_intp N, const int d,
                                     const {T}* __restrict__ dH, const {T}* __restrict__ C,
                                     const {T}* __restrict__ G, const {T}* UT, {T}* __restrict__ dXW,
                                     {T}* __restrict__ dh, {T}* __restrict__ dc, {T}* __restrict__ tanh_c)
{{
    const int d4 = 4 * d;
    npy_intp o = N;
    for (int r = 0; r < (int)bs[0] * d; ++r) {{ dh[r] = 0; dc[r] = 0; }}
    for (int t = T_steps - 1; t >= 0; --t) {{
        const int n = (int)bs[t];
        o -= n;
        const npy_intp o_prev = t > 0 ? o - bs[t - 1] : 0;
        for (int r = 0; r < n; ++r) {{
            const {T}* __restrict__ g = G + (o + r) * d4;
            const {T}* __restrict__ c = C + (o + r) * d;
            {T}* __restrict__ dpre = dXW + (o + r) * d4;
            {T}* __restrict__ dhr = dh + (npy_intp)r * d;
            {T}* __restrict__ dcr = dc + (npy_intp)r * d;
            tanh_{T}(d, c, tanh_c);
            for (int k = 0; k < d; ++k) {{
                const {T} i = g[k], f = g[d + k], o_gate = g[2 * d + k], cand = g[3 * d + k];
                const {T} c_prev = t > 0 ? C[(o_prev + r) * d + k] : 0;
                const {T} tc = tanh_c[k];
                const {T} dht = dH[(o + r) * d + k] + dhr[k];
                const {T} dct = dcr[k] + dht * o_gate * (1 - tc * tc);
                dpre[k] = dct * cand * i * (1 - i);
                dpre[d + k] = dct * c_prev * f * (1 - f);
                dpre[2 * d + k] = dht * tc * o_gate * (1 - o_gate);
                dpre[3 * d + k] = dct * i * (1 - cand * cand);
                dcr[k] = dct * f;
            }}
        }}
        /* dh of the running rows = dpre . U^T (the rows of reviews that end at step t-1 are still zero) */
        if (t > 0) rowmajor_gemm_{T}(n, d4, d, dXW + o * d4, UT, dh);
    }}
}}
"""


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def check_batch_sizes(batch_sizes: np.ndarray, n_tokens: int) -> None:
    """A packed layout's step sizes: positive, non-increasing, summing to the number of tokens."""
    if batch_sizes.ndim != 1 or len(batch_sizes) == 0 or batch_sizes[-1] < 1 \
            or np.any(np.diff(batch_sizes) > 0) or batch_sizes.sum() != n_tokens:
        raise ValueError("batch_sizes must be positive, non-increasing and sum to the number of packed rows")


def _packed_offsets(batch_sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(batch_sizes)])


_C_CHECK = """
    const int T_steps = (int)PyArray_DIMS(bs_c)[0];
    const npy_int64* bs = (const npy_int64*)PyArray_DATA(bs_c);
    npy_intp total = 0;
    int bad = T_steps < 1;
    for (int t = 0; t < T_steps && !bad; ++t) {{
        bad = bs[t] < 1 || (t > 0 && bs[t] > bs[t - 1]);
        total += bs[t];
    }}
    if (bad || total != {N}) {{
        {release}
        PyErr_SetString(PyExc_ValueError, "batch_sizes must be positive, non-increasing and sum to the number of packed rows");
        {fail}
    }}
"""


class _PackedKernel(COp):
    __props__ = ()

    def c_support_code(self, **kwargs):
        return blas_header_text() + _VECTOR_DECLARATIONS + "".join(
            _MATH_TEMPLATE.format(T=T, F=F, **_VECTORS[T])
            + _SUPPORT_TEMPLATE.format(T=T, F=F, GEMM=gemm, BLOCK=16 * _VECTORS[T]["W"])
            for T, _, F, gemm in _C_TYPES.values())

    def c_libraries(self, **kwargs):
        return ldflags() + (["mvec"] if _vector_math() else [])

    def c_compile_args(self, **kwargs):
        return ldflags(libs=False, flags=True) + (["-DDLT_VECTOR_MATH"] if _vector_math() else [])

    def c_lib_dirs(self, **kwargs):
        return ldflags(libs=False, libs_dir=True)

    def c_header_dirs(self, **kwargs):
        return ldflags(libs=False, include_dir=True)

    def c_code_cache_version(self):
        return (5, _vector_math())


def _as_inputs(*values):
    """Aesara variables of the kernels' inputs: float matrices of one dtype (the bias a vector), then
    the int64 batch_sizes."""
    *floats, batch_sizes = [at.as_tensor_variable(v) for v in values]
    dtype = floats[0].dtype
    if dtype not in _C_TYPES or any(v.dtype != dtype or v.ndim not in (1, 2) for v in floats):
        raise TypeError("the packed LSTM kernels need float matrices of one dtype")
    if batch_sizes.ndim != 1 or batch_sizes.dtype != "int64":
        raise TypeError("batch_sizes must be an int64 vector")
    return [*floats, batch_sizes], dtype


class PackedLSTMForward(_PackedKernel):
    """(xW: N×4d packed input products emb·W, b: 4d, U: d×4d, batch_sizes: T) → (H: N×d, C: N×d,
    G: N×4d gate values [i, f, o, g]). Only H may be differentiated.

    The bias is added inside (xW + b, then h·U + that, the tutorial's order) so that its gradient,
    the column sums of dXW, is summed by the backward loop instead of a slow strided reduction.
    """

    def make_node(self, xW, b, U, batch_sizes):
        inputs, dtype = _as_inputs(xW, b, U, batch_sizes)
        return Apply(self, inputs, [at.matrix(dtype=dtype) for _ in range(3)])

    def perform(self, node, inputs, outputs):
        xW, b, U, batch_sizes = inputs
        check_batch_sizes(batch_sizes, len(xW))
        d = U.shape[0]
        xw = xW + b
        H, C, G = np.empty((len(xw), d), xw.dtype), np.empty((len(xw), d), xw.dtype), np.empty_like(xw)
        offsets = _packed_offsets(batch_sizes)
        for t, n in enumerate(batch_sizes):
            rows, prev = slice(offsets[t], offsets[t] + n), slice(offsets[t - 1], offsets[t - 1] + n)
            pre = H[prev] @ U + xw[rows] if t > 0 else xw[rows].copy()
            g = np.concatenate([_sigmoid(pre[:, : 3 * d]), np.tanh(pre[:, 3 * d :])], axis=1)
            c_prev = C[prev] if t > 0 else np.zeros((n, d), xw.dtype)
            C[rows] = g[:, d : 2 * d] * c_prev + g[:, :d] * g[:, 3 * d :]
            H[rows] = g[:, 2 * d : 3 * d] * np.tanh(C[rows])
            G[rows] = g
        for out, value in zip(outputs, (H, C, G)):
            out[0] = value

    def grad(self, inputs, output_grads):
        xW, b, U, batch_sizes = inputs
        dH, dC, dG = output_grads
        if not (isinstance(dC.type, DisconnectedType) and isinstance(dG.type, DisconnectedType)):
            raise NotImplementedError("only the hidden states H may be differentiated")
        H, C, G = self(xW, b, U, batch_sizes)
        dxw, db, dU = PackedLSTMBackward()(dH, H, C, G, U, batch_sizes)
        return [dxw, db, dU, disconnected_type()]

    def connection_pattern(self, node):
        return [[True, False, False]] * 3 + [[False, False, False]]

    def c_code(self, node, name, inputs, outputs, sub):
        xW, b, U, batch_sizes = inputs
        H, C, G = outputs
        ctype, typenum, _, _ = _C_TYPES[node.inputs[0].dtype]
        fail = sub["fail"]
        release = "Py_DECREF(xw_c); Py_DECREF(b_c); Py_DECREF(U_c); Py_DECREF(bs_c);"
        return f"""
        {{
        PyArrayObject* xw_c = PyArray_GETCONTIGUOUS({xW});
        PyArrayObject* b_c = PyArray_GETCONTIGUOUS({b});
        PyArrayObject* U_c = PyArray_GETCONTIGUOUS({U});
        PyArrayObject* bs_c = PyArray_GETCONTIGUOUS({batch_sizes});
        const npy_intp N = PyArray_DIMS(xw_c)[0];
        const int d = (int)PyArray_DIMS(U_c)[0];
        if (PyArray_DIMS(xw_c)[1] != 4 * d || PyArray_DIMS(U_c)[1] != 4 * d || PyArray_DIMS(b_c)[0] != 4 * d) {{
            {release}
            PyErr_SetString(PyExc_ValueError, "PackedLSTMForward: xW, b and U must have 4*d columns");
            {fail}
        }}
        {_C_CHECK.format(N="N", release=release, fail=fail)}
        npy_intp hd[2] = {{N, d}}, gd[2] = {{N, 4 * d}};
        {contiguous_output(H, "hd", typenum, release + fail)}
        {contiguous_output(C, "hd", typenum, release + fail)}
        {contiguous_output(G, "gd", typenum, release + fail)}
        lstm_packed_forward_{ctype}(T_steps, bs, d, ({ctype}*)PyArray_DATA(xw_c), ({ctype}*)PyArray_DATA(b_c),
                                    ({ctype}*)PyArray_DATA(U_c), ({ctype}*)PyArray_DATA({H}),
                                    ({ctype}*)PyArray_DATA({C}), ({ctype}*)PyArray_DATA({G}));
        {release}
        }}
        """


class PackedLSTMBackward(_PackedKernel):
    """(dH, H, C, G, U, batch_sizes) → (dXW: N×4d, the gradient with respect to the pre-activations;
    db: 4d, its column sums; dU: d×4d = Σ_t h_{t−1}ᵀ·dpre_t, one matrix product over every packed row
    but the first step's)."""

    def make_node(self, dH, H, C, G, U, batch_sizes):
        inputs, dtype = _as_inputs(dH, H, C, G, U, batch_sizes)
        return Apply(self, inputs, [at.matrix(dtype=dtype), at.vector(dtype=dtype), at.matrix(dtype=dtype)])

    def perform(self, node, inputs, outputs):
        dH, H, C, G, U, batch_sizes = inputs
        check_batch_sizes(batch_sizes, len(C))
        d = C.shape[1]
        dXW = np.empty_like(G)
        dh, dc = np.zeros((batch_sizes[0], d), C.dtype), np.zeros((batch_sizes[0], d), C.dtype)
        offsets = _packed_offsets(batch_sizes)
        for t in range(len(batch_sizes) - 1, -1, -1):
            n = batch_sizes[t]
            rows, prev = slice(offsets[t], offsets[t] + n), slice(offsets[t - 1], offsets[t - 1] + n)
            g = G[rows]
            i, f, o, cand = g[:, :d], g[:, d : 2 * d], g[:, 2 * d : 3 * d], g[:, 3 * d :]
            c_prev = C[prev] if t > 0 else np.zeros((n, d), C.dtype)
            tc = np.tanh(C[rows])
            dht = dH[rows] + dh[:n]
            dct = dc[:n] + dht * o * (1 - tc * tc)
            dXW[rows] = np.concatenate([dct * cand * i * (1 - i), dct * c_prev * f * (1 - f),
                                        dht * tc * o * (1 - o), dct * i * (1 - cand * cand)], axis=1)
            dc[:n] = dct * f
            if t > 0:
                dh[:n] = dXW[rows] @ U.T
        first = batch_sizes[0]
        outputs[0][0] = dXW
        outputs[1][0] = dXW.sum(axis=0)
        outputs[2][0] = previous_states(H, batch_sizes).T @ dXW[first:]

    def c_code(self, node, name, inputs, outputs, sub):
        dH, H, C, G, U, batch_sizes = inputs
        dXW, db, dU = outputs
        ctype, typenum, _, gemm = _C_TYPES[node.inputs[0].dtype]
        fail = sub["fail"]
        release = ("Py_DECREF(dH_c); Py_DECREF(H_c); Py_DECREF(C_c); Py_DECREF(G_c); Py_DECREF(U_c); "
                   "Py_DECREF(bs_c);")
        return f"""
        {{
        PyArrayObject* dH_c = PyArray_GETCONTIGUOUS({dH});
        PyArrayObject* H_c = PyArray_GETCONTIGUOUS({H});
        PyArrayObject* C_c = PyArray_GETCONTIGUOUS({C});
        PyArrayObject* G_c = PyArray_GETCONTIGUOUS({G});
        PyArrayObject* U_c = PyArray_GETCONTIGUOUS({U});
        PyArrayObject* bs_c = PyArray_GETCONTIGUOUS({batch_sizes});
        const npy_intp N = PyArray_DIMS(C_c)[0];
        const int d = (int)PyArray_DIMS(C_c)[1];
        {_C_CHECK.format(N="N", release=release, fail=fail)}
        npy_intp gd[2] = {{N, 4 * d}}, ud[2] = {{d, 4 * d}}, bd[1] = {{4 * d}};
        {contiguous_output(dXW, "gd", typenum, release + fail)}
        {contiguous_output(dU, "ud", typenum, release + fail)}
        if (!{db} || PyArray_NDIM({db}) != 1 || PyArray_DIMS({db})[0] != 4 * d || !PyArray_IS_C_CONTIGUOUS({db})) {{
            Py_XDECREF({db});
            {db} = (PyArrayObject*)PyArray_EMPTY(1, bd, {typenum}, 0);
            if (!{db}) {{ {release} {fail} }}
        }}
        const int first = (int)bs[0];
        PyObject* U_t = PyArray_Transpose(U_c, NULL);
        PyArrayObject* UT_c = (PyArrayObject*)PyArray_NewCopy((PyArrayObject*)U_t, NPY_CORDER);
        Py_DECREF(U_t);
        /* dh, dc (first x d each), tanh_c (d), Hprev (N - first x d) */
        {ctype}* work = ({ctype}*)malloc(((size_t)2 * first * d + d + (size_t)(N - first) * d) * sizeof({ctype}));
        if (!work || !UT_c) {{
            free(work); Py_XDECREF(UT_c); {release}
            PyErr_NoMemory();
            {fail}
        }}
        {ctype}* Hprev = work + 2 * first * d + d;
        {ctype}* dXWd = ({ctype}*)PyArray_DATA({dXW});
        lstm_packed_backward_{ctype}(T_steps, bs, N, d, ({ctype}*)PyArray_DATA(dH_c), ({ctype}*)PyArray_DATA(C_c),
                                     ({ctype}*)PyArray_DATA(G_c), ({ctype}*)PyArray_DATA(UT_c), dXWd, work, work + first * d,
                                     work + 2 * first * d);
        /* db = the column sums of dXW, row by row */
        {ctype}* dbd = ({ctype}*)PyArray_DATA({db});
        for (int j = 0; j < 4 * d; ++j) dbd[j] = 0;
        for (npy_intp r = 0; r < N; ++r)
            for (int j = 0; j < 4 * d; ++j) dbd[j] += dXWd[r * 4 * d + j];
        /* dU = Hprev^T . dXW[first:], Hprev the packed h_(t-1) of every row of steps 1.. */
        const {ctype}* Hd = (const {ctype}*)PyArray_DATA(H_c);
        npy_intp o_prev = 0, o = first, w = 0;
        for (int t = 1; t < T_steps; ++t) {{
            memcpy(Hprev + w * d, Hd + o_prev * d, (size_t)bs[t] * d * sizeof({ctype}));
            w += bs[t]; o_prev = o; o += bs[t];
        }}
        {ctype}* dUd = ({ctype}*)PyArray_DATA({dU});
        if (N > first) {{
            char tn = 'N', tt = 'T';
            const int m4 = 4 * d, K = (int)(N - first);
            const {ctype} one = 1, zero = 0;
            {gemm}(&tn, &tt, &m4, &d, &K, &one, dXWd + (npy_intp)first * 4 * d, &m4, Hprev, &d, &zero, dUd, &m4);
        }} else {{
            memset(dUd, 0, (size_t)d * 4 * d * sizeof({ctype}));
        }}
        free(work);
        Py_DECREF(UT_c);
        {release}
        }}
        """


def previous_states(H: np.ndarray, batch_sizes: np.ndarray) -> np.ndarray:
    """h_{t−1} of every packed row of steps 1, 2, …: step t's rows are the first rows of step t−1's block."""
    offsets = _packed_offsets(batch_sizes)
    return np.concatenate([H[offsets[t - 1] : offsets[t - 1] + n] for t, n in enumerate(batch_sizes) if t > 0]
                          or [H[:0]])
