"""Fetch Nottingham.zip (from a local mirror or its URL) and unpack it to DATA_DIR/Nottingham/{train,valid,test}.

    python data/prepare_nottingham.py [--data-dir DIR] [--mirror DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dltutorials_is.datasets.download import DataError, default_data_dir, extract, fetch_archive
from dltutorials_is.datasets.nottingham import EXPECTED_FILES, SPLITS, split_dir, unreadable_files
from dltutorials_is.errors import entry_point
from dltutorials_is.io import check_writable_dir


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="where data/ lives (default: %(default)s)")
    parser.add_argument("--mirror", type=Path, default=None, help="folder holding Nottingham.zip (default: $DLTUTORIALS_MIRROR or ../shared/data)")
    args = parser.parse_args(argv)
    check_writable_dir(args.data_dir, "--data-dir")
    folder = args.data_dir / "Nottingham"
    archive = fetch_archive("nottingham", args.data_dir, args.mirror)
    extract(archive, args.data_dir, members_prefix="Nottingham/")
    counts = {split: len(list(split_dir(args.data_dir, split).glob("*.mid"))) for split in SPLITS}
    if counts != EXPECTED_FILES:
        raise DataError(f"expected {EXPECTED_FILES} MIDI files per split, found {counts} — delete {folder} and run "
                        "this again")
    bad = unreadable_files(args.data_dir)  # every file must read, as training will read it
    if bad:
        shown = "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else "")
        raise DataError(f"{len(bad)} of {sum(counts.values())} MIDI files in {folder} do not read ({shown}) — delete "
                        f"{folder} and run this again, or train with --on-bad skip to leave them out")
    print(f"Nottingham ready in {folder}: " + ", ".join(f"{s} {n} files" for s, n in counts.items())
          + ", every file reads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
