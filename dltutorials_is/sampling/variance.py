"""Does P reduce gradient variance? Exact trace of the one-sample gradient's variance.

IS-SGD (paper eq. 7) replaces the uniformly drawn gradient g_i by w_i·g_i with i ~ P and
w_i = 1/(N p_i); both estimate the mean gradient ḡ without bias, and what IS promises is a smaller
variance (paper eq. 8). Over a subset S of M samples, with P restricted and renormalised to
q_i = p_i / Σ_{j∈S} p_j (so w_i = 1/(M q_i)):

    uniform:    tr Var = (1/M)  Σ_i ‖g_i‖²       − ‖ḡ‖²
    importance: tr Var = (1/M²) Σ_i ‖g_i‖² / q_i − ‖ḡ‖²
    optimal:    tr Var = (1/M²) (Σ_i ‖g_i‖)²     − ‖ḡ‖²   (q_i ∝ ‖g_i‖, paper eq. 9)

computed exactly from per-sample gradients, streamed so no more than one gradient is held at a
time. Model-agnostic: the caller passes a function returning sample i's gradient blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

GradientFn = Callable[[int], Mapping[str, np.ndarray]]
WHOLE = "all parameters"


@dataclass(frozen=True)
class VarianceRow:
    block: str
    uniform: float
    importance: float
    optimal: float
    mean_sq_norm: float  # ‖ḡ‖², for scale

    @property
    def ratio(self) -> float:
        """tr Var under P / tr Var under uniform sampling: < 1 means P helps."""
        return self.importance / self.uniform


def gradient_variance(
    per_sample_gradient: GradientFn,
    indices: Sequence[int],
    p: np.ndarray,
    blocks: Sequence[str] | Mapping[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]] = (),
    progress: bool = False,
) -> list[VarianceRow]:
    """Trace of the one-sample gradient variance over `indices`, uniform vs P vs optimal.

    `per_sample_gradient(i)` returns sample i's gradient as named blocks that together make up
    the whole parameter vector. `p` is the full-length sampling distribution (indexed by sample).
    `blocks` are parts reported alone besides the whole vector: names of returned blocks, or a
    mapping name → function extracting a view (e.g. W^c, a slice of lstm_W) from the blocks.
    """
    indices = np.asarray(indices)
    p = np.asarray(p, dtype="float64")
    q = p[indices] / p[indices].sum()
    if not np.all(np.isfinite(q)) or np.any(q <= 0):
        raise ValueError("every sample of the subset needs a finite probability > 0")
    views = dict(blocks) if isinstance(blocks, Mapping) else {b: (lambda g, b=b: g[b]) for b in blocks}
    m = len(indices)
    sums: dict[str, np.ndarray] = {}  # Σ_i g_i per returned block, and per view
    sq = dict.fromkeys([WHOLE, *views], 0.0)
    sq_over_q, norm = dict(sq), dict(sq)
    for i, qi in tqdm(list(zip(indices, q)), desc="per-sample gradients", unit="sample", disable=not progress):
        grads = per_sample_gradient(int(i))
        if not sums:
            unknown = [b for b in views if not isinstance(blocks, Mapping) and b not in grads]
            if unknown:
                raise ValueError(f"no gradient block named {unknown}; blocks are {list(grads)}")
        parts = {**{("block", k): v for k, v in grads.items()}, **{("view", k): f(grads) for k, f in views.items()}}
        for key, v in parts.items():
            v = np.asarray(v, dtype="float64")
            sums[key] = sums[key] + v if key in sums else v.copy()
        block_sq = {k: float(np.sum(np.square(v, dtype="float64"))) for k, v in grads.items()}
        for name in sq:
            s = sum(block_sq.values()) if name == WHOLE else float(np.sum(np.square(parts["view", name], dtype="float64")))
            sq[name] += s
            sq_over_q[name] += s / qi
            norm[name] += np.sqrt(s)
    rows = []
    for name in sq:
        keys = [k for k in sums if k[0] == "block"] if name == WHOLE else [("view", name)]
        mean_sq = sum(float(np.sum((sums[k] / m) ** 2)) for k in keys)
        rows.append(
            VarianceRow(
                block=name,
                uniform=sq[name] / m - mean_sq,
                importance=sq_over_q[name] / m**2 - mean_sq,
                optimal=norm[name] ** 2 / m**2 - mean_sq,
                mean_sq_norm=mean_sq,
            )
        )
    return rows


def format_variance(rows: Sequence[VarianceRow], m: int) -> str:
    lines = [f"trace of the one-sample gradient variance over {m} samples",
             f"{'block':>16} {'uniform':>12} {'P (FIM)':>12} {'P/uniform':>10} {'optimal P':>12} {'‖mean g‖²':>12}"]
    for r in rows:
        lines.append(f"{r.block:>16} {r.uniform:12.5g} {r.importance:12.5g} {r.ratio:10.5f} "
                     f"{r.optimal:12.5g} {r.mean_sq_norm:12.5g}")
    return "\n".join(lines)
