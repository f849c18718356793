"""`make grid-logs` stages what lets a clone resume a grid (logs, FIM records, the finished shards of a
FIM still being mined) and nothing a clone must not get (checkpoints, half-written files)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (shutil.which("git") and shutil.which("make")), reason="needs git and make")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def _staged(repo: Path) -> dict[str, str]:
    """{path: status letter} of what the next commit would change."""
    lines = _git(repo, "diff", "--cached", "--name-status", "--no-renames").splitlines()
    return {line.split("\t")[1]: line.split("\t")[0] for line in lines}


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text or path.name)


def test_grid_logs_stages_unfinished_fim_shards_then_their_deletion(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Makefile", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    _git(repo, "init", "-q")
    grid = repo / "runs" / "g"
    run, parts = grid / "runs" / "uniform_b16_lr0.5_s1", grid / "fim" / "all" / "seed2" / "fim_lstm.pkl.parts"
    for path in (grid / "grid.json", run / "spec.json", run / "log.jsonl", run / "checkpoint.pkl",
                 parts / "run_key", parts / "shard-000000.pkl", parts / ".shard-000001.pkl.host-7.abcdefgh.tmp"):
        _touch(path)

    subprocess.run(["make", "-s", "grid-logs", "GRID=runs/g"], cwd=repo, check=True, capture_output=True)
    shards = "runs/g/fim/all/seed2/fim_lstm.pkl.parts"
    assert _staged(repo) == {"runs/g/grid.json": "A", "runs/g/runs/uniform_b16_lr0.5_s1/spec.json": "A",
                             "runs/g/runs/uniform_b16_lr0.5_s1/log.jsonl": "A",
                             f"{shards}/run_key": "A", f"{shards}/shard-000000.pkl": "A"}
    _git(repo, "commit", "-qm", "first shards")

    shutil.rmtree(parts)  # the FIM finished: its record and P replace the shards
    _touch(parts.parent / "fim.json")
    _touch(parts.parent / "p.npz")
    _touch(run / "log.jsonl", "epoch 0\nepoch 1\n")
    subprocess.run(["make", "-s", "grid-logs", "GRID=runs/g"], cwd=repo, check=True, capture_output=True)
    assert _staged(repo) == {"runs/g/fim/all/seed2/fim.json": "A", "runs/g/fim/all/seed2/p.npz": "A",
                             "runs/g/runs/uniform_b16_lr0.5_s1/log.jsonl": "M",
                             f"{shards}/run_key": "D", f"{shards}/shard-000000.pkl": "D"}
