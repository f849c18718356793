"""IMDB preprocessing, the two-pickle format, and the tutorial's load_data / prepare_data / split."""
import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dltutorials_is.datasets import download, imdb
from dltutorials_is.datasets.download import DataError

REPO = Path(__file__).resolve().parents[1]


# --- tokenisation: expected tokens are what `tokenizer.perl -l en -q` (Dec 2014) printed, lower-cased

@pytest.mark.parametrize(
    "text, tokens",
    [
        ("I don't like it.", "i don &apos;t like it ."),
        ("Hello, World! It's GREAT...", "hello , world ! it &apos;s great ..."),
        ("A movie<br /><br />The end", "a movie &lt; br / &gt; &lt; br / &gt; the end"),
        ("`The Thing'' was good, wasn't it?", "&apos;the thing &quot; was good , wasn &apos;t it ?"),
        (
            'Mr. Smith paid $5,300 in the 1990\'s & "won" [twice] | ok',
            "mr. smith paid $ 5,300 in the 1990 &apos;s &amp; &quot; won &quot; &#91; twice &#93; &#124; ok",
        ),
        ("ÉCOLE e-mail (well-made) ; yes: no", "École e-mail ( well-made ) ; yes : no"),
        ("He said 'hello' and left.", "he said &apos; hello &apos; and left ."),
    ],
)
def test_tokenize_matches_the_perl_moses_tokenizer(text, tokens):
    assert imdb.tokenize(text) == tokens.split()


def test_lower_casing_is_ascii_only_as_python2_bytes():
    assert imdb.ascii_lower("ÉCOLE Straße ABC") == "École straße abc"


def test_parallel_tokenisation_keeps_order():
    texts = [f"Review number {i}." for i in range(7)]
    assert imdb.tokenize_all(texts, n_jobs=2, chunk_size=3) == [imdb.tokenize(t) for t in texts]


def test_only_the_first_line_of_a_review_is_read(tmp_path):
    review = tmp_path / "0_9.txt"
    review.write_text("  First line here.  \nSecond line.\n", encoding="utf-8")
    assert imdb.read_first_line(review) == "First line here."


def test_dictionary_ranks_by_count_from_index_2_ties_in_first_seen_order():
    dictionary = imdb.build_dictionary([["b", "a", "b", "d"], ["c", "a", "b"]])
    assert dictionary == {"b": 2, "a": 3, "d": 4, "c": 5}


def _write_reviews(root: Path, reviews: dict) -> None:
    """reviews: {"train/pos": ["text", ...], ...}; files are named <id>_<rating>.txt."""
    for folder, texts in reviews.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for review_id, text in texts:
            (root / folder / f"{review_id}_7.txt").write_text(text + "\nignored second line", encoding="utf-8")


TINY = {
    "train/pos": [(10, "Great great film."), (2, "Great fun!")],
    "train/neg": [(1, "Bad film."), (3, "Awful, bad.")],
    "test/pos": [(0, "Great unseenword.")],
    "test/neg": [(5, "Bad.")],
}


def test_review_files_lists_positives_first_then_by_review_id(tmp_path):
    _write_reviews(tmp_path, TINY)
    files = imdb.review_files(tmp_path / "train")
    assert [(f.name, label) for f, label in files] == [("2_7.txt", 1), ("10_7.txt", 1), ("1_7.txt", 0), ("3_7.txt", 0)]


def test_build_imdb_dictionary_from_train_only_positives_first(tmp_path):
    _write_reviews(tmp_path, TINY)
    (train_x, train_y), (test_x, test_y), dictionary = imdb.build_imdb(tmp_path, n_jobs=1)
    # train tokens: great x3, . x3, bad x2, film x2, fun, !, awful, ","
    assert dictionary["great"] == 2 and dictionary["."] == 3
    assert "unseenword" not in dictionary
    assert train_y == [1, 1, 0, 0] and test_y == [1, 0]
    g, dot, fun, bang = dictionary["great"], dictionary["."], dictionary["fun"], dictionary["!"]
    assert train_x[0] == [g, fun, bang]  # review 2 comes before review 10
    assert test_x[0] == [g, imdb.UNKNOWN, dot]
    assert min(dictionary.values()) == 2 and sorted(dictionary.values()) == list(range(2, 2 + len(dictionary)))


def test_missing_review_folder_is_a_clear_error(tmp_path):
    _write_reviews(tmp_path, {"train/pos": [(1, "Good.")]})
    with pytest.raises(DataError, match="prepare_imdb.py"):
        imdb.review_files(tmp_path / "train")


