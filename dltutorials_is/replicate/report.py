"""Write REPLICATION.md from the logs of the Figure 4 and Figure 6 grids.

Every number in the report is read from a grid's files (`runs/*/log.jsonl`, `runs/*/done`,
`fim/*/seed*/fim.json`, `grid.json`) or computed from them here; the verdicts follow fixed rules
stated in the report itself, so feeding other logs flips them.

Statistics, per (cell, arm) against `uniform` with the same seed (paired): the difference of the
mean error over epochs 1..E (area under the curve; "drops faster") and of the last epoch's value.
The exact sign-flip permutation test on the paired differences gives a two-sided p (with n seeds the
smallest possible p is 2/2ⁿ: 0.25 with 3 seeds, so per-cell tests cannot reach 0.05); the Welch t
test on the two groups is given as well. Pooling all cells of a figure gives more pairs.
"""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
from scipy import stats

from dltutorials_is.errors import SettingError
from dltutorials_is.replicate.plots import arm_label, arm_order, plot_grid
from dltutorials_is.replicate.runs import RunLog, load_fim_records, load_grid, load_manifest
from dltutorials_is.replicate.specs import FIGURES

REGRESSION_THRESHOLD = 0.05  # fig6: "regresses" = gives back more than 5% of its progress by the end
MIN_EPOCHS_FOR_CLAIMS = 2
MIN_PAIRS_FOR_SIGNIFICANCE = 6  # the smallest exact two-sided sign-flip p over n pairs is 2 / 2**n


# ---------------------------------------------------------------------------------------------
# Statistics


def sign_flip_p(diffs) -> float:
    """Exact two-sided permutation p of mean(diffs) = 0 under random sign flips (≤ 16 pairs)."""
    d = np.asarray(diffs, dtype="float64")
    if len(d) == 0:
        return float("nan")
    observed = abs(d.mean())
    if len(d) > 16:
        rng = np.random.RandomState(0)
        flips = rng.choice([-1.0, 1.0], size=(65536, len(d)))
    else:
        flips = np.array(list(itertools.product([-1.0, 1.0], repeat=len(d))))
    return float(np.mean(np.abs((flips * d).mean(axis=1)) >= observed - 1e-12))


def welch_p(a, b) -> float:
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def auc(log: RunLog, metric: str) -> float:
    """Mean of the metric over epochs ≥ 1 (the area under the per-epoch curve, per epoch)."""
    values = [r[metric] for r in log.records if r["epoch"] >= 1 and metric in r]
    return float(np.mean(values)) if values else float("nan")


def final(log: RunLog, metric: str) -> float:
    values = [r[metric] for r in log.records if metric in r]
    return float(values[-1]) if values else float("nan")


def upward_variation(log: RunLog, metric: str) -> float:
    """Σ max(0, e_{t+1} − e_t) over epochs ≥ 1: how much a curve goes back up (erratic-ness)."""
    y = np.array([r[metric] for r in log.records if r["epoch"] >= 1 and metric in r])
    return float(np.clip(np.diff(y), 0, None).sum()) if len(y) > 1 else float("nan")


def regression_fraction(log: RunLog, metric: str) -> float:
    """(final − best) / (first − best): the share of its progress a curve gave back by the end."""
    y = np.array([r[metric] for r in log.records if metric in r])
    if len(y) < 2:
        return float("nan")
    progress = y[0] - y.min()
    return float((y[-1] - y.min()) / progress) if progress > 0 else float("nan")


def first_reach(log: RunLog, metric: str, target: float, clock: str) -> float:
    for r in log.records:
        if r.get(metric, np.inf) <= target:
            return float(r[clock])
    return float("nan")


# ---------------------------------------------------------------------------------------------
# Grouping


def finished(logs: list[RunLog]) -> dict:
    """{cell: {arm: {seed: RunLog}}} of finished runs."""
    grouped: dict = {}
    for log in logs:
        if log.done:
            grouped.setdefault(log.spec.cell, {}).setdefault(log.spec.arm, {})[log.spec.seed] = log
    return grouped


