"""Reading a grid back, for plots and the report: every run's spec, per-epoch log and outcome."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dltutorials_is.io import read_json_lines
from dltutorials_is.replicate.specs import RunSpec


@dataclass
class RunLog:
    spec: RunSpec
    records: list[dict]
    done: bool
    fim_kind: str | None
    directory: Path | None = None

    def series(self, key: str) -> np.ndarray:
        return np.array([r.get(key, np.nan) for r in self.records], dtype="float64")


def load_grid(out: Path) -> list[RunLog]:
    logs = []
    for directory in sorted((out / "runs").glob("*")):
        spec_path = directory / "spec.json"
        if not spec_path.exists():
            continue
        spec = RunSpec(**json.loads(spec_path.read_text()))
        done_path = directory / "done"
        done = json.loads(done_path.read_text()) if done_path.exists() else None
        logs.append(RunLog(spec, read_json_lines(directory / "log.jsonl"), done is not None,
                           done.get("fim_kind") if done else None, directory))
    return logs


def load_manifest(out: Path) -> dict:
    path = out / "grid.json"
    return json.loads(path.read_text()) if path.exists() else {"commands": [], "specs": []}


def load_fim(directory: Path) -> dict:
    """One (protocol, seed)'s FIM record, `fim.json`, with its P of every score kind under "p"."""
    record = json.loads((directory / "fim.json").read_text())
    with np.load(directory / "p.npz") as arrays:
        record["p"] = {k: arrays[k] for k in arrays.files}
    return record


def load_fim_records(out: Path) -> list[dict]:
    return [load_fim(path.parent) for path in sorted((out / "fim").glob("*/seed*/fim.json"))]
