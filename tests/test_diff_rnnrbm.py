"""`tools/diff_against_original.py rnnrbm`: its parsing and verdict logic (the runs of the original
against the port are in test_diff_against_original.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from diff_tool import tool

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Reading and comparing the two outputs
# ---------------------------------------------------------------------------------------------

ORIGINAL_STDOUT = """pylab isn't available. If you use its functionality, it will crash.
It can be installed with 'pip install -q Pillow'
Epoch 1/2
-31.153362967894502
Epoch 2/2
-16.247341860246802
"""


def _log(tmp_path: Path, *monitors: float) -> Path:
    log = tmp_path / "log.jsonl"
    log.write_text("".join(f'{{"epoch": {i}, "train_monitor_during_epoch": {m!r}, "train_monitor": 0.5}}\n'
                           for i, m in enumerate(monitors, 1)))
    return log


def test_reads_each_epoch_of_the_original_and_of_the_port_log(tmp_path):
    original = tool.original_epoch_values(ORIGINAL_STDOUT)
    assert [(v.label, v.text) for v in original] == [("1/2", "-31.153362967894502"), ("2/2", "-16.247341860246802")]
    port = tool.port_epoch_values(_log(tmp_path, -31.153362967894502, -16.247341860246802), epochs=2)
    assert [(v.label, v.text) for v in port] == [("1/2", "-31.153362967894502"), ("2/2", "-16.247341860246802")]
    assert tool.port_epoch_values(tmp_path / "absent.jsonl", epochs=2) == []


def test_identical_monitors_agree_with_zero_difference(tmp_path):
    port = tool.port_epoch_values(_log(tmp_path, -31.153362967894502, -16.247341860246802), epochs=2)
    problems, largest, rows = tool.compare_epochs(tool.original_epoch_values(ORIGINAL_STDOUT), port, rtol=0.0)
    assert (problems, largest, len(rows)) == ([], 0.0, 2)


def test_a_difference_beyond_rtol_is_reported_with_its_size(tmp_path):
    port = tool.port_epoch_values(_log(tmp_path, -31.153362967894502, -16.2473), epochs=2)
    original = tool.original_epoch_values(ORIGINAL_STDOUT)
    problems, largest, _ = tool.compare_epochs(original, port, rtol=1e-6)
    assert largest == pytest.approx(abs(-16.247341860246802 + 16.2473) / 16.247341860246802)
    assert len(problems) == 1 and "epoch 2/2" in problems[0]
    assert tool.compare_epochs(original, port, rtol=1e-5)[0] == []  # the same values within a looser rtol


def test_missing_epochs_and_other_epoch_counts_are_mismatches(tmp_path):
    original = tool.original_epoch_values(ORIGINAL_STDOUT)
    one_epoch = tool.port_epoch_values(_log(tmp_path, -31.153362967894502), epochs=2)
    assert any("2 epochs" in p for p in tool.compare_epochs(original, one_epoch, rtol=1e-6)[0])
    relabelled = tool.port_epoch_values(_log(tmp_path, -31.153362967894502, -16.247341860246802), epochs=3)
    assert len(tool.compare_epochs(original, relabelled, rtol=1e-6)[0]) == 2  # "1/3" is not "1/2"


def test_rnnrbm_mode_rejects_bad_settings_before_running_anything(capsys):
    with pytest.raises(SystemExit):
        tool.main(["rnnrbm", "--original", str(REPO), "--epochs", "0"])
    assert "positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        tool.main(["rnnrbm", "--original", str(REPO / "no-such-folder"), "--data-dir", str(REPO / "no-such-data")])
    assert "prepare_nottingham" in str(exited.value.code)