def paired(cell_runs: dict, arm: str, statistic, ref: str = "uniform") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arm values, ref values, arm − ref) over the seeds both finished."""
    seeds = sorted(set(cell_runs.get(arm, {})) & set(cell_runs.get(ref, {})))
    a = np.array([statistic(cell_runs[arm][s]) for s in seeds])
    b = np.array([statistic(cell_runs[ref][s]) for s in seeds])
    return a, b, a - b


def fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3g}"


def fmt_ratio(x: float, digits: int = 4) -> str:
    """A ratio to 1, with its distance from 1 shown when `fmt` would round it to 1: the paper's P for
    the LSTM moves the gradient variance by ~1e-6, and "1" next to "share < 1: 0.85" reads as a bug."""
    if x != 1 and fmt(x, digits) == "1":
        return f"1 {'+' if x > 1 else '−'} {abs(x - 1):.2g}"
    return fmt(x, digits)


# ---------------------------------------------------------------------------------------------
# Claims


def comparison_table(grouped: dict, arms: list[str], statistic, label: str, ref: str = "uniform"
                     ) -> tuple[list[str], dict]:
    """Markdown rows of arm − ref per cell (paired by seed); returns also {arm: {cell: diffs}}."""
    rows = [f"| cell | arm | {label}: arm | {ref} | mean Δ (arm − {ref}) | seeds with Δ<0 | sign-flip p | Welch p |",
            "|---|---|---|---|---|---|---|---|"]
    diffs: dict = {}
    for cell in sorted(grouped):
        for arm in arms:
            a, b, d = paired(grouped[cell], arm, statistic, ref)
            if len(d) == 0:
                continue
            diffs.setdefault(arm, {})[cell] = d
            rows.append(f"| b={cell[0]}, λ={cell[1]:g} | {arm} | {fmt(a.mean())} ± {fmt(a.std())} | "
                        f"{fmt(b.mean())} ± {fmt(b.std())} | {fmt(d.mean())} | {int(np.sum(d < 0))}/{len(d)} | "
                        f"{fmt_p(sign_flip_p(d))} | {fmt_p(welch_p(a, b))} |")
    return rows, diffs


def control_section(grouped: dict, arms: list[str], logs: list[RunLog], statistic, measured: str) -> list[str]:
    """IS arms against the with-replacement control: is a gain due to importance, or to i.i.d. draws?"""
    arms = [a for a in arms if a != "replacement"]
    if not arms or not any("replacement" in runs for runs in grouped.values()):
        return []
    rows, diffs = comparison_table(grouped, arms, statistic, measured, ref="replacement")
    lines = _claim(
        "(control, not the paper's) IS beats uniform sampling *with replacement*",
        f"{measured}, paired by seed, Δ = arm − replacement; IS and replacement both draw i.i.d., so this "
        "isolates the effect of the probabilities; held = Δ<0 on average in every cell",
        [(arm_label(a, logs), every_cell_verdict(diffs.get(a, {}))) for a in arms],
    )
    return lines + rows + [""]


def every_cell_verdict(cell_diffs: dict) -> tuple[str, str]:
    """Held if IS is better (Δ<0) on average in every cell; 'consistently' if in every seed too."""
    if not cell_diffs:
        return "not measured", "no finished paired runs"
    means = {cell: d.mean() for cell, d in cell_diffs.items()}
    pooled = np.concatenate(list(cell_diffs.values()))
    pooled_note = f"pooled over {len(pooled)} (cell, seed) pairs: mean Δ {fmt(pooled.mean())}, sign-flip p {fmt_p(sign_flip_p(pooled))}"
    if len(pooled) < MIN_PAIRS_FOR_SIGNIFICANCE:
        pooled_note += (f" (a direction, not evidence: with fewer than {MIN_PAIRS_FOR_SIGNIFICANCE} pairs no "
                        "sign-flip p can fall below 0.05)")
    losing = [cell for cell, m in means.items() if not m < 0]
    if losing:
        cells = ", ".join(f"b={c[0]} λ={c[1]:g}" for c in sorted(losing))
        return "did not hold", f"not better on average at {cells}; {pooled_note}"
    if all(np.all(d < 0) for d in cell_diffs.values()):
        return "held", f"better in every cell and every seed; {pooled_note}"
    return "held on average", f"better on average in every cell, but not in every seed; {pooled_note}"


def gain_by_step_verdict(cell_diffs: dict, best_step: float = 0.5, small_step: float = 0.1) -> tuple[str, str]:
    """Fig 4: the gain (−mean Δ) is largest at λ=0.5 and small at λ=0.1."""
    gains = {cell[1]: -d.mean() for cell, d in cell_diffs.items()}
    if best_step not in gains or small_step not in gains:
        return "not measured", f"needs step sizes {best_step} and {small_step} in the grid"
    text = ", ".join(f"λ={lr:g}: {fmt(g)}" for lr, g in sorted(gains.items()))
    largest = max(gains, key=gains.get)
    if largest == best_step and gains[small_step] < gains[best_step]:
        return "held", f"gain (uniform − IS) {text}; largest at λ={best_step:g}"
    return "did not hold", f"gain (uniform − IS) {text}; largest at λ={largest:g}"


def pooled_verdict(cell_diffs: dict) -> tuple[str, str]:
    if not cell_diffs:
        return "not measured", "no finished paired runs"
    pooled = np.concatenate(list(cell_diffs.values()))
    p = sign_flip_p(pooled)
    note = f"mean Δ {fmt(pooled.mean())} over {len(pooled)} (cell, seed) pairs, sign-flip p {fmt_p(p)}"
    if not pooled.mean() < 0:
        return "did not hold", note
    return ("held" if p < 0.05 else "direction as claimed, not significant"), note


def regression_verdict(cell_runs: dict, arm: str, metric: str) -> tuple[str, str]:
    """Fig 6: uniform gives back > 5% of its progress, the IS arm does not (on average over seeds)."""
    r_arm, r_uni, _ = paired(cell_runs, arm, lambda log: regression_fraction(log, metric))
    if len(r_arm) == 0:
        return "not measured", "no finished paired runs"
    note = (f"share of progress given back by the last epoch: uniform {fmt(np.nanmean(r_uni), 3)} "
            f"(per seed {', '.join(fmt(x, 3) for x in r_uni)}), {arm} {fmt(np.nanmean(r_arm), 3)} "
            f"(per seed {', '.join(fmt(x, 3) for x in r_arm)})")
    uniform_regresses = np.nanmean(r_uni) > REGRESSION_THRESHOLD
    arm_keeps_decreasing = np.nanmean(r_arm) <= REGRESSION_THRESHOLD
    if uniform_regresses and arm_keeps_decreasing:
        return "held", note
    if not uniform_regresses:
        return "did not hold", "uniform did not regress here: " + note
    return "did not hold", f"{arm} regressed too: " + note


def time_to_target_rows(grouped: dict, arms: list[str], metric: str) -> list[str]:
    """Target per cell: the worst of the uniform seeds' best values (so every uniform seed reaches it)."""
    rows = [f"| cell | target {metric} | arm | seeds reaching | median wall s (incl. FIM) | median units (incl. FIM) | "
            "wall vs uniform | units vs uniform |", "|---|---|---|---|---|---|---|---|"]
    for cell in sorted(grouped):
        uniform = grouped[cell].get("uniform", {})
        if not uniform:
            continue
        target = max(min(r[metric] for r in log.records if metric in r) for log in uniform.values())
        medians = {}
        for arm in ["uniform"] + [a for a in arms if a != "uniform"]:
            runs = grouped[cell].get(arm, {})
            if not runs:
                continue
            walls = np.array([first_reach(log, metric, target, "wall_s") for log in runs.values()])
            units = np.array([first_reach(log, metric, target, "units") for log in runs.values()])
            reached = np.isfinite(walls)
            medians[arm] = (np.median(walls[reached]) if reached.any() else float("nan"),
                            np.median(units[reached]) if reached.any() else float("nan"))
            rel = ("1", "1") if arm == "uniform" else (fmt(medians[arm][0] / medians["uniform"][0], 3),
                                                       fmt(medians[arm][1] / medians["uniform"][1], 3))
            rows.append(f"| b={cell[0]}, λ={cell[1]:g} | {fmt(target)} | {arm} | {int(reached.sum())}/{len(runs)} | "
                        f"{fmt(medians[arm][0])} | {fmt(medians[arm][1])} | {rel[0]} | {rel[1]} |")
    return rows


