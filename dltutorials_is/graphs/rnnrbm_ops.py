"""Three compiled Aesara ops that make the RNN-RBM's training step fast without changing its numbers.

The tutorial's step spends most of its time outside its matrix products: in the Gibbs chain's
random numbers (`mrg_uniform`, a branchy scalar loop with a division per number, ~12 ns each, then
a separate sigmoid and comparison; CD-15 on a 100-frame chunk draws 360,000 of them) and in the RNN
recurrence inside `scan` (inner-graph calls per frame, forward and backward). So:

* `SigmoidBernoulli` draws one binomial sample of the tutorial's `gibbs_step` in one pass:
  sample = [u < sigmoid(pre)] with u the MRG31k3p uniform that `MRG_RandomStream.uniform` gives
  (element i from sub-stream i mod n_streams, the same integer recursion and scaling) compared
  with Aesara's own sigmoid expression, so the samples and the advanced state are the tutorial's
  bit for bit. It is ~6x faster: the recursion runs vectorised over a state held by columns, and
  the comparison is decided by a vectorised sigmoid, exact to 1e-14, except where u is too close
  to call, where the exact sigmoid decides.
* `RnnRecurrence` is the recurrence u_t = tanh(a_t + u_{t-1}·Wuu), u_{-1} = 0, as one C loop over
  time; `RnnRecurrenceGrad` its exact backward pass. What is not sequential (a = bu + v·Wvu, the
  biases from u_{t-1}, dWuu = Σ_t u_{t-1}ᵀ·g_t) stays in ordinary Aesara ops, as matrix products.

Every op has a numpy `perform` (used where Aesara has no C compiler; the tests check it against
the C code and against Aesara's own sampling).
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import aesara.tensor as at
from aesara.gradient import grad_undefined
from aesara.compile import optdb
from aesara.graph.basic import Apply
from aesara.graph.rewriting.basic import in2out, node_rewriter
from aesara.link.c.op import COp

#: Per float type: C type, NumPy type number, the MRG scale as `mrg_uniform` writes it, 1 in the
#: type (as Aesara's sigmoid writes it), and how near the approximate sigmoid a uniform must be
#: for `SigmoidBernoulli` to recompute the exact one (>= 100x the largest difference measured).
_C_TYPES = {"float64": ("double", "NPY_FLOAT64", "4.656612873077392578125e-10", "1.0", "1e-12"),
            "float32": ("float", "NPY_FLOAT32", "4.6566126e-10f", "1.0f", "1e-5")}
#: MRG31k3p's moduli (rng_mrg.M1, M2).
M1, M2 = 2147483647, 2147462579

_MRG_SUPPORT = """
/* MRG31k3p exactly as aesara's mrg_uniform computes it: its int32 arithmetic, wrapping on
   overflow (done here in uint32, where wrapping is defined), each sum reduced by one conditional
   subtraction. The state is held by columns (x[c * stride + s]: component c of sub-stream s), so
   that the compiler vectorises the loop over sub-streams; mrg_uniform's rows (s, c) are converted
   on the way in and out. */
static inline npy_int32 wrap_add(npy_int32 a, npy_int32 b) { return (npy_int32)((npy_uint32)a + (npy_uint32)b); }
static inline npy_int32 wrap_shl(npy_int32 a, int s) { return (npy_int32)((npy_uint32)a << s); }
static inline npy_int32 mrg_reduce(npy_int32 y, npy_int32 m) { return (y < 0 || y >= m) ? wrap_add(y, -m) : y; }

/* One step of sub-streams 0..n-1 (component c in column xc); their integer draws (1..M1, scaled to
   (0, 1) by the caller) in draw. The columns are separate restrict parameters: GCC trusts those,
   and vectorises (with pointers into one array it checks for overlap at run time and runs scalar). */
