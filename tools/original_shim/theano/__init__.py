"""`theano` → Aesara compatibility shim for running the original tutorials unmodified (see README.md)."""
from aesara import config, function, grad, scan, shared  # noqa: F401  (the names the tutorials use)
from aesara.tensor.rewriting import math as _math_rewrites

from . import tensor  # noqa: F401  (so `theano.tensor` works after a bare `import theano`)


def _specialise_on_fresh_output_types(rewriter):
    """Make an Aesara 2.9.4 `pow` specialisation work on the tutorials' graphs.

    `g ** 2` in the original adadelta/rmsprop updates reaches `local_pow_specialize(_device)` with
    an output type older (less static shape) than its `Gemm` input's, and the rewrite's
    `assert rval.type == node.outputs[0].type` then fails. Theano turned that `g ** 2` into
    `sqr(g)`; to compute the same numbers (C `pow(x, 2)` differs from `x * x` in the last bit for
    about 1 value in 1200), we let the rewrite see the node with its output type re-inferred from
    its current inputs. The replacement it returns has the more precise type, which the graph accepts.
    """
    rewrite = rewriter.fn

    def fn(fgraph, node):
        return rewrite(fgraph, node.op.make_node(*node.inputs))

    rewriter.fn = fn


for _rewriter in (_math_rewrites.local_pow_specialize, _math_rewrites.local_pow_specialize_device):
    _specialise_on_fresh_output_types(_rewriter)