# ---------------------------------------------------------------------------------------------
# Sections


def scale_lines(logs: list[RunLog], manifest: dict, fim_records: list[dict]) -> list[str]:
    specs = [log.spec for log in logs]
    done = sum(log.done for log in logs)
    subsets = sorted({str(s.train_subset) if s.train_subset else "all" for s in specs})
    lines = [
        f"- runs: {done} finished of {len(logs)} started; seeds {sorted({s.seed for s in specs})}; "
        f"epochs {sorted({s.epochs for s in specs})}; training samples: {', '.join(subsets)} "
        f"(subset mode {sorted({s.subset_mode for s in specs})}); evaluation sets: "
        f"{', '.join(sorted({f'{s.eval_subset} fixed random samples' if s.eval_subset else 'whole' for s in specs}))}; "
        f"cells (batch, λ): {', '.join(f'({b}, {lr:g})' for b, lr in sorted({s.cell for s in specs}))}; "
        f"arms: {', '.join(arm_order({s.arm for s in specs}))}",
    ]
    unfinished = [log for log in logs if not log.done]
    if unfinished:
        lines.append(f"- unfinished or failed runs ({len(unfinished)}; left out of every statistic below):")
        for log in unfinished:
            error = run_error(log)
            last = log.records[-1]["epoch"] if log.records else "none"
            lines.append(f"  - `{log.spec.run_id}`: last logged epoch {last}" + _standing(log)
                         + (f"; error: {error}" if error else ""))
    rates = [log.records[-1]["train_wall_s"] / log.records[-1]["train_units"] * 1000
             for log in logs if log.done and log.records[-1].get("train_units")]
    if rates:
        lines.append(f"- training wall-clock seconds per 1000 units, across finished runs: min {fmt(min(rates), 3)}, "
                     f"median {fmt(float(np.median(rates)), 3)}, max {fmt(max(rates), 3)} (the machine was shared and "
                     "its load changed while the grid ran: compare arms by units; wall times are indicative)")
    lines.append(compute_line(logs, fim_records))
    train_sizes = sorted({r["info"].get("n_train") for r in fim_records if r.get("info", {}).get("n_train")})
    if train_sizes:
        lines.append(f"- FIM training-set sizes: {train_sizes}")
    if manifest.get("commands"):
        lines.append("- command(s):")
        lines += [f"  `{c}`" for c in manifest["commands"]]
    return lines