static void mrg_step(const npy_intp n, npy_int32* __restrict__ x0, npy_int32* __restrict__ x1,
                     npy_int32* __restrict__ x2, npy_int32* __restrict__ x3, npy_int32* __restrict__ x4,
                     npy_int32* __restrict__ x5, npy_int32* __restrict__ draw)
{
    const npy_int32 M1 = 2147483647, M2 = 2147462579, MULT2 = 21069;
    for (npy_intp s = 0; s < n; ++s) {
        const npy_int32 x11 = x0[s], x12 = x1[s], x13 = x2[s], x21 = x3[s], x22 = x4[s], x23 = x5[s];
        npy_int32 y1 = wrap_add(wrap_add(wrap_shl(x12 & 511, 22), x12 >> 9), wrap_add(wrap_shl(x13 & 16777215, 7), x13 >> 24));
        y1 = mrg_reduce(wrap_add(mrg_reduce(y1, M1), x13), M1);
        const npy_int32 z1 = mrg_reduce(wrap_add((x21 & 65535) << 15, MULT2 * (x21 >> 16)), M2);
        npy_int32 z2 = mrg_reduce(wrap_add((x23 & 65535) << 15, MULT2 * (x23 >> 16)), M2);
        z2 = mrg_reduce(wrap_add(mrg_reduce(wrap_add(z2, x23), M2), z1), M2);
        x0[s] = y1; x1[s] = x11; x2[s] = x12; x3[s] = z2; x4[s] = x21; x5[s] = x22;
        draw[s] = y1 <= z2 ? y1 - z2 + M1 : y1 - z2;
    }
}

/* mrg_step on the state x held by columns of length stride. */
static void mrg_draw(const npy_intp n, const npy_intp stride, npy_int32* x, npy_int32* __restrict__ draw)
{
    mrg_step(n, x, x + stride, x + 2 * stride, x + 3 * stride, x + 4 * stride, x + 5 * stride, draw);
}

/* exp(t) to ~1e-14 relative for |t| <= 700 (t clamped there), in plain arithmetic that the compiler
   vectorises: t = k ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor polynomial of degree 11. */
