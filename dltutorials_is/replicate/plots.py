"""Figures of a replication grid, laid out like the paper's: one row per (batch size, step size) cell,
one column per metric, on three x-axes: epochs (every arm's mean over seeds with a min–max band),
wall-clock seconds and forward-pass units (one line per seed: their clocks do not line up), both
including FIM for the IS arms."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dltutorials_is.replicate.runs import RunLog, load_grid  # noqa: E402
from dltutorials_is.replicate.specs import DEFAULT_ARMS, FIGURES  # noqa: E402

X_AXES = {
    "epoch": "epoch",
    "wall_s": "wall-clock seconds (IS arms include FIM)",
    "units": "forward-pass units (3 per sample update; IS arms include FIM)",
}
ARM_COLOURS = {"uniform": "black", "replacement": "grey", "is-paper": "tab:red", "is-best": "tab:blue",
               "online": "tab:green"}
ARM_LABELS = {"uniform": "uniform (tutorial)", "replacement": "uniform w/ replacement", "is-paper": "IS, FIM norm (paper)",
              "online": "online IS (K&F)"}


def arm_order(arms) -> list[str]:
    return [a for a in DEFAULT_ARMS if a in arms] + sorted(a for a in arms if a not in DEFAULT_ARMS)


def arm_label(arm: str, logs: list[RunLog]) -> str:
    if arm == "is-best":
        kinds = sorted({log.fim_kind for log in logs if log.spec.arm == arm and log.fim_kind})
        return f"IS, FIM {'/'.join(kinds) or 'best'} (max CV)"
    return ARM_LABELS.get(arm, arm)


def band(logs: list[RunLog], x_key: str, metric: str):
    """Mean and min/max over seeds at the x values (epochs) every seed logged."""
    curves = []
    for log in logs:
        x, y = log.series(x_key), log.series(metric)
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.any():
            curves.append(dict(zip(x[keep].tolist(), y[keep].tolist())))
    if not curves:
        return None
    grid = np.array(sorted(set.intersection(*(set(c) for c in curves))))
    if len(grid) == 0:
        return None
    ys = np.array([[c[x] for x in grid] for c in curves])
    return grid, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0), len(curves)


def plotted_runs(logs: list[RunLog]) -> list[RunLog]:
    """The runs drawn: an arm's finished runs in a cell, or, while none has finished, its unfinished ones.
    The report leaves unfinished runs out of every statistic; the curves follow it, else one unfinished
    seed would cut its arm's mean curve short at its last epoch (`band` keeps the epochs all seeds have)."""
    finished = {(log.spec.cell, log.spec.arm) for log in logs if log.done}
    return [log for log in logs if log.records and (log.done or (log.spec.cell, log.spec.arm) not in finished)]


def plot_grid(out: Path, figures_dir: Path, prefix: str | None = None) -> list[Path]:
    """Write `<prefix>_<x-axis>.png` (and the AUC and gradient-variance plots when logged); return the paths."""
    logs = plotted_runs(load_grid(Path(out)))
    if not logs:
        return []
    figure = logs[0].spec.figure
    config = FIGURES[figure]
    prefix = prefix or figure
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    cells = sorted({log.spec.cell for log in logs})
    arms = arm_order({log.spec.arm for log in logs})
    paths = []
    for x_key, x_label in X_AXES.items():
        paths.append(_panel_figure(logs, cells, arms, config.metrics, config, x_key, x_label,
                                   figures_dir / f"{prefix}_{x_key}.png", log_y=config.log_y))
    ranking = [k for k in ("train_auc", "valid_auc") if any(k in r for log in logs for r in log.records)]
    if ranking:  # fig4: the plateau's hidden progress (every review gets the majority class, the ranking improves)
        paths.append(_panel_figure(logs, cells, arms, tuple(ranking), config, "epoch", "epoch",
                                   figures_dir / f"{prefix}_auc.png", y_label="higher is better"))
    if any("grad_var_ratio" in r for log in logs for r in log.records):
        paths.append(_panel_figure(logs, cells, [a for a in arms if a != "uniform"], ("grad_var_ratio",), config,
                                   "epoch", "epoch", figures_dir / f"{prefix}_grad_variance.png",
                                   y_label="gradient variance / uniform's", log_y=True))
    return paths


def _panel_figure(logs, cells, arms, metrics, config, x_key, x_label, path: Path, y_label=None, log_y=False) -> Path:
    fig, axes = plt.subplots(len(cells), len(metrics), figsize=(max(7.0, 5.2 * len(metrics)), 3.0 * len(cells)),
                             squeeze=False, sharex="row")
    for row, cell in enumerate(cells):
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for arm in arms:
                runs = [log for log in logs if log.spec.cell == cell and log.spec.arm == arm]
                colour = ARM_COLOURS.get(arm)
                label = f"{arm_label(arm, logs)} (n={len(runs)})"
                if x_key != "epoch":  # seeds' clocks do not line up (FIM and machine load differ): one line each
                    for k, log in enumerate(runs):
                        ax.plot(log.series(x_key), log.series(metric), color=colour, lw=0.9, alpha=0.8,
                                label=label if k == 0 else None)
                    continue
                summary = band(runs, x_key, metric) if runs else None
                if summary is None:
                    continue
                grid, mean, low, high, n = summary
                ax.plot(grid, mean, color=colour, lw=1.4, label=label, marker="o" if len(grid) < 15 else None, ms=3)
                ax.fill_between(grid, low, high, color=colour, alpha=0.15, lw=0)
            if log_y:
                ax.set_yscale("log")
            if metric == "grad_var_ratio":
                ax.axhline(1.0, color="black", lw=0.6, ls=":")
            what = " — ".join(t for t in (config.metric_labels.get(metric), y_label) if t) or metric
            ax.set_title(f"batch {cell[0]}, λ = {cell[1]:g}: {what}",
                         fontsize=9)
            ax.grid(alpha=0.3)
            if row == len(cells) - 1:
                ax.set_xlabel(x_label, fontsize=8)
            if col == 0:  # one legend per cell: its arms and seed counts differ from cell to cell
                ax.legend(fontsize=7)
    how = "mean over seeds, band = min–max" if x_key == "epoch" else "one line per seed"
    fig.suptitle(f"{config.title} — {how}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
