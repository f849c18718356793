"""`tools/diff_against_original.py` as a module, for the tests of its logic and of its runs."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "diff_against_original.py"


def _load():
    spec = importlib.util.spec_from_file_location("diff_against_original_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tool = _load()