static inline double approx_exp(double t)
{
    t = t < -700.0 ? -700.0 : (t > 700.0 ? 700.0 : t);
    const double shifter = 6755399441055744.0;  /* 1.5 * 2^52: adding it rounds to an integer */
    double k = t * 1.4426950408889634 + shifter;
    k -= shifter;
    const double r = (t - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
    double p = 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0; p = p * r + 1.0 / 362880.0; p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0; p = p * r + 1.0 / 720.0; p = p * r + 1.0 / 120.0; p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0; p = p * r + 0.5; p = p * r + 1.0; p = p * r + 1.0;
    const npy_int64 bits = ((npy_int64)k + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* p[s] = 1 / (1 + approx_exp(-p[s])): in place on doubles, the one form GCC vectorises (with floats
   converted in the same loop it does not). */
static void approx_sigmoid(const npy_intp n, double* p)
{
    for (npy_intp s = 0; s < n; ++s) p[s] = 1.0 / (1.0 + approx_exp(-p[s]));
}

/* Between an MRG state by rows (n x 6, mrg_uniform's) and by columns (6 x n). */
static void mrg_rows_to_columns(const npy_intp n, const npy_int32* __restrict__ rows, npy_int32* __restrict__ cols)
{
    for (int c = 0; c < 6; ++c)  /* this loop order, and the other in mrg_columns_to_rows, measured fastest */
        for (npy_intp s = 0; s < n; ++s) cols[c * n + s] = rows[6 * s + c];
}

static void mrg_columns_to_rows(const npy_intp n, const npy_int32* __restrict__ cols, npy_int32* __restrict__ rows)
{
    for (npy_intp s = 0; s < n; ++s)
        for (int c = 0; c < 6; ++c) rows[6 * s + c] = cols[c * n + s];
}
"""

_SAMPLER_TEMPLATE = """
/* out[i] = [u_i < {ONE} / ({ONE} + exp(-pre[i]))] for i < n, the expression and type of Aesara's
   sigmoid, u_i from sub-stream i mod n_streams (mrg_uniform's order: a sub-stream serves elements
   i, i + n_streams, ... in turn). The comparison is first made with approx_sigmoid, and redone with
   exp where u_i is within {EPS} of the approximate sigmoid (a fraction of about 2 x {EPS} of them):
   the approximation is within 1e-14 of the exact sigmoid, Aesara's float sigmoid within a few
   float ulps, so every other decision is certain. draw, unsure (int32) and sig (double) are
   scratch of min(n, n_streams); each loop is one the compiler vectorises. */
static void sigmoid_bernoulli_{T}(const npy_intp n, const npy_intp n_streams, npy_int32* __restrict__ state,
                                  const {T}* __restrict__ pre, {T}* __restrict__ out,
                                  npy_int32* __restrict__ draw, npy_int32* __restrict__ unsure, double* __restrict__ sig)
{{
    for (npy_intp start = 0; start < n; start += n_streams) {{
        const npy_intp m = n - start < n_streams ? n - start : n_streams;
        const {T}* __restrict__ x = pre + start;
        {T}* __restrict__ y = out + start;
        mrg_draw(m, n_streams, state, draw);
        for (npy_intp s = 0; s < m; ++s) sig[s] = x[s];
        approx_sigmoid(m, sig);
        for (npy_intp s = 0; s < m; ++s) {{
            const double u = ({T})(draw[s] * {NORM});
            y[s] = ({T})(u < sig[s]);
            unsure[s] = !((u - sig[s] > {EPS}) | (sig[s] - u > {EPS}));  /* also where pre is NaN */
        }}
        for (npy_intp s = 0; s < m; ++s)
            if (unsure[s]) {{
                const {T} u = draw[s] * {NORM};
                y[s] = u < {ONE} / ({ONE} + exp(-x[s])) ? 1 : 0;
            }}
    }}
}}
"""

_RNN_TEMPLATE = """
/* U (T x n): u_t = tanh(a_t + u_{{t-1}} W), u_{{-1}} = 0; y is scratch of length n. */
static void rnn_forward_{T}(const npy_intp T, const npy_intp n, const {T}* __restrict__ A,
                            const {T}* __restrict__ W, {T}* __restrict__ U, {T}* __restrict__ y)
{{
    for (npy_intp t = 0; t < T; ++t) {{
        for (npy_intp j = 0; j < n; ++j) y[j] = 0;
        for (npy_intp k = 0; t > 0 && k < n; ++k) {{
            const {T} uk = U[(t - 1) * n + k];
            for (npy_intp j = 0; j < n; ++j) y[j] += uk * W[k * n + j];
        }}
        for (npy_intp j = 0; j < n; ++j) U[t * n + j] = tanh(A[t * n + j] + y[j]);
    }}
}}

/* G (T x n), the gradient with respect to the pre-activations a_t + u_{{t-1}} W, given dU, the
   gradient with respect to each u_t from outside the recurrence. WT is W transposed (so that
   back = g Wᵀ is a sum of contiguous rows, which vectorises); back is scratch of length n. */
static void rnn_backward_{T}(const npy_intp T, const npy_intp n, const {T}* __restrict__ dU,
                             const {T}* __restrict__ U, const {T}* __restrict__ WT, {T}* __restrict__ G,
                             {T}* __restrict__ back)
{{
    for (npy_intp k = 0; k < n; ++k) back[k] = 0;
    for (npy_intp t = T - 1; t >= 0; --t) {{
        {T}* __restrict__ g = G + t * n;
        for (npy_intp j = 0; j < n; ++j) {{
            const {T} u = U[t * n + j];
            g[j] = (dU[t * n + j] + back[j]) * (1 - u * u);
        }}
        for (npy_intp k = 0; k < n; ++k) back[k] = 0;
        for (npy_intp j = 0; j < n; ++j) {{
            const {T} gj = g[j];
            for (npy_intp k = 0; k < n; ++k) back[k] += gj * WT[j * n + k];
        }}
    }}
}}
"""


def _for_both_types(template: str) -> str:
    """`template` (a str.format template) instantiated for float64 and float32."""
    return "".join(template.format(T=ctype, NORM=norm, ONE=one, EPS=eps) for ctype, _, norm, one, eps in _C_TYPES.values())


def _output_like(name: str, dims: str, ndim: int, typenum: str, fail: str) -> str:
    """C: (re)allocate output `name` as a C-contiguous array of shape `dims` unless it already is one."""
    same = " || ".join(f"PyArray_DIMS({name})[{d}] != {dims}[{d}]" for d in range(ndim))
    return f"""
    if (!{name} || PyArray_NDIM({name}) != {ndim} || {same} || !PyArray_IS_C_CONTIGUOUS({name})) {{
        Py_XDECREF({name});
        {name} = (PyArrayObject*)PyArray_EMPTY({ndim}, {dims}, {typenum}, 0);
        if (!{name}) {{ {fail} }}
    }}"""


def _contiguous(inputs: dict[str, str]) -> tuple[str, str]:
    """C: `<name>_c`, a C-contiguous array (the input itself when it is one) for each input, and the
    code releasing them."""
    take = "\n".join(f"PyArrayObject* {name}_c = PyArray_GETCONTIGUOUS({var});" for name, var in inputs.items())
    return take, " ".join(f"Py_DECREF({name}_c);" for name in inputs)


class _Kernel(COp):
    __props__ = ()
    support_code = ""  # the C functions the op calls

    def c_support_code(self, **kwargs):
        return self.support_code

    def c_code_cache_version(self):
        """Aesara reuses a compiled module of the same version: the kernels' checksum keeps an edit
        of them from running stale code (bump the first number when editing an op's `c_code`)."""
        return (4, zlib.crc32(self.support_code.encode()))


# -- random numbers ------------------------------------------------------------------------------


def mrg_draws(columns: np.ndarray, n: int) -> np.ndarray:
    """numpy twin of the C `mrg_draw` loop for n numbers: advances `columns` (an MRG state by
    columns, 6 x n_streams int32) in place and returns the n integer draws in 1..M1, element i from
    sub-stream i mod n_streams."""
    i32 = np.int32
    draws = np.empty(n, dtype="int32")

    def reduce(y, m):
        return np.where((y < 0) | (y >= m), y - i32(m), y)

    n_streams = columns.shape[1]
    for start in range(0, n, n_streams):
        x = columns[:, : min(n_streams, n - start)]
        x11, x12, x13, x21, x22, x23 = x.copy()
        y1 = ((x12 & i32(511)) << i32(22)) + (x12 >> i32(9)) + ((x13 & i32(16777215)) << i32(7)) + (x13 >> i32(24))
        y1 = reduce(reduce(y1, M1) + x13, M1)
        z1 = reduce(((x21 & i32(65535)) << i32(15)) + i32(21069) * (x21 >> i32(16)), M2)
        z2 = reduce(((x23 & i32(65535)) << i32(15)) + i32(21069) * (x23 >> i32(16)), M2)
        z2 = reduce(reduce(z2 + x23, M2) + z1, M2)
        x[:] = [y1, x11, x12, z2, x21, x22]
        draws[start : start + x.shape[1]] = np.where(y1 <= z2, y1 - z2 + i32(M1), y1 - z2)
    return draws


def _libm_exp(t: float) -> float:
    """The C library's exp, which Aesara's sigmoid calls (math.exp is it, but raises on overflow)."""
    try:
        return math.exp(t)
    except OverflowError:
        return math.inf


class SigmoidBernoulli(_Kernel):
    """(rstate: int32 MRG state, pre: any float tensor) → (new rstate, sample of pre's shape and type).

    sample = [u < sigmoid(pre)], exactly what the tutorial's `srng.binomial(size=pre.shape, n=1,
    p=sigmoid(pre))` draws from the MRG state `rstate` when floatX is pre's type (which is the
    uniforms' type); the new state is what that call leaves.

    A state is held by rows (n_streams×6, `mrg_uniform`'s, what the shared variable holds) or by
    columns (6×n_streams, what the C loop vectorises over); `rows_in` and `rows_out` say which
    comes in and goes out, so that a chain of draws converts once at each end. Between two draws by
    columns the state is advanced in place once the graph is compiled (`inplace`, set by the rewrite
    below): it holds 15,360 sub-streams, and copying them would cost more than the draws a chunk needs."""

    __props__ = ("rows_in", "rows_out", "inplace")
    support_code = _MRG_SUPPORT + _for_both_types(_SAMPLER_TEMPLATE)

    def __init__(self, rows_in: bool = True, rows_out: bool = True, inplace: bool = False):
        super().__init__()
        self.rows_in, self.rows_out, self.inplace = rows_in, rows_out, inplace
        if inplace:
            if rows_in or rows_out:
                raise ValueError("only a state by columns in and out is advanced in place")
            self.destroy_map = {0: [0]}

    def make_node(self, rstate, pre):
        rstate, pre = at.as_tensor_variable(rstate), at.as_tensor_variable(pre)
        if rstate.dtype != "int32" or rstate.ndim != 2 or pre.dtype not in _C_TYPES or pre.ndim == 0:
            raise TypeError("SigmoidBernoulli needs an int32 MRG state matrix and a float tensor of 1 or more dims")
        return Apply(self, [rstate, pre], [rstate.type(), pre.type()])

    def perform(self, node, inputs, outputs):
        rstate, pre = inputs
        columns = rstate.T.copy() if self.rows_in else (rstate if self.inplace else rstate.copy())
        dtype, x = pre.dtype, pre.ravel()
        scale = np.float64(4.656612873077392578125e-10) if dtype == "float64" else np.float32(4.6566126e-10)
        u = mrg_draws(columns, pre.size).astype(dtype) * scale
        one = dtype.type(1)
        with np.errstate(over="ignore"):
            p = one / (one + np.exp(-x))
        eps = float(_C_TYPES[dtype.name][4])
        for i in np.flatnonzero(~(np.abs(u - p) > eps)):  # numpy's exp may differ from libm's in the last bit
            p[i] = one / (one + dtype.type(_libm_exp(-float(x[i]))))
        outputs[0][0] = columns.T.copy() if self.rows_out else columns
        outputs[1][0] = (u < p).astype(dtype).reshape(pre.shape)

    def grad(self, inputs, output_grads):
        return [grad_undefined(self, i, x, "no gradient through random sampling") for i, x in enumerate(inputs)]

    def c_code(self, node, name, inputs, outputs, sub):
        rstate, pre = inputs
        o_rstate, o_sample = outputs
        ctype, typenum, *_ = _C_TYPES[node.inputs[1].dtype]
        ndim, fail = node.inputs[1].ndim, sub["fail"]
        n_axis, six_axis = (0, 1) if self.rows_in else (1, 0)
        if self.rows_in:  # the working state by columns: converted from rows, advanced in place, or a copy
            columns = "(PyArrayObject*)PyArray_EMPTY(2, col_dims, NPY_INT32, 0);"
            fill = "mrg_rows_to_columns(n_streams, (npy_int32*)PyArray_DATA(st), (npy_int32*)PyArray_DATA(cols));"
        else:
            columns = "st; Py_INCREF(st);" if self.inplace else "(PyArrayObject*)PyArray_NewCopy(st, NPY_CORDER);"
            fill = ""
        if self.rows_out:
            result = f"""
            {o_rstate} = (PyArrayObject*)PyArray_EMPTY(2, row_dims, NPY_INT32, 0);
            if ({o_rstate}) mrg_columns_to_rows(n_streams, (npy_int32*)PyArray_DATA(cols), (npy_int32*)PyArray_DATA({o_rstate}));
            Py_DECREF(cols);"""
        else:
            result = f"{o_rstate} = cols;"
        return f"""
        {{
        PyArrayObject* st = PyArray_GETCONTIGUOUS({rstate});
        if (!st) {{ {fail} }}
        if (PyArray_NDIM(st) != 2 || PyArray_DIMS(st)[{six_axis}] != 6) {{
            Py_DECREF(st);
            PyErr_SetString(PyExc_ValueError, "SigmoidBernoulli: not an MRG state of this layout");
            {fail}
        }}
        const npy_intp n_streams = PyArray_DIMS(st)[{n_axis}];
        npy_intp col_dims[2] = {{6, n_streams}}, row_dims[2] = {{n_streams, 6}};
        PyArrayObject* cols = {columns}
        if (!cols) {{ Py_DECREF(st); {fail} }}
        {fill}
        Py_DECREF(st);
        PyArrayObject* pre_c = PyArray_GETCONTIGUOUS({pre});
        {_output_like(o_sample, "PyArray_DIMS(pre_c)", ndim, typenum, "Py_DECREF(pre_c); Py_DECREF(cols); " + fail)}
        const npy_intp n = PyArray_SIZE(pre_c), m = n_streams < n ? n_streams : n;
        double* sig = (double*)malloc(m * (sizeof(double) + 2 * sizeof(npy_int32)) + 1);
        if (!sig) {{ Py_DECREF(pre_c); Py_DECREF(cols); PyErr_NoMemory(); {fail} }}
        npy_int32* draw = (npy_int32*)(sig + m);
        sigmoid_bernoulli_{ctype}(n, n_streams, (npy_int32*)PyArray_DATA(cols), ({ctype}*)PyArray_DATA(pre_c),
                                  ({ctype}*)PyArray_DATA({o_sample}), draw, draw + m, sig);
        free(sig);
        Py_DECREF(pre_c);
        Py_XDECREF({o_rstate});
        {result}
        if (!{o_rstate}) {{ {fail} }}
        }}
        """


@node_rewriter([SigmoidBernoulli])
def sigmoid_bernoulli_inplace(fgraph, node):
    op = node.op
    if op.rows_in or op.rows_out or op.inplace:
        return False
    return SigmoidBernoulli(rows_in=False, rows_out=False, inplace=True).make_node(*node.inputs).outputs


optdb.register("sigmoid_bernoulli_inplace", in2out(sigmoid_bernoulli_inplace, ignore_newtrees=True),
               "fast_run", "inplace", position=99)


# -- the RNN recurrence --------------------------------------------------------------------------


class RnnRecurrence(_Kernel):
    """(A: T×n, W: n×n) → U: T×n with u_t = tanh(a_t + u_{t-1}·W), u_{-1} = 0."""

    support_code = _for_both_types(_RNN_TEMPLATE)

    def make_node(self, A, W):
        A, W = at.as_tensor_variable(A), at.as_tensor_variable(W)
        if A.dtype != W.dtype or A.dtype not in _C_TYPES or A.ndim != 2 or W.ndim != 2:
            raise TypeError("RnnRecurrence needs two float matrices of one dtype")
        return Apply(self, [A, W], [at.matrix(dtype=A.dtype)])

    def perform(self, node, inputs, outputs):
        A, W = inputs
        U = np.zeros_like(A)
        u = np.zeros(W.shape[0], A.dtype)
        for t in range(len(A)):
            u = U[t] = np.tanh(A[t] + u @ W)
        outputs[0][0] = U

    def grad(self, inputs, output_grads):
        A, W = inputs
        (dU,) = output_grads
        U = self(A, W)
        G = RnnRecurrenceGrad()(dU, U, W)
        u_prev = at.concatenate([at.zeros_like(U[:1]), U[:-1]], axis=0)
        return [G, at.dot(u_prev.T, G)]

    def c_code(self, node, name, inputs, outputs, sub):
        A, W = inputs
        (U,) = outputs
        ctype, typenum, *_ = _C_TYPES[node.inputs[0].dtype]
        fail = sub["fail"]
        take, release = _contiguous({"A": A, "W": W})
        return f"""
        {{
        {take}
        const npy_intp T = PyArray_DIMS(A_c)[0], n = PyArray_DIMS(W_c)[0];
        if (PyArray_DIMS(A_c)[1] != n || PyArray_DIMS(W_c)[1] != n) {{
            {release}
            PyErr_SetString(PyExc_ValueError, "RnnRecurrence: A must be T x n and W n x n");
            {fail}
        }}
        {_output_like(U, "PyArray_DIMS(A_c)", 2, typenum, release + fail)}
        {ctype}* y = ({ctype}*)malloc(n * sizeof({ctype}) + 1);
        if (!y) {{ {release} PyErr_NoMemory(); {fail} }}
        rnn_forward_{ctype}(T, n, ({ctype}*)PyArray_DATA(A_c), ({ctype}*)PyArray_DATA(W_c),
                            ({ctype}*)PyArray_DATA({U}), y);
        free(y);
        {release}
        }}
        """


class RnnRecurrenceGrad(_Kernel):
    """(dU: T×n, U: T×n, W: n×n) → G: T×n, the gradient with respect to a_t + u_{t-1}·W (so also
    with respect to A)."""

    support_code = RnnRecurrence.support_code

    def make_node(self, dU, U, W):
        ins = [at.as_tensor_variable(x) for x in (dU, U, W)]
        return Apply(self, ins, [at.matrix(dtype=ins[1].dtype)])

    def perform(self, node, inputs, outputs):
        dU, U, W = inputs
        G = np.zeros_like(U)
        back = np.zeros(W.shape[0], U.dtype)
        for t in range(len(U) - 1, -1, -1):
            G[t] = (dU[t] + back) * (1 - U[t] * U[t])
            back = W @ G[t]
        outputs[0][0] = G

    def c_code(self, node, name, inputs, outputs, sub):
        dU, U, W = inputs
        (G,) = outputs
        ctype, typenum, *_ = _C_TYPES[node.inputs[1].dtype]
        fail = sub["fail"]
        take, release = _contiguous({"dU": dU, "U": U})
        release += " Py_DECREF(WT_c);"
        return f"""
        {{
        {take}
        PyObject* W_t = PyArray_Transpose({W}, NULL);
        PyArrayObject* WT_c = (PyArrayObject*)PyArray_NewCopy((PyArrayObject*)W_t, NPY_CORDER);
        Py_DECREF(W_t);
        const npy_intp T = PyArray_DIMS(U_c)[0], n = PyArray_DIMS(U_c)[1];
        {_output_like(G, "PyArray_DIMS(U_c)", 2, typenum, release + fail)}
        {ctype}* back = ({ctype}*)malloc(n * sizeof({ctype}) + 1);
        if (!back) {{ {release} PyErr_NoMemory(); {fail} }}
        rnn_backward_{ctype}(T, n, ({ctype}*)PyArray_DATA(dU_c), ({ctype}*)PyArray_DATA(U_c),
                             ({ctype}*)PyArray_DATA(WT_c), ({ctype}*)PyArray_DATA({G}), back);
        free(back);
        {release}
        }}
        """

