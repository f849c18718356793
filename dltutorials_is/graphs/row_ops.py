"""Gathering rows of a matrix by index, and its gradient, adding rows into a zero matrix by index.

Aesara's own ops for these (`AdvancedSubtensor1` and, for the gradient, `AdvancedIncSubtensor1`) go
through numpy's general fancy-indexing machinery, element by element: in the fast LSTM step and in a
FIM private step the gradient's scatter cost more than some of the matrix products. These are one C
loop each. `ScatterAddRows` adds in index order, as `AdvancedIncSubtensor1` does, so repeated indices
(a word used twice, a review's time steps) sum in the same order and the results are the same bits.
`perform` is the numpy fallback where Aesara has no C compiler.
"""
from __future__ import annotations

import numpy as np
import aesara.tensor as at
from aesara.graph.basic import Apply
from aesara.gradient import disconnected_type
from aesara.link.c.op import COp

_TYPENUMS = {"float64": "NPY_FLOAT64", "float32": "NPY_FLOAT32"}


def _checked(matrix, index):
    matrix, index = at.as_tensor_variable(matrix), at.as_tensor_variable(index)
    if matrix.ndim != 2 or matrix.dtype not in _TYPENUMS or index.ndim != 1 or index.dtype != "int64":
        raise TypeError("row ops take a float matrix and an int64 index vector")
    return matrix, index


def contiguous_output(name: str, dims: str, typenum: str, fail: str) -> str:
    """C code making output `name` a C-contiguous 2-D array of shape `dims` (a C array of two npy_intp),
    reusing it when it already is one; runs `fail` if it cannot be allocated."""
    return f"""
    if (!{name} || PyArray_NDIM({name}) != 2 || PyArray_DIMS({name})[0] != {dims}[0]
        || PyArray_DIMS({name})[1] != {dims}[1] || !PyArray_IS_C_CONTIGUOUS({name})) {{
        Py_XDECREF({name});
        {name} = (PyArrayObject*)PyArray_EMPTY(2, {dims}, {typenum}, 0);
        if (!{name}) {{ {fail} }}
    }}"""


def _c_index_check(index: str, n_rows: str, release: str, fail: str) -> str:
    return f"""
        for (npy_intp i = 0; i < PyArray_DIMS({index})[0]; ++i) {{
            const npy_int64 r = ((npy_int64*)PyArray_DATA({index}))[i];
            if (r < 0 || r >= {n_rows}) {{
                {release}
                PyErr_Format(PyExc_IndexError, "row index %lld out of range for %lld rows", (long long)r,
                             (long long){n_rows});
                {fail}
            }}
        }}"""


class GatherRows(COp):
    """(M: n×c, index: L) → M[index]: L×c."""

    __props__ = ()

    def make_node(self, matrix, index):
        matrix, index = _checked(matrix, index)
        return Apply(self, [matrix, index], [at.matrix(dtype=matrix.dtype)])

    def perform(self, node, inputs, outputs):
        matrix, index = inputs
        outputs[0][0] = matrix[index]

    def grad(self, inputs, output_grads):
        matrix, index = inputs
        return [ScatterAddRows()(output_grads[0], index, matrix.shape[0]), disconnected_type()]

    def connection_pattern(self, node):
        return [[True], [False]]

    def c_code(self, node, name, inputs, outputs, sub):
        matrix, index = inputs
        (out,) = outputs
        typenum, fail = _TYPENUMS[node.inputs[0].dtype], sub["fail"]
        release = "Py_DECREF(M_c); Py_DECREF(i_c);"
        return f"""
        {{
        PyArrayObject* M_c = PyArray_GETCONTIGUOUS({matrix});
        PyArrayObject* i_c = PyArray_GETCONTIGUOUS({index});
        const npy_intp n = PyArray_DIMS(M_c)[0], c = PyArray_DIMS(M_c)[1], L = PyArray_DIMS(i_c)[0];
        {_c_index_check("i_c", "n", release, fail)}
        npy_intp dims[2] = {{L, c}};
        {contiguous_output(out, "dims", typenum, release + fail)}
        const npy_int64* idx = (const npy_int64*)PyArray_DATA(i_c);
        const size_t row = (size_t)c * PyArray_ITEMSIZE(M_c);
        for (npy_intp i = 0; i < L; ++i)
            memcpy((char*)PyArray_DATA({out}) + i * row, (char*)PyArray_DATA(M_c) + idx[i] * row, row);
        {release}
        }}
        """

    def c_code_cache_version(self):
        return (2,)


class ScatterAddRows(COp):
    """(V: L×c, index: L, n) → an n×c matrix of zeros with V[i] added to row index[i], i = 0, 1, … in order."""

    __props__ = ()

    def make_node(self, values, index, n_rows):
        values, index = _checked(values, index)
        n_rows = at.as_tensor_variable(n_rows)
        if n_rows.ndim != 0 or n_rows.dtype != "int64":
            raise TypeError("ScatterAddRows needs an int64 scalar number of rows")
        return Apply(self, [values, index, n_rows], [at.matrix(dtype=values.dtype)])

    def perform(self, node, inputs, outputs):
        values, index, n_rows = inputs
        out = np.zeros((int(n_rows), values.shape[1]), dtype=values.dtype)
        np.add.at(out, index, values)  # unbuffered: in index order
        outputs[0][0] = out

    def grad(self, inputs, output_grads):
        values, index, n_rows = inputs
        return [GatherRows()(output_grads[0], index), disconnected_type(), disconnected_type()]

    def connection_pattern(self, node):
        return [[True], [False], [False]]

    def c_code(self, node, name, inputs, outputs, sub):
        values, index, n_rows = inputs
        (out,) = outputs
        ctype = "double" if node.inputs[0].dtype == "float64" else "float"
        typenum, fail = _TYPENUMS[node.inputs[0].dtype], sub["fail"]
        release = "Py_DECREF(V_c); Py_DECREF(i_c);"
        return f"""
        {{
        PyArrayObject* V_c = PyArray_GETCONTIGUOUS({values});
        PyArrayObject* i_c = PyArray_GETCONTIGUOUS({index});
        const npy_intp L = PyArray_DIMS(V_c)[0], c = PyArray_DIMS(V_c)[1];
        const npy_intp n = (npy_intp)*(npy_int64*)PyArray_DATA({n_rows});
        if (PyArray_DIMS(i_c)[0] != L) {{
            {release}
            PyErr_SetString(PyExc_ValueError, "ScatterAddRows: one index per row of values");
            {fail}
        }}
        {_c_index_check("i_c", "n", release, fail)}
        npy_intp dims[2] = {{n, c}};
        {contiguous_output(out, "dims", typenum, release + fail)}
        {ctype}* o = ({ctype}*)PyArray_DATA({out});
        const {ctype}* v = (const {ctype}*)PyArray_DATA(V_c);
        const npy_int64* idx = (const npy_int64*)PyArray_DATA(i_c);
        memset(o, 0, (size_t)n * c * sizeof({ctype}));
        for (npy_intp i = 0; i < L; ++i) {{
            {ctype}* __restrict__ dst = o + idx[i] * c;
            const {ctype}* __restrict__ src = v + i * c;
            for (npy_intp j = 0; j < c; ++j) dst[j] += src[j];
        }}
        {release}
        }}
        """

    def c_code_cache_version(self):
        return (2,)


def gather_rows(matrix, index):
    return GatherRows()(matrix, index)


def scatter_add_rows(values, index, n_rows):
    return ScatterAddRows()(values, index, at.as_tensor_variable(n_rows).astype("int64"))