# --- the two-pickle file format

def test_save_and_read_round_trip_in_python2_pickle_protocol(tmp_path):
    train, test = ([[2, 3], [4]], [1, 0]), ([[5]], [0])
    pickle_path, dict_path = imdb.save_imdb(tmp_path, train, test, {"a": 2})
    assert pickle_path.read_bytes()[:2] == b"\x80\x02"  # protocol 2: loadable by the tutorial's Python 2
    assert imdb.read_imdb_pickle(pickle_path) == (train, test)
    assert imdb.load_dictionary(dict_path) == {"a": 2}
    with open(pickle_path, "rb") as f:  # the tutorial's own reading code: two pickle.load calls
        assert pickle.load(f) == train and pickle.load(f) == test
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_reads_a_tutorial_style_file_gzipped_or_not(tmp_path):
    train, test = ([[2, 3]], [1]), ([[4, 5, 6]], [0])
    raw = io.BytesIO()
    pickle.dump(train, raw, -1)
    pickle.dump(test, raw, -1)
    (tmp_path / "imdb.pkl").write_bytes(raw.getvalue())
    (tmp_path / "imdb.pkl.gz").write_bytes(gzip.compress(raw.getvalue()))
    assert imdb.read_imdb_pickle(tmp_path / "imdb.pkl") == (train, test)
    assert imdb.read_imdb_pickle(tmp_path / "imdb.pkl.gz") == (train, test)


def test_missing_pickle_names_the_command_and_data_dir(tmp_path):
    with pytest.raises(DataError) as error:
        imdb.load_data(tmp_path / "imdb.pkl")
    assert "python data/prepare_imdb.py" in str(error.value) and str(tmp_path) in str(error.value)


def test_truncated_pickle_says_delete_and_rerun(tmp_path):
    pickle_path, _ = imdb.save_imdb(tmp_path, ([[2, 3]] * 50, [1] * 50), ([[4]] * 50, [0] * 50), {})
    pickle_path.write_bytes(pickle_path.read_bytes()[:-40])
    with pytest.raises(DataError, match="Delete it") as error:
        imdb.load_data(pickle_path)
    assert str(pickle_path) in str(error.value)


def test_garbled_gzip_file_says_delete_and_rerun(tmp_path):
    path = tmp_path / "imdb.pkl.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="Delete it"):
        imdb.read_imdb_pickle(path)


def test_pickle_of_the_wrong_shape_is_rejected(tmp_path):
    path = tmp_path / "imdb.pkl"
    with open(path, "wb") as f:
        pickle.dump(([[2]], [1, 0]), f)  # 1 review, 2 labels
        pickle.dump(([[2]], [1]), f)
    with pytest.raises(DataError, match="Delete it"):
        imdb.read_imdb_pickle(path)


@pytest.mark.parametrize("train, problem", [
    (([[2, "word"]], [1]), "a word index that is not an integer"),
    (([[2, -3]], [1]), "a negative word index"),
    (([(2, 3)], [1]), "a review that is not a list"),
    (([[2]], [-1]), "a label that is not an integer >= 0"),
    (("reviews", [1]), "instead of two lists"),
])
def test_pickle_of_the_wrong_content_names_what_is_wrong(tmp_path, train, problem):
    path = tmp_path / "imdb.pkl"
    path.write_bytes(pickle.dumps(train, 2) + pickle.dumps(([[2]], [1]), 2))
    with pytest.raises(DataError, match=problem):
        imdb.read_imdb_pickle(path)


def test_a_pickle_that_would_build_objects_is_refused_unbuilt(tmp_path):
    path = tmp_path / "imdb.pkl"
    path.write_bytes(pickle.dumps(([[2]], [1]), 2) + pickle.dumps(np.arange(3), 2))
    with pytest.raises(DataError, match="truncated or corrupt.*plain data only"):
        imdb.read_imdb_pickle(path)
    (tmp_path / "imdb.dict.pkl").write_bytes(pickle.dumps({"a": 2.5}, 2))
    with pytest.raises(DataError, match="dictionary of words to indices"):
        imdb.load_dictionary(tmp_path / "imdb.dict.pkl")


# --- load_data: the tutorial's semantics on a synthetic imdb.pkl