def _standing(log: RunLog) -> str:
    """Where an unfinished run stands: its last logged metrics (and the constant predictor's)."""
    if not log.records or log.records[-1]["epoch"] == 0:
        return ""
    last = log.records[-1]
    keys = ["train_cost_during_epoch", *FIGURES[log.spec.figure].metrics,
            *(k for k in sorted(last) if k.endswith(("_auc", "_constant")))]
    return " of " + str(log.spec.epochs) + " (" + ", ".join(f"{k} {fmt(last[k])}" for k in keys if k in last) + ")"


def compute_line(logs: list[RunLog], fim_records: list[dict]) -> str:
    """The compute the grid has taken so far, from the clocks its logs carry (runs are single-threaded
    processes, so wall seconds are core seconds: an upper bound on CPU time on a shared machine)."""
    last = [log.records[-1] for log in logs if log.records]
    parts = {kind: sum(r.get(f"{kind}_wall_s", 0.0) for r in last) / 3600 for kind in ("train", "eval", "setup")}
    parts["FIM"] = sum(r["wall_s"] for r in fim_records) / 3600  # once per (protocol, seed), not per arm
    return (f"- compute so far: {sum(parts.values()):.2f} core-hours (" +
            ", ".join(f"{kind} {hours:.2f}" for kind, hours in parts.items()) +
            "), wall-clock seconds of single-threaded processes as logged")


