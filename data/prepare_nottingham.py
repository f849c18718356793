"""Fetch Nottingham.zip (from a local mirror or its URL) and unpack it to DATA_DIR/Nottingham/{train,valid,test}.

    python data/prepare_nottingham.py [--data-dir DIR] [--mirror DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dltutorials_is.datasets.download import DataError, default_data_dir, extract, fetch_archive
from dltutorials_is.datasets.nottingham import EXPECTED_FILES, SPLITS, split_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="where data/ lives (default: %(default)s)")
    parser.add_argument("--mirror", type=Path, default=None, help="folder holding Nottingham.zip (default: $DLTUTORIALS_MIRROR or ../shared/data)")
    args = parser.parse_args(argv)
    try:
        archive = fetch_archive("nottingham", args.data_dir, args.mirror)
        extract(archive, args.data_dir, members_prefix="Nottingham/")
        counts = {split: len(list(split_dir(args.data_dir, split).glob("*.mid"))) for split in SPLITS}
        if counts != EXPECTED_FILES:
            raise DataError(f"expected {EXPECTED_FILES} MIDI files per split, found {counts}: delete {args.data_dir / 'Nottingham'} and run again")
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("Nottingham ready in " + str(args.data_dir / "Nottingham") + ": " + ", ".join(f"{s} {n} files" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
