"""IMDB movie reviews in the deeplearning.net LSTM tutorial's format, built from the raw reviews.

Format (identical to the tutorial's downloadable files, so either loads with the other's code):

* ``imdb.pkl`` holds two consecutive pickles, ``(train_x, train_y)`` then ``(test_x, test_y)``:
  lists of reviews (each a list of word indices) and labels, positive reviews (label 1) first,
  then negative ones (label 0).
* ``imdb.dict.pkl`` holds the dictionary ``word -> index``. Index 0 is padding, 1 is "unknown";
  words get 2, 3, ... by descending count in the **train** split.

Preprocessing follows the tutorial's ``imdb_preprocess.py``: the first line of each review,
Moses-tokenised (``tokenizer.perl -l en`` of late 2014, reproduced with sacremoses), lower-cased,
split on white space. See ``data/README.md`` and ``DEVIATIONS.md`` for the few choices the
original left to chance (file order, ties in the ranking).

Splits (``load_splits``):

* ``tutorial``: exactly ``train_lstm``: ``load_data(n_words, valid_portion, maxlen)`` keeps the
  train reviews shorter than ``maxlen`` tokens, holds out a random ``valid_portion`` of them as
  validation, and (if ``test_size > 0``) evaluates on a random ``test_size`` of the 25,000 test
  reviews. With ``maxlen=100, valid_portion=0.05`` that is about 1,998 train / 105 valid reviews.
* ``paper``: Wang et al.'s footnote 4 ("Original code uses 1,998 sentences for training and
  25,000 for validation. We reverse this"): the same ``load_data`` call, then train and test
  swap roles. Train = all 25,000 reviews of the official test split (no length filter, sorted
  by length); test = the tutorial's ~1,998 short training reviews; valid = the same ~105
  held-out reviews as ``tutorial``. ``test_size > 0`` then draws a random subset of this new test
  set, with the same random call at the same point as the tutorial (so ``test_size=0`` keeps all
  ~1,998, as in the paper).

Random draws come only from the ``rng`` passed in; ``np.random.RandomState(123)`` reproduces the
tutorial, which seeded numpy's global generator with 123 before its first draw here.
"""
from __future__ import annotations

import gzip
import pickle
import sys
from collections import Counter
from functools import lru_cache
from itertools import chain
from pathlib import Path

import numpy as np

from .download import DataError, default_data_dir, extract, fetch_archive
from dltutorials_is.errors import SettingError
from dltutorials_is.io import load_pickles, write_atomically

PREPARE_COMMAND = "python data/prepare_imdb.py"
PICKLE_NAME = "imdb.pkl"
DICT_NAME = "imdb.dict.pkl"
UNKNOWN, FIRST_WORD_INDEX = 1, 2  # 0 is padding
POLARITIES = (("pos", 1), ("neg", 0))  # folder and label, in the order the tutorial concatenates them
SPLITS = ("train", "test")
PROTOCOLS = ("tutorial", "paper")
# Python 2 pickle protocol: the tutorial's Python 2 loader can read what we write.
PICKLE_PROTOCOL = 2

Split = tuple[list[list[int]], list[int]]


def imdb_paths(data_dir: Path | str | None = None) -> tuple[Path, Path]:
    """The `(imdb.pkl, imdb.dict.pkl)` paths in `data_dir` (default: the project's data folder)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    return data_dir / PICKLE_NAME, data_dir / DICT_NAME


# ---------------------------------------------------------------------------------------------
# Preprocessing: raw reviews -> imdb.pkl + imdb.dict.pkl
# ---------------------------------------------------------------------------------------------

def _review_order(path: Path) -> tuple:
    """Files are `<id>_<rating>.txt`; order them by review id (the order of the `urls_*.txt` lists).

    The tutorial took `glob` order, which is whatever order the file system lists; any fixed
    order gives equivalent data, and this one makes runs identical on every machine.
    """
    review_id = path.stem.split("_")[0]
    return (0, int(review_id), path.name) if review_id.isdigit() else (1, 0, path.name)


def review_files(split_dir: Path) -> list[tuple[Path, int]]:
    """`(file, label)` for every review of one split: positives first, then negatives."""
    found = []
    for folder, label in POLARITIES:
        files = sorted(Path(split_dir, folder).glob("*.txt"), key=_review_order)
        if not files:
            raise DataError(
                f"no reviews in {Path(split_dir, folder)}: the extracted IMDB data is incomplete. "
                f"Delete {Path(split_dir).parent} and the .extracted-* marker beside it, then run "
                f"`{PREPARE_COMMAND}` again."
            )
        found += [(f, label) for f in files]
    return found


def read_first_line(path: Path) -> str:
    """The tutorial kept only `readline().strip()`; reviews are one line (with <br /> tags)."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return f.readline().strip()