def scale_reductions(logs: list[RunLog], grouped: dict, config) -> list[str]:
    """How the logged runs fall short of the full protocol (whole sets, the default epochs and cells, 3
    seeds); seeds are counted over `grouped`, the finished runs every statistic is computed from."""
    specs = [log.spec for log in logs]
    found = []
    subsets = sorted({s.train_subset for s in specs if s.train_subset})
    if subsets:
        unit = "songs" if config.name == "fig6" else "training samples"
        found.append(f"{', '.join(map(str, subsets))} {unit} instead of all "
                     f"({sorted({s.subset_mode for s in specs if s.train_subset})[0]} subset)")
    if max(s.epochs for s in specs) < config.epochs:
        found.append(f"{max(s.epochs for s in specs)} epochs instead of {config.epochs}")
    evals = sorted({s.eval_subset for s in specs if s.eval_subset})
    if evals:
        found.append(f"metrics evaluated on {', '.join(map(str, evals))} fixed random samples of each set")
    missing = sorted(set(config.cells) - {s.cell for s in specs})
    if missing:
        found.append(f"cells (batch, λ) {', '.join(f'({b}, {lr:g})' for b, lr in missing)} not run")
    fewest_seeds = min((len(seeds) for arms in grouped.values() for seeds in arms.values()), default=0)
    if fewest_seeds < 3:
        found.append(f"as few as {fewest_seeds} seed(s) for a (cell, arm)")
    return found


def run_error(log: RunLog) -> str:
    """The last line of a failed run's traceback (error.txt), if any."""
    if log.directory is None or not (log.directory / "error.txt").exists():
        return ""
    lines = [l for l in (log.directory / "error.txt").read_text().splitlines() if l.strip()]
    return lines[-1].strip() if lines else ""


def fim_lines(fim_records: list[dict], logs: list[RunLog]) -> list[str]:
    if not fim_records:
        return ["No FIM artefacts in this grid."]
    lines = ["| protocol | seed | FIM core-s | FIM units | " + " | ".join(f"CV {k}" for k in sorted(fim_records[0]["p_summary"]))
             + " | is-best kind |", "|---|---|---|---|" + "---|" * len(fim_records[0]["p_summary"]) + "---|"]
    for r in fim_records:
        cvs = " | ".join(fmt(r["p_summary"][k]["cv"], 3) for k in sorted(r["p_summary"]))
        lines.append(f"| {r['protocol']} | {r['seed']} | {fmt(r['wall_s'])} | {r['units']} | {cvs} | {r['best_kind']} |")
    untouched = sorted({log.spec.arm for log in logs if log.spec.uses_fim})
    lines.append("")
    lines.append("FIM core-s: seconds of private training summed over the FIM's workers and sessions, the "
                 "time one core would take. They and the units are added to the clocks of the IS arms "
                 f"({', '.join(untouched)}).")
    return lines + seed_agreement_lines(fim_records)


def seed_agreement_lines(fim_records: list[dict]) -> list[str]:
    """How far two seeds' FIMs rank the same samples alike. The paper treats p_i as a property of
    sample i, mined once; the seeds of one protocol share the samples in the same order (the protocol
    key names the data, which no run's seed changes) but not W(0), so a rank correlation near 1 says
    FIM found the samples' importance, near 0 that it found W(0)'s noise."""
    lines = []
    by_protocol = itertools.groupby(sorted(fim_records, key=lambda r: (r["protocol"], r["seed"])),
                                    key=lambda r: r["protocol"])
    for protocol, records in by_protocol:
        for a, b in itertools.combinations(list(records), 2):
            kinds = sorted(set(a["p"]) & set(b["p"]))  # a kind can be unusable under one seed only
            rhos = ", ".join(f"{k} {fmt(stats.spearmanr(a['p'][k], b['p'][k]).correlation, 3)}" for k in kinds)
            lines.append(f"- {protocol}, seeds {a['seed']} and {b['seed']}: {rhos}")
    if not lines:
        return []
    return ["", "Agreement between seeds: the Spearman rank correlation of the same samples' p_i under two "
            "seeds' W(0) (1: FIM ranks the samples alike whatever W(0); 0: its ranking is W(0)'s).", ""] + lines


def data_scale(logs: list[RunLog]) -> str:
    """'paper-scale data' when every run trains on the whole training set and evaluates on whole sets."""
    whole = all(log.spec.train_subset is None and log.spec.eval_subset is None for log in logs)
    return "paper-scale data" if whole else "reduced data"


