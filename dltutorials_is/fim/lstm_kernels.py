"""The LSTM recurrence of one unpadded sequence as two compiled Aesara ops, for fast private training.

At batch size 1 the tutorial's `scan` spends most of a training step on per-time-step overhead
(two scans of ~L inner-graph calls each). FIM trains one review at a time for ~50 steps, so it
uses these ops instead: the forward recurrence and its exact gradient, each one C loop over time.
Everything that is not sequential (the input projection x·W, dU = Σ_t h_{t-1}ᵀ·dpre_t, the
embedding gradient) stays in ordinary Aesara ops, where it runs as a few matrix products.

Math: the tutorial's LSTM step without mask (an unpadded sequence has a mask of ones, and
m·a + (1−m)·b with m = 1 is exactly a):

    pre = h_{t-1}·U + xw_t;  i, f, o = σ(pre_i), σ(pre_f), σ(pre_o);  g = tanh(pre_c)
    c_t = f·c_{t-1} + i·g;   h_t = o·tanh(c_t);    h_{-1} = c_{-1} = 0

`perform` implements the same in numpy (used when no C compiler is configured; and tested
against the C code).
"""
from __future__ import annotations

import numpy as np
import aesara.tensor as at
from aesara.graph.basic import Apply
from aesara.gradient import DisconnectedType
from aesara.link.c.op import COp

_C_TYPES = {"float64": ("double", "NPY_FLOAT64", ""), "float32": ("float", "NPY_FLOAT32", "f")}

_SUPPORT_TEMPLATE = """
/* y[j] = sum_k x[k] * M[k * n_out + j], summed in order k = 0, 1, ...: a vector-matrix product
   with 32 outputs accumulated in registers at a time. */
static void vecmat_{T}(const npy_intp n_in, const npy_intp n_out, const {T}* __restrict__ x,
                       const {T}* __restrict__ M, {T}* __restrict__ y)
{{
    npy_intp j0 = 0;
    for (; j0 + 32 <= n_out; j0 += 32) {{
        {T} acc[32];
        for (int q = 0; q < 32; ++q) acc[q] = 0;
        for (npy_intp k = 0; k < n_in; ++k) {{
            const {T} xk = x[k];
            const {T}* __restrict__ m = M + k * n_out + j0;
            for (int q = 0; q < 32; ++q) acc[q] += xk * m[q];
        }}
        for (int q = 0; q < 32; ++q) y[j0 + q] = acc[q];
    }}
    for (; j0 < n_out; ++j0) {{
        {T} acc = 0;
        for (npy_intp k = 0; k < n_in; ++k) acc += x[k] * M[k * n_out + j0];
        y[j0] = acc;
    }}
}}

static void lstm_forward_{T}(const npy_intp L, const npy_intp d, const {T}* __restrict__ xw,
                             const {T}* __restrict__ U, {T}* __restrict__ H, {T}* __restrict__ C, {T}* __restrict__ G)
{{
    const npy_intp d4 = 4 * d;
    for (npy_intp t = 0; t < L; ++t) {{
        {T}* __restrict__ g = G + t * d4;                 /* pre-activations, then gate values */
        const {T}* __restrict__ x = xw + t * d4;
        if (t > 0) vecmat_{T}(d, d4, H + (t - 1) * d, U, g);
        else for (npy_intp j = 0; j < d4; ++j) g[j] = 0;
        for (npy_intp j = 0; j < d4; ++j) g[j] += x[j];
        for (npy_intp j = 0; j < 3 * d; ++j) g[j] = 1.0{F} / (1.0{F} + exp(-g[j]));
        for (npy_intp j = 3 * d; j < d4; ++j) g[j] = tanh(g[j]);
        {T}* __restrict__ c = C + t * d;
        {T}* __restrict__ h = H + t * d;
        for (npy_intp k = 0; k < d; ++k) {{
            const {T} c_prev = t > 0 ? C[(t - 1) * d + k] : 0;
            c[k] = g[d + k] * c_prev + g[k] * g[3 * d + k];
            h[k] = g[2 * d + k] * tanh(c[k]);
        }}
    }}
}}

/* dXW (L x 4d): gradient of the loss with respect to every pre-activation, given dH, the
   gradient with respect to each h_t from outside the recurrence. UT is U transposed (4d x d),
   dh and dc are scratch vectors of length d. */
static void lstm_backward_{T}(const npy_intp L, const npy_intp d, const {T}* __restrict__ dH,
                              const {T}* __restrict__ C, const {T}* __restrict__ G, const {T}* __restrict__ UT,
                              {T}* __restrict__ dXW, {T}* __restrict__ dh, {T}* __restrict__ dc)
{{
    const npy_intp d4 = 4 * d;
    for (npy_intp k = 0; k < d; ++k) {{ dh[k] = 0; dc[k] = 0; }}
    for (npy_intp t = L - 1; t >= 0; --t) {{
        const {T}* __restrict__ g = G + t * d4;
        const {T}* __restrict__ c = C + t * d;
        {T}* __restrict__ dpre = dXW + t * d4;
        for (npy_intp k = 0; k < d; ++k) {{
            const {T} i = g[k], f = g[d + k], o = g[2 * d + k], cand = g[3 * d + k];
            const {T} c_prev = t > 0 ? C[(t - 1) * d + k] : 0;
            const {T} tc = tanh(c[k]);
            const {T} dht = dH[t * d + k] + dh[k];
            const {T} dct = dc[k] + dht * o * (1 - tc * tc);
            dpre[k] = dct * cand * i * (1 - i);
            dpre[d + k] = dct * c_prev * f * (1 - f);
            dpre[2 * d + k] = dht * tc * o * (1 - o);
            dpre[3 * d + k] = dct * i * (1 - cand * cand);
            dc[k] = dct * f;
        }}
        vecmat_{T}(d4, d, dpre, UT, dh);
    }}
}}
"""


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _contiguous_output(name: str, dims: str, typenum: str, fail: str) -> str:
    return f"""
    if (!{name} || PyArray_NDIM({name}) != 2 || PyArray_DIMS({name})[0] != {dims}[0]
        || PyArray_DIMS({name})[1] != {dims}[1] || !PyArray_IS_C_CONTIGUOUS({name})) {{
        Py_XDECREF({name});
        {name} = (PyArrayObject*)PyArray_EMPTY(2, {dims}, {typenum}, 0);
        if (!{name}) {{ {fail} }}
    }}"""


