"""Build data/imdb.pkl and data/imdb.dict.pkl from the raw IMDB reviews (as the tutorial's imdb_preprocess.py).

Fetches aclImdb (from a local mirror if there is one, else ai.stanford.edu), extracts the 50,000
labeled reviews, tokenises them and writes the two pickles. Steps already done are skipped.
"""
import argparse
import sys
import time
from pathlib import Path

from dltutorials_is.datasets.download import default_data_dir
from dltutorials_is.datasets.imdb import prepare_imdb, read_imdb_pickle, load_dictionary
from dltutorials_is.errors import entry_point
from dltutorials_is.flags import n_jobs
from dltutorials_is.io import check_writable_dir


@entry_point
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="where the data goes (default: %(default)s)")
    parser.add_argument("--mirror", type=Path, default=None, help="folder holding aclImdb_v1*.tar.gz (default: $DLTUTORIALS_MIRROR or ../shared/data)")
    parser.add_argument("--n-jobs", type=n_jobs, default=-1, help="tokeniser processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rebuild the pickles even if they exist")
    args = parser.parse_args(argv)
    check_writable_dir(args.data_dir, "--data-dir")

    start = time.perf_counter()
    pickle_path, dict_path = prepare_imdb(args.data_dir, args.mirror, n_jobs=args.n_jobs, force=args.force)
    (train_x, train_y), (test_x, test_y) = read_imdb_pickle(pickle_path)
    n_words = len(load_dictionary(dict_path))
    lengths = [len(r) for r in train_x]
    print(f"{pickle_path}: {len(train_x)} train ({sum(train_y)} positive), {len(test_x)} test ({sum(test_y)} positive)")
    print(f"{dict_path}: {n_words} distinct train tokens; train reviews: mean {sum(lengths) / len(lengths):.1f} "
          f"tokens, max {max(lengths)}, {sum(n < 100 for n in lengths)} shorter than 100")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