def figure_section(name: str, out: Path, figures_dir: Path, report_dir: Path) -> list[str]:
    config = FIGURES[name]
    logs = load_grid(out)
    if not logs:
        return [f"## {config.title}", "", f"Not run: no logs under `{out}`.", ""]
    title = f"{config.title}: {data_scale(logs)} (`{out}`)"
    manifest = load_manifest(out)
    fim_records = load_fim_records(out)
    grouped = finished(logs)
    arms = [a for a in arm_order({log.spec.arm for log in logs}) if a != "uniform"]
    epochs = max((len(log.records) for log in logs), default=0)
    lines = [f"## {title}", "", "### Scale", ""]
    reductions = scale_reductions(logs, grouped, config)
    if reductions:
        lines += [f"**Short of the paper's protocol**: {'; '.join(reductions)}. Verdicts below hold "
                  "for this scale only.", ""]
    lines += scale_lines(logs, manifest, fim_records)
    lines += ["", "### Importance (FIM)", ""] + fim_lines(fim_records, logs) + [""]

    lines += online_lines(grouped)
    lines += variance_lines(grouped)
    lines += learning_lines(grouped, config)
    if epochs < MIN_EPOCHS_FOR_CLAIMS:
        lines += ["Too few epochs logged to judge any claim.", ""]
    elif name == "fig4":
        lines += fig4_claims(grouped, arms, logs)
    else:
        lines += fig6_claims(grouped, arms, logs)

    lines += ["### Figures", ""]
    for path in plot_grid(out, figures_dir, prefix=plot_prefix(out)):
        rel = os.path.relpath(path, report_dir)
        lines += [f"![{path.stem}]({rel})", ""]
    return lines


def online_lines(grouped: dict) -> list[str]:
    """How often the online baseline actually sampled by importance (K&F's τ switch)."""
    rows = []
    for cell in sorted(grouped):
        runs = list(grouped[cell].get("online", {}).values())
        if not runs or "online_updates" not in runs[0].records[-1]:
            continue
        last = [log.records[-1] for log in runs]
        share = [r["online_is_updates"] / r["online_updates"] for r in last if r["online_updates"]]
        rows.append(f"| b={cell[0]}, λ={cell[1]:g} | {len(runs)} | {fmt(float(np.mean(share)), 3)} | "
                    f"{fmt(float(np.mean([r['online_tau'] for r in last])), 3)} |")
    if not rows:
        return []
    return ["### Online IS: did its switch turn on?", "",
            "Share of updates that sampled by importance (τ above its break-even) and the smoothed τ at the end "
            "(means over seeds); with a share of 0 the online arm is uniform sampling plus the cost of scoring.", "",
            "| cell | runs | share of IS updates | final τ |", "|---|---|---|---|"] + rows + [""]


def variance_lines(grouped: dict) -> list[str]:
    """What IS is for: the one-sample gradient variance under P over that under uniform sampling
    (`grad_var_ratio`, < 1 means P helps), at W(0), over training and at the end."""
    rows = []
    for cell in sorted(grouped):
        for arm in sorted(grouped[cell]):
            per_run = [[r["grad_var_ratio"] for r in log.records if "grad_var_ratio" in r]
                       for log in grouped[cell][arm].values()]
            per_run = [ratios for ratios in per_run if ratios]
            if not per_run:
                continue
            pooled = np.concatenate(per_run)
            rows.append(f"| b={cell[0]}, λ={cell[1]:g} | {arm} | {len(per_run)} | "
                        f"{fmt_ratio(float(np.mean([r[0] for r in per_run])), 5)} | "
                        f"{fmt_ratio(float(np.median(pooled)))} | {fmt_ratio(float(pooled.min()))} | "
                        f"{fmt_ratio(float(pooled.max()))} | {fmt_ratio(float(np.mean([r[-1] for r in per_run])))} | "
                        f"{fmt(float(np.mean(pooled < 1)), 3)} |")
    if not rows:
        return []
    return ["### Does P reduce the gradient variance?", "",
            "tr Var of the one-sample gradient under the arm's P over that under uniform sampling, measured "
            "exactly on fixed training samples after every epoch (< 1: P reduces the variance, which is all IS "
            "can offer). Over seeds: the mean at the first logged epoch (0: at W(0)) and at the end; over all "
            "(seed, epoch) pairs: median, range and the share below 1.", "",
            "| cell | arm | seeds | first | median | min | max | last | share < 1 |",
            "|---|---|---|---|---|---|---|---|---|"] + rows + [""]