class _LSTMKernel(COp):
    __props__ = ()

    def c_support_code(self, **kwargs):
        return "".join(_SUPPORT_TEMPLATE.format(T=T, F=F) for T, _, F in _C_TYPES.values())

    def c_code_cache_version(self):
        return (2,)


class LSTMForward(_LSTMKernel):
    """(xw: L×4d, U: d×4d) → (H: L×d, C: L×d, G: L×4d gate values [i, f, o, g])."""

    def make_node(self, xw, U):
        xw, U = at.as_tensor_variable(xw), at.as_tensor_variable(U)
        if xw.dtype != U.dtype or xw.dtype not in _C_TYPES or xw.ndim != 2 or U.ndim != 2:
            raise TypeError("LSTMForward needs two float matrices of one dtype")
        return Apply(self, [xw, U], [at.matrix(dtype=xw.dtype) for _ in range(3)])

    def perform(self, node, inputs, outputs):
        xw, U = inputs
        L, d = xw.shape[0], U.shape[0]
        H, C, G = np.zeros((L, d), xw.dtype), np.zeros((L, d), xw.dtype), np.zeros((L, 4 * d), xw.dtype)
        h, c = np.zeros(d, xw.dtype), np.zeros(d, xw.dtype)
        for t in range(L):
            pre = h @ U + xw[t]
            g = np.concatenate([_sigmoid(pre[: 3 * d]), np.tanh(pre[3 * d :])])
            c = g[d : 2 * d] * c + g[:d] * g[3 * d :]
            h = g[2 * d : 3 * d] * np.tanh(c)
            H[t], C[t], G[t] = h, c, g
        for out, value in zip(outputs, (H, C, G)):
            out[0] = value

    def grad(self, inputs, output_grads):
        xw, U = inputs
        dH, dC, dG = output_grads
        if not (isinstance(dC.type, DisconnectedType) and isinstance(dG.type, DisconnectedType)):
            raise NotImplementedError("only the hidden states H may be differentiated")
        H, C, G = self(xw, U)
        dxw = LSTMBackward()(dH, C, G, U)
        h_prev = at.concatenate([at.zeros_like(H[:1]), H[:-1]], axis=0)
        return [dxw, at.dot(h_prev.T, dxw)]

    def connection_pattern(self, node):
        return [[True, False, False], [True, False, False]]

    def c_code(self, node, name, inputs, outputs, sub):
        xw, U = inputs
        H, C, G = outputs
        ctype, typenum, _ = _C_TYPES[node.inputs[0].dtype]
        fail = sub["fail"]
        return f"""
        {{
        PyArrayObject* xw_c = PyArray_GETCONTIGUOUS({xw});
        PyArrayObject* U_c = PyArray_GETCONTIGUOUS({U});
        const npy_intp L = PyArray_DIMS(xw_c)[0], d = PyArray_DIMS(U_c)[0];
        if (PyArray_DIMS(xw_c)[1] != 4 * d || PyArray_DIMS(U_c)[1] != 4 * d) {{
            Py_DECREF(xw_c); Py_DECREF(U_c);
            PyErr_SetString(PyExc_ValueError, "LSTMForward: xw and U must have 4*d columns");
            {fail}
        }}
        npy_intp hd[2] = {{L, d}}, gd[2] = {{L, 4 * d}};
        {_contiguous_output(H, "hd", typenum, "Py_DECREF(xw_c); Py_DECREF(U_c); " + fail)}
        {_contiguous_output(C, "hd", typenum, "Py_DECREF(xw_c); Py_DECREF(U_c); " + fail)}
        {_contiguous_output(G, "gd", typenum, "Py_DECREF(xw_c); Py_DECREF(U_c); " + fail)}
        lstm_forward_{ctype}(L, d, ({ctype}*)PyArray_DATA(xw_c), ({ctype}*)PyArray_DATA(U_c),
                             ({ctype}*)PyArray_DATA({H}), ({ctype}*)PyArray_DATA({C}),
                             ({ctype}*)PyArray_DATA({G}));
        Py_DECREF(xw_c); Py_DECREF(U_c);
        }}
        """