def to_moses_2014(text: str) -> str:
    """Map quotes the way the Moses tokenizer did when the tutorial's data was made.

    Until January 2015 `tokenizer.perl` turned ` into ' and '' into " before splitting
    contractions; sacremoses ports the later script, which moved it to normalize-punctuation.perl.
    Doing it first gives the same tokens as the 2014 script on 99.9% of the train reviews.
    """
    return text.replace("`", "'").replace("''", ' " ')


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Python 2's `str.lower()` on UTF-8 bytes, as the tutorial ran it: only A-Z change."""
    return text.translate(_ASCII_LOWER)


@lru_cache(maxsize=1)
def _moses():
    from sacremoses import MosesTokenizer

    class FastMosesTokenizer(MosesTokenizer):
        """Same output, 3x faster: sacremoses 0.2 rebuilds a set of thousands of characters on
        every call to these two tests."""

        lower_chars = frozenset(MosesTokenizer.IsLower)
        alpha_chars = frozenset(MosesTokenizer.IsAlpha)

        def islower(self, text):
            return self.lower_chars.issuperset(text)

        def isanyalpha(self, text):
            return not self.alpha_chars.isdisjoint(text)

    return FastMosesTokenizer(lang="en")


def tokenize(text: str) -> list[str]:
    """`tokenizer.perl -l en` (HTML escaping on, no aggressive dash splits), lower-case, split."""
    moses = _moses().tokenize(to_moses_2014(text), escape=True, aggressive_dash_splits=False, return_str=True)
    return ascii_lower(moses).split()


def _tokenize_chunk(texts: list[str]) -> list[list[str]]:
    return [tokenize(t) for t in texts]


def tokenize_all(texts: list[str], n_jobs: int = -1, chunk_size: int = 250, desc: str = "tokenize") -> list[list[str]]:
    """Tokenise many texts on `n_jobs` processes (joblib; -1 = all cores), with a progress bar."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    chunks = [texts[i : i + chunk_size] for i in range(0, len(texts), chunk_size)]
    results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_tokenize_chunk)(c) for c in chunks)
    tokens: list[list[str]] = []
    with tqdm(total=len(texts), desc=desc, unit="review", file=sys.stderr) as bar:
        for chunk_tokens in results:
            tokens += chunk_tokens
            bar.update(len(chunk_tokens))
    return tokens


def build_dictionary(token_lists: list[list[str]]) -> dict[str, int]:
    """`word -> index` by descending count, from 2 (0 = padding, 1 = unknown).

    Ties keep the order in which words first appear (positives, then negatives, each in file
    order). The tutorial's tie order depended on Python 2 dict hashing and an unstable sort.
    """
    counts = Counter(word for tokens in token_lists for word in tokens)
    ranked = sorted(counts, key=counts.__getitem__, reverse=True)  # stable: ties stay in first-seen order
    return {word: rank + FIRST_WORD_INDEX for rank, word in enumerate(ranked)}


def encode(token_lists: list[list[str]], dictionary: dict[str, int]) -> list[list[int]]:
    return [[dictionary.get(word, UNKNOWN) for word in tokens] for tokens in token_lists]


def build_imdb(root: Path, n_jobs: int = -1) -> tuple[Split, Split, dict[str, int]]:
    """`(train, test, dictionary)` from an `aclImdb` folder; the dictionary sees train only."""
    tokens, labels = {}, {}
    for split in SPLITS:
        files = review_files(Path(root, split))
        texts = [read_first_line(f) for f, _ in files]
        tokens[split] = tokenize_all(texts, n_jobs=n_jobs, desc=f"tokenize {split}")
        labels[split] = [label for _, label in files]
    dictionary = build_dictionary(tokens["train"])
    train, test = ((encode(tokens[s], dictionary), labels[s]) for s in SPLITS)
    return train, test, dictionary


def _pickle_all(objects: list):
    """A writer that pickles `objects` one after the other, as the tutorial's two-pickle format wants."""
    return lambda f: [pickle.dump(obj, f, protocol=PICKLE_PROTOCOL) for obj in objects]