def learning_lines(grouped: dict, config) -> list[str]:
    """Did the models learn at all? Each metric at epoch 0, at its best and at the last epoch (means over
    seeds), next to the best constant predictor's value when the logs carry it (`<metric>_constant`)."""
    lines = ["### Did the models learn?", "",
             "| cell | arm | metric | epoch 0 | best | last | constant predictor |", "|---|---|---|---|---|---|---|"]
    learned_cells = set()
    constants_logged = False
    for cell in sorted(grouped):
        for arm in sorted(grouped[cell]):
            runs = list(grouped[cell][arm].values())
            for metric in config.metrics:
                first = np.mean([log.records[0][metric] for log in runs])
                best = np.mean([min(r[metric] for r in log.records) for log in runs])
                last = np.mean([log.records[-1][metric] for log in runs])
                constant_key = f"{metric}_constant"
                constant = float("nan")
                if all(constant_key in log.records[-1] for log in runs):
                    constants_logged = True
                    constant = float(np.mean([log.records[-1][constant_key] for log in runs]))
                    if best < constant - 0.01:
                        learned_cells.add(cell)
                lines.append(f"| b={cell[0]}, λ={cell[1]:g} | {arm} | {metric} | {fmt(first)} | {fmt(best)} | "
                             f"{fmt(last)} | {fmt(constant)} |")
    lines.append("")
    if constants_logged and not learned_cells:
        lines += ["**No arm beat the constant (majority-class) predictor by more than 1 point in any cell: every "
                  "comparison below is between models that have not learned, so its verdicts say nothing about "
                  "the paper's claims at full scale.**", ""]
    return lines


def _claim(title: str, measured: str, verdicts: list[tuple[str, tuple[str, str]]]) -> list[str]:
    lines = [f"#### Claim: {title}", "", f"Measured: {measured}", ""]
    for arm, (verdict, note) in verdicts:
        lines.append(f"- **{arm}: {verdict}** — {note}")
    return lines + [""]


def fig4_claims(grouped: dict, arms: list[str], logs: list[RunLog]) -> list[str]:
    lines = ["### Claims of Section 5.1.2", ""]
    auc_diffs = {}
    for metric in FIGURES["fig4"].metrics:
        rows, diffs = comparison_table(grouped, arms, lambda log, m=metric: auc(log, m), f"mean {metric} over epochs")
        auc_diffs[metric] = diffs
        lines += _claim(
            f"IS {metric.replace('_', ' ')} drops faster than uniform at every step size",
            f"paired by seed, Δ = arm − uniform of the {metric} averaged over epochs 1..E (area under the curve); "
            "held = Δ<0 on average in every cell",
            [(arm_label(a, logs), every_cell_verdict(diffs.get(a, {}))) for a in arms],
        )
        lines += rows + [""]
        rows, _ = comparison_table(grouped, arms, lambda log, m=metric: final(log, m), f"final {metric}")
        lines += [f"Last-epoch {metric}:", ""] + rows + [""]
    lines += control_section(grouped, arms, logs, lambda log: auc(log, "valid_err"), "mean valid_err over epochs")
    lines += _claim(
        "the gain is largest at λ = 0.5 and small at λ = 0.1",
        "gain = −mean Δ of the validation-error AUC per step size",
        [(arm_label(a, logs), gain_by_step_verdict(auc_diffs["valid_err"].get(a, {}))) for a in arms],
    )
    _, tv_diffs = comparison_table(grouped, arms, lambda log: upward_variation(log, "valid_err"), "")
    lines += _claim(
        "IS curves are less erratic",
        "upward variation Σ max(0, e_{t+1} − e_t) of the validation error over epochs, paired by seed, pooled over "
        "cells; held = mean Δ<0 with sign-flip p<0.05",
        [(arm_label(a, logs), pooled_verdict(tv_diffs.get(a, {}))) for a in arms],
    )
    lines += ["### Time to target validation error", ""] + time_to_target_rows(grouped, arms, "valid_err") + [""]
    return lines