def _synthetic(tmp_path, n_train=40, n_test=12):
    """Review i of train has length 1 + i % 9 and words i .. (distinct content per review)."""
    train_x = [[2 + (i + j) % 30 for j in range(1 + i % 9)] for i in range(n_train)]
    test_x = [[2 + (i * 3 + j) % 30 for j in range(1 + (i * 5) % 13)] for i in range(n_test)]
    train_y = [1] * (n_train // 2) + [0] * (n_train - n_train // 2)
    test_y = [1] * (n_test // 2) + [0] * (n_test - n_test // 2)
    path, _ = imdb.save_imdb(tmp_path, (train_x, train_y), (test_x, test_y), {})
    return path, (train_x, train_y), (test_x, test_y)


def _pairs(split):
    return sorted((tuple(x), y) for x, y in zip(*split))


def test_load_data_maxlen_filters_train_only_and_splits_valid(tmp_path):
    path, train_set, test_set = _synthetic(tmp_path)
    train, valid, test = imdb.load_data(path, n_words=100, valid_portion=0.25, maxlen=6,
                                        rng=np.random.RandomState(1))
    kept = [(tuple(x), y) for x, y in zip(*train_set) if len(x) < 6]
    assert len(valid[0]) == len(kept) - int(np.round(len(kept) * 0.75))
    assert sorted(_pairs(train) + _pairs(valid)) == sorted(kept)
    assert _pairs(test) == _pairs(test_set) and max(map(len, test[0])) >= 6  # test is never filtered


def test_load_data_maps_rare_words_to_unknown_and_sorts_by_length(tmp_path):
    path, _, _ = _synthetic(tmp_path)
    train, valid, test = imdb.load_data(path, n_words=10, valid_portion=0.1, rng=np.random.RandomState(0))
    for x, _ in (train, valid, test):
        assert all(w < 10 for seq in x for w in seq) and any(w == imdb.UNKNOWN for seq in x for w in seq)
        lengths = list(map(len, x))
        assert lengths == sorted(lengths)


def test_length_sort_is_stable(tmp_path):
    path, _, _ = _synthetic(tmp_path)
    unsorted = imdb.load_data(path, sort_by_len=False, rng=np.random.RandomState(5))
    ordered = imdb.load_data(path, sort_by_len=True, rng=np.random.RandomState(5))
    for raw, done in zip(unsorted, ordered):
        expected = sorted(zip(*raw), key=lambda pair: len(pair[0]))  # Python's sort is stable
        assert list(zip(*done)) == expected


def test_randomstate_123_reproduces_the_tutorials_seeded_global_rng(tmp_path):
    path, _, _ = _synthetic(tmp_path)
    ours = imdb.load_data(path, valid_portion=0.2, rng=np.random.RandomState(123))
    np.random.seed(123)  # what lstm.py did at import time
    tutorial = imdb.load_data(path, valid_portion=0.2, rng=None)
    other_seed = imdb.load_data(path, valid_portion=0.2, rng=np.random.RandomState(124))
    assert ours == tutorial
    assert ours[1] != other_seed[1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_words": 1}, "n_words"),
        ({"valid_portion": 1.0}, "valid_portion"),
        ({"valid_portion": -0.1}, "valid_portion"),
        ({"maxlen": -3}, "maxlen"),
        ({"maxlen": 1}, "keeps no training review"),
    ],
)
def test_load_data_rejects_bad_parameters(tmp_path, kwargs, message):
    path, _, _ = _synthetic(tmp_path)
    with pytest.raises(ValueError, match=message):
        imdb.load_data(path, rng=np.random.RandomState(0), **kwargs)


# --- prepare_data

def test_prepare_data_pads_time_major_with_a_floatx_mask():
    import aesara

    x, mask, labels = imdb.prepare_data([[5, 6, 7], [8]], [1, 0])
    assert x.dtype == np.int64 and mask.dtype == aesara.config.floatX
    assert x.shape == mask.shape == (3, 2)
    np.testing.assert_array_equal(x, [[5, 8], [6, 0], [7, 0]])
    np.testing.assert_array_equal(mask, [[1, 1], [1, 0], [1, 0]])
    assert labels == [1, 0]


def test_prepare_data_maxlen_drops_long_sequences_or_returns_nones():
    x, mask, labels = imdb.prepare_data([[5, 6, 7], [8], [9, 9]], [1, 0, 1], maxlen=3)
    assert x.shape == (2, 2) and labels == [0, 1]
    assert imdb.prepare_data([[5, 6, 7]], [1], maxlen=3) == (None, None, None)


# --- load_splits: train_lstm's data part, both protocols

def test_tutorial_protocol_is_load_data_then_a_random_test_subset(tmp_path):
    path, _, _ = _synthetic(tmp_path)
    rng = np.random.RandomState(123)
    train, valid, test = imdb.load_splits("tutorial", path, n_words=20, maxlen=8, test_size=5, rng=rng)

    reference_rng = np.random.RandomState(123)
    ref_train, ref_valid, ref_test = imdb.load_data(path, 20, 0.05, 8, rng=reference_rng)
    idx = np.arange(len(ref_test[0]))
    reference_rng.shuffle(idx)
    assert (train, valid) == (ref_train, ref_valid)
    assert test == ([ref_test[0][i] for i in idx[:5]], [ref_test[1][i] for i in idx[:5]])
    assert rng.randint(1 << 30) == reference_rng.randint(1 << 30)  # same draws consumed


def test_paper_protocol_swaps_train_and_test_and_keeps_valid(tmp_path):
    path, _, test_set = _synthetic(tmp_path)
    tutorial = imdb.load_splits("tutorial", path, 20, 8, 0, np.random.RandomState(7))
    train, valid, test = imdb.load_splits("paper", path, 20, 8, 0, np.random.RandomState(7))
    assert train == tutorial[2] and test == tutorial[0] and valid == tutorial[1]
    assert len(train[0]) == len(test_set[0])  # the whole official test split, no length filter

    _, _, subset = imdb.load_splits("paper", path, 20, 8, 4, np.random.RandomState(7))
    assert len(subset[0]) == 4 and set(map(tuple, subset[0])) <= set(map(tuple, tutorial[0][0]))


def test_unknown_protocol_is_rejected(tmp_path):
    path, _, _ = _synthetic(tmp_path)
    with pytest.raises(ValueError, match="tutorial, paper"):
        imdb.load_splits("reversed", path, 20, 8, 0, np.random.RandomState(0))


# --- the whole pipeline on a tiny archive with the official layout (including train/unsup)

def _tiny_archive(path: Path) -> None:
    reviews = {**TINY, "train/unsup": [(0, "Unlabeled review.")]}
    with tarfile.open(path, "w:gz") as tf:
        for folder, texts in reviews.items():
            for review_id, text in texts:
                data = text.encode()
                info = tarfile.TarInfo(f"aclImdb/{folder}/{review_id}_7.txt")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def test_prepare_imdb_skips_unsup_and_does_not_redo_work(tmp_path, monkeypatch):
    mirror, data_dir = tmp_path / "mirror", tmp_path / "data"
    mirror.mkdir()
    _tiny_archive(mirror / "aclImdb_v1.tar.gz")
    fake = download.Archive("aclImdb_v1.tar.gz", "http://unreachable.invalid/imdb.tar.gz", ("aclImdb_v1.tar.gz",),
                            frozenset({download.sha256sum(mirror / "aclImdb_v1.tar.gz")}))
    monkeypatch.setitem(download.ARCHIVES, "imdb", fake)

    pickle_path, dict_path = imdb.prepare_imdb(data_dir, mirror, n_jobs=1)
    assert not (data_dir / "aclImdb" / "train" / "unsup").exists()
    (train_x, train_y), (test_x, test_y) = imdb.read_imdb_pickle(pickle_path)
    assert (len(train_x), train_y, test_y) == (4, [1, 1, 0, 0], [1, 0])

    def must_not_run(*args, **kwargs):
        raise AssertionError("prepare_imdb redid work that was already done")

    monkeypatch.setattr(imdb, "build_imdb", must_not_run)
    monkeypatch.setattr(imdb, "fetch_archive", must_not_run)
    assert imdb.prepare_imdb(data_dir, mirror, n_jobs=1) == (pickle_path, dict_path)
    with pytest.raises(AssertionError, match="redid work"):
        imdb.prepare_imdb(data_dir, mirror, n_jobs=1, force=True)


# --- the real data, when `make data` (or data/prepare_imdb.py) has built it

REAL = REPO / "data" / "imdb.pkl"


@pytest.mark.skipif(not REAL.exists(), reason="data/imdb.pkl not built (run python data/prepare_imdb.py)")
def test_real_imdb_has_balanced_25000_25000_splits():
    (train_x, train_y), (test_x, test_y) = imdb.read_imdb_pickle(REAL)
    assert len(train_x) == len(test_x) == 25000
    assert train_y == [1] * 12500 + [0] * 12500 and test_y == [1] * 12500 + [0] * 12500
    dictionary = imdb.load_dictionary(REAL.with_name("imdb.dict.pkl"))
    assert dictionary["the"] == 2 and len(dictionary) > 90000
    assert max(w for review in train_x for w in review) == len(dictionary) + 1