def save_imdb(data_dir: Path, train: Split, test: Split, dictionary: dict[str, int]) -> tuple[Path, Path]:
    """Write `imdb.dict.pkl`, then `imdb.pkl` (so `imdb.pkl` existing means both are complete)."""
    pickle_path, dict_path = imdb_paths(data_dir)
    write_atomically(dict_path, _pickle_all([dictionary]))
    write_atomically(pickle_path, _pickle_all([(list(train[0]), list(train[1])), (list(test[0]), list(test[1]))]))
    return pickle_path, dict_path


def imdb_members() -> tuple[str, ...]:
    """Archive members to extract: the labeled reviews only (not the 50,000 `train/unsup` ones)."""
    return tuple(f"aclImdb/{split}/{folder}/" for split in SPLITS for folder, _ in POLARITIES)


def prepare_imdb(
    data_dir: Path | str | None = None, mirror: Path | str | None = None, n_jobs: int = -1, force: bool = False
) -> tuple[Path, Path]:
    """Fetch, extract and preprocess IMDB into `data_dir`, skipping every step already done."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    pickle_path, dict_path = imdb_paths(data_dir)
    if pickle_path.exists() and dict_path.exists() and not force:
        print(f"{pickle_path} and {dict_path.name} already exist (use --force to rebuild)", file=sys.stderr)
        return pickle_path, dict_path
    archive = fetch_archive("imdb", data_dir, Path(mirror) if mirror else None)
    extract(archive, data_dir, members_prefix=imdb_members())
    train, test, dictionary = build_imdb(data_dir / "aclImdb", n_jobs=n_jobs)
    return save_imdb(data_dir, train, test, dictionary)


# ---------------------------------------------------------------------------------------------
# Loading: the tutorial's imdb.load_data / prepare_data, and train_lstm's split
# ---------------------------------------------------------------------------------------------

def _resolve(path: Path | str) -> Path:
    """A bare file name that is not in the working directory is looked up in the data folder."""
    path = Path(path)
    if not path.exists() and path.parent == Path("."):
        return default_data_dir() / path
    return path


def _split_problem(obj) -> str | None:
    """What keeps `obj` from being a `(reviews, labels)` pair of imdb.pkl, or None: reviews are lists of
    word indices >= 0, labels integers >= 0, as many of each."""
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        return f"a {type(obj).__name__} instead of a (reviews, labels) pair"
    reviews, labels = obj
    if not (isinstance(reviews, list) and isinstance(labels, list)):
        return f"a pair of {type(reviews).__name__} and {type(labels).__name__} instead of two lists"
    if len(reviews) != len(labels):
        return f"{len(reviews)} reviews but {len(labels)} labels"
    if not all(type(review) is list for review in reviews):
        return "a review that is not a list of word indices"
    if not set(map(type, chain.from_iterable(reviews))) <= {int}:
        return "a word index that is not an integer"
    if any(review and min(review) < 0 for review in reviews):
        return "a negative word index"
    if not set(map(type, labels)) <= {int} or (labels and min(labels) < 0):
        return "a label that is not an integer >= 0"
    return None


def _read_bytes(path: Path) -> bytes:
    """The file's bytes (decompressed if it is a .gz), or DataError saying why they cannot be had."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from error
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except Exception as error:  # BadGzipFile, zlib.error, EOFError, MemoryError, …
        raise DataError(f"{path} is not a readable gzip file ({type(error).__name__}: {error}). "
                        f"Delete it and run `{PREPARE_COMMAND} --data-dir {path.parent}` again.") from error