def fig6_claims(grouped: dict, arms: list[str], logs: list[RunLog]) -> list[str]:
    lines = ["### Claims of Section 5.2.4", ""]
    rows, diffs = comparison_table(grouped, arms, lambda log: final(log, "cost"), "final cost")
    lines += _claim(
        "IS converges better than uniform at both batch sizes",
        "paired by seed, Δ = arm − uniform of the last epoch's mean cost; held = Δ<0 on average in every cell",
        [(arm_label(a, logs), every_cell_verdict(diffs.get(a, {}))) for a in arms],
    )
    lines += rows + [""]
    rows, _ = comparison_table(grouped, arms, lambda log: auc(log, "cost"), "mean cost over epochs")
    lines += ["Mean cost over epochs 1..E (area under the curve):", ""] + rows + [""]
    lines += control_section(grouped, arms, logs, lambda log: final(log, "cost"), "final cost")
    for cell in [c for c in FIGURES["fig6"].named_cells if c in grouped]:
        lines += _claim(
            f"at batch {cell[0]}, λ = {cell[1]:g} uniform regresses while IS keeps decreasing",
            f"share of its progress (first − best cost) a curve gives back by the last epoch; regresses = "
            f"more than {REGRESSION_THRESHOLD:.0%} on average over seeds",
            [(arm_label(a, logs), regression_verdict(grouped[cell], a, "cost")) for a in arms],
        )
    lines += ["### Time to target cost", ""] + time_to_target_rows(grouped, arms, "cost") + [""]
    return lines


def plot_prefix(out: Path) -> str:
    """The grid's figures are named after its folder (e.g. runs/paper_scale/fig4 -> paper_scale_fig4)."""
    return "_".join(Path(out).parts[-2:])


def full_scale_command(name: str) -> str:
    """The figure's whole default grid (every cell, arm and seed, the default epochs) on a dask cluster."""
    return (f"python -m dltutorials_is.replicate {name} --epochs {FIGURES[name].epochs} --seeds 1 2 3 "
            f"--scheduler tcp://SCHEDULER:8786 --n-jobs -1 --out /shared/runs/{name}")


def _check_figures(grids: dict[str, list[Path]]) -> None:
    """Each grid folder is passed with its own figure's flag: a Figure 6 grid has no error rates to
    judge Figure 4's claims by."""
    for name, outs in grids.items():
        for out in outs:
            figure = load_manifest(Path(out)).get("figure")
            if figure not in (None, name):
                raise SettingError(f"{out} is a {figure} grid: pass it with --{figure}, not --{name}")


def write_report(grids: dict[str, list[Path]], output: Path, figures_dir: Path, summary: Path | None = None) -> None:
    """REPLICATION.md from the grids' logs, a section per grid (e.g. one at the paper's scale, one
    reduced) in the order given; `summary` (hand-written markdown: what was chosen and why, what the
    tables mean) goes first when given, the generated sections follow."""
    _check_figures(grids)
    output = Path(output)
    report_dir = output.parent.resolve()
    figures_dir = Path(figures_dir).resolve()
    lines = [
        "# Replication of Wang et al., *Mining the Unstructured*, Figures 4 and 6",
        "",
        "Generated by `python -m dltutorials_is.replicate report` from the grids' logs; every number below "
        "was read from them. Arms: `uniform` (the tutorial), `replacement` (uniform with replacement, the "
        "control), `is-paper` (FIM, the paper's norm score of the paper's base matrix), `is-best` (the FIM "
        "score kind with the largest CV of P), `online` (Katharopoulos & Fleuret's online IS, loss scores). "
        "Costs: forward-pass units after Krause et al. (3 per sample per update, 3 per FIM private step, "
        "1 per online-IS scored sample; evaluation passes not charged).",
        "",
        "Statistics: per cell, paired by seed against `uniform`; exact two-sided sign-flip permutation p "
        "(with n seeds the smallest attainable p is 2/2ⁿ, i.e. 0.25 for 3 seeds: a single cell can show a "
        "direction, never significance) and Welch's t-test p; pooled over cells where stated.",
        "",
        "The full default grids (every step size, arm and seed, the default epochs), on a dask cluster "
        "(README, \"On a dask cluster\"):",
        "",
    ]
    lines += [f"    {full_scale_command(name)}" for name in FIGURES] + [""]
    if summary is not None:
        lines += [Path(summary).read_text().strip(), ""]
    for name, outs in grids.items():
        for out in outs:
            lines += figure_section(name, Path(out), figures_dir, report_dir)
    output.write_text("\n".join(lines) + "\n")