class LSTMBackward(_LSTMKernel):
    """(dH: L×d, C, G, U) → dXW: L×4d, the gradient with respect to the pre-activations."""

    def make_node(self, dH, C, G, U):
        ins = [at.as_tensor_variable(v) for v in (dH, C, G, U)]
        return Apply(self, ins, [at.matrix(dtype=ins[0].dtype)])

    def perform(self, node, inputs, outputs):
        dH, C, G, U = inputs
        L, d = C.shape
        dXW = np.zeros((L, 4 * d), C.dtype)
        dh, dc = np.zeros(d, C.dtype), np.zeros(d, C.dtype)
        for t in range(L - 1, -1, -1):
            i, f, o, g = G[t, :d], G[t, d : 2 * d], G[t, 2 * d : 3 * d], G[t, 3 * d :]
            c_prev = C[t - 1] if t > 0 else np.zeros(d, C.dtype)
            tc = np.tanh(C[t])
            dht = dH[t] + dh
            dct = dc + dht * o * (1 - tc * tc)
            dXW[t] = np.concatenate([dct * g * i * (1 - i), dct * c_prev * f * (1 - f),
                                     dht * tc * o * (1 - o), dct * i * (1 - g * g)])
            dc = dct * f
            dh = U @ dXW[t]
        outputs[0][0] = dXW

    def c_code(self, node, name, inputs, outputs, sub):
        dH, C, G, U = inputs
        (dXW,) = outputs
        ctype, typenum, _ = _C_TYPES[node.inputs[0].dtype]
        fail = sub["fail"]
        release = "Py_DECREF(dH_c); Py_DECREF(C_c); Py_DECREF(G_c); Py_DECREF(UT_c);"
        return f"""
        {{
        PyArrayObject* dH_c = PyArray_GETCONTIGUOUS({dH});
        PyArrayObject* C_c = PyArray_GETCONTIGUOUS({C});
        PyArrayObject* G_c = PyArray_GETCONTIGUOUS({G});
        PyObject* U_t = PyArray_Transpose({U}, NULL);
        PyArrayObject* UT_c = (PyArrayObject*)PyArray_NewCopy((PyArrayObject*)U_t, NPY_CORDER);
        Py_DECREF(U_t);
        const npy_intp L = PyArray_DIMS(C_c)[0], d = PyArray_DIMS(C_c)[1];
        npy_intp gd[2] = {{L, 4 * d}};
        {_contiguous_output(dXW, "gd", typenum, release + fail)}
        {ctype}* scratch = ({ctype}*)malloc(2 * d * sizeof({ctype}));
        lstm_backward_{ctype}(L, d, ({ctype}*)PyArray_DATA(dH_c), ({ctype}*)PyArray_DATA(C_c),
                              ({ctype}*)PyArray_DATA(G_c), ({ctype}*)PyArray_DATA(UT_c),
                              ({ctype}*)PyArray_DATA({dXW}), scratch, scratch + d);
        free(scratch);
        {release}
        }}
        """