def read_imdb_pickle(path: Path | str = PICKLE_NAME) -> tuple[Split, Split]:
    """`(train_set, test_set)` from an `imdb.pkl` (ours or the tutorial's; `.gz` too).

    The file is unpickled by `io.load_pickles`: plain data only (lists, ints, …: nothing imdb.pkl does
    not hold can be built), after a check that the bytes are well-formed pickles, so a garbled file
    gives a DataError rather than an exception of any type or a huge allocation.
    """
    path = _resolve(path)
    if not path.exists():
        raise DataError(
            f"IMDB data not found at {path}. Build it with `{PREPARE_COMMAND} --data-dir {path.parent}` "
            f"(or `make data`)."
        )
    data = _read_bytes(path)
    try:
        # latin1 lets Python 3 read the tutorial's Python 2 pickles (they hold no text anyway).
        train_set, test_set = load_pickles(data, count=2, encoding="latin1")
    except Exception as error:  # a garbled file can make the unpickler raise nearly any type
        raise DataError(
            f"{path} is truncated or corrupt ({type(error).__name__}: {error}). "
            f"Delete it and run `{PREPARE_COMMAND} --data-dir {path.parent}` again."
        ) from error
    for name, split in (("train", train_set), ("test", test_set)):
        problem = _split_problem(split)
        if problem is not None:
            raise DataError(
                f"{path} does not hold two (reviews, labels) pairs of equal length as imdb.pkl should: its {name} "
                f"part holds {problem}. Delete it and run `{PREPARE_COMMAND} --data-dir {path.parent}` again."
            )
    return tuple(train_set), tuple(test_set)


def load_dictionary(path: Path | str = DICT_NAME) -> dict[str, int]:
    """`word -> index` from an `imdb.dict.pkl` (the tutorial's Python 2 one decodes as UTF-8)."""
    path = _resolve(path)
    if not path.exists():
        raise DataError(f"{path} not found. Build it with `{PREPARE_COMMAND} --data-dir {path.parent}`.")
    try:
        (dictionary,) = load_pickles(_read_bytes(path), encoding="utf-8")
    except DataError:
        raise
    except Exception as error:  # UnicodeDecodeError, MemoryError, … : whatever a garbled file raises
        raise DataError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}). "
                        "Delete it and rebuild it.") from error
    if not (isinstance(dictionary, dict) and all(type(word) is str and type(index) is int
                                                 for word, index in dictionary.items())):
        raise DataError(f"{path} does not hold a dictionary of words to indices as imdb.dict.pkl should. "
                        "Delete it and rebuild it.")
    return dictionary


def _check_load_params(n_words: int, valid_portion: float, maxlen: int | None) -> None:
    if n_words < 2:
        raise SettingError(f"n_words must be at least 2 (0 = padding, 1 = unknown), got {n_words}")
    if not 0 <= valid_portion < 1:
        raise SettingError(f"valid_portion must be in [0, 1), got {valid_portion}")
    if maxlen is not None and maxlen < 0:
        raise SettingError(f"maxlen must be None (no limit) or positive, got {maxlen}")


def _take(split: Split, index) -> Split:
    return [split[0][i] for i in index], [split[1][i] for i in index]


def _sorted_by_length(split: Split) -> Split:
    """Shortest first; `sorted` is stable, so equal lengths keep their order (as the tutorial)."""
    return _take(split, sorted(range(len(split[0])), key=lambda i: len(split[0][i])))


def _cap_vocabulary(split: Split, n_words: int) -> Split:
    return [[UNKNOWN if w >= n_words else w for w in seq] for seq in split[0]], split[1]


def load_data(
    path: Path | str = PICKLE_NAME,
    n_words: int = 100000,
    valid_portion: float = 0.1,
    maxlen: int | None = None,
    sort_by_len: bool = True,
    rng: np.random.RandomState | None = None,
) -> tuple[Split, Split, Split]:
    """`train, valid, test` exactly as the tutorial's `imdb.load_data`.

    `maxlen` keeps train reviews with fewer than `maxlen` tokens (test is never filtered); a
    random `valid_portion` of them (one `rng.permutation`) becomes valid; words with index
    `>= n_words` become 1 (unknown); with `sort_by_len` each split is sorted by length.
    `rng=None` uses numpy's global generator, as the tutorial did.
    """
    _check_load_params(n_words, valid_portion, maxlen)
    train_set, test_set = read_imdb_pickle(path)
    if maxlen:
        keep = [i for i, seq in enumerate(train_set[0]) if len(seq) < maxlen]
        if not keep:
            raise SettingError(f"maxlen={maxlen} keeps no training review (the shortest has "
                               f"{min(map(len, train_set[0]))} tokens) — raise --maxlen, or pass 0 to keep all")
        train_set = _take(train_set, keep)

    n_samples = len(train_set[0])
    order = (rng or np.random).permutation(n_samples)
    n_train = int(np.round(n_samples * (1.0 - valid_portion)))
    valid_set = _take(train_set, order[n_train:])
    train_set = _take(train_set, order[:n_train])

    splits = [_cap_vocabulary(s, n_words) for s in (train_set, valid_set, test_set)]
    if sort_by_len:
        splits = [_sorted_by_length(s) for s in splits]
    train, valid, test = (tuple(s) for s in splits)
    return train, valid, test


def prepare_data(seqs: list[list[int]], labels: list[int], maxlen: int | None = None):
    """Pad a minibatch into time-major `x` (int64, maxlen x n_samples), its floatX `mask`, labels.

    With `maxlen`, sequences of `maxlen` tokens or more are dropped (not cut), as in the
    tutorial; if none is left, returns `(None, None, None)`.
    """
    import aesara  # only here, so preprocessing and loading do not need Aesara

    if maxlen is not None:
        kept = [(s, y) for s, y in zip(seqs, labels) if len(s) < maxlen]
        if not kept:
            return None, None, None
        seqs, labels = [s for s, _ in kept], [y for _, y in kept]
    if len(seqs) == 0:
        raise ValueError("prepare_data needs at least one sequence")
    lengths = [len(s) for s in seqs]
    x = np.zeros((max(lengths), len(seqs)), dtype="int64")
    mask = np.zeros((max(lengths), len(seqs)), dtype=aesara.config.floatX)
    for column, seq in enumerate(seqs):
        x[: len(seq), column] = seq
        mask[: len(seq), column] = 1.0
    return x, mask, labels


def pack_sequences(seqs: list[list[int]]):
    """The fast graph's layout of a minibatch (`graphs.lstm`, encoder `fast`): what `prepare_data` pads,
    packed instead.

    Returns `(tokens, batch_sizes, owner, lengths)`: the reviews sorted by length, longest first (ties
    in minibatch order), and their words laid out time-major without padding, so step t is the
    `batch_sizes[t]` reviews longer than t, in that order; `owner[k]` is the minibatch column of token
    k and `lengths` the reviews' lengths (floatX) in minibatch order, the tutorial's `mask.sum(axis=0)`.
    """
    import aesara  # only here, as in prepare_data

    lengths = np.array([len(s) for s in seqs], dtype="int64")
    if len(seqs) == 0 or lengths.max() == 0:
        raise ValueError("pack_sequences needs at least one non-empty sequence")
    order = np.argsort(-lengths, kind="stable")
    batch_sizes = np.count_nonzero(lengths[None, :] > np.arange(lengths.max())[:, None], axis=1).astype("int64")
    owner = np.concatenate([order[:n] for n in batch_sizes])
    position = np.repeat(np.arange(len(batch_sizes)), batch_sizes)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    tokens = np.concatenate([np.asarray(s, dtype="int64") for s in seqs])[starts[owner] + position]
    return tokens, batch_sizes, owner, lengths.astype(aesara.config.floatX)


def load_splits(
    protocol: str,
    path: Path | str,
    n_words: int,
    maxlen: int | None,
    test_size: int,
    rng: np.random.RandomState,
    valid_portion: float = 0.05,
) -> tuple[Split, Split, Split]:
    """`(train, valid, test)` as `train_lstm` builds them, for the `tutorial` or `paper` protocol.

    Consumes `rng` in the tutorial's order: the valid permutation in `load_data`, then (only if
    `test_size > 0`) one shuffle of the test indices to pick a random `test_size` subset.
    """
    if protocol not in PROTOCOLS:
        raise SettingError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    train, valid, test = load_data(path, n_words=n_words, valid_portion=valid_portion, maxlen=maxlen, rng=rng)
    if protocol == "paper":
        train, test = test, train
    if test_size > 0:
        index = np.arange(len(test[0]))
        rng.shuffle(index)
        test = tuple(_take(test, index[:test_size]))
    return train, valid, test
