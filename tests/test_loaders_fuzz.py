"""Every loader of a file from disk, fed seeded random bytes, truncations and byte flips of a valid file:
whatever comes out is the project's own error (or a successful load), never OverflowError, MemoryError,
KeyError & co., and never a pickle that builds objects or allocates gigabytes."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from dltutorials_is.datasets import imdb
from dltutorials_is.datasets.download import DataError
from dltutorials_is.datasets.midi import MidiError, midiread, midiwrite
from dltutorials_is.fim import driver as fim
from dltutorials_is.graphs.lstm import ModelFileError, init_params, load_params
from dltutorials_is.models.rnnrbm import RnnRbmConfig
from dltutorials_is.tutorials.lstm import save_model
from dltutorials_is.tutorials.rnnrbm import CheckpointError, TrainingState, read_checkpoint, save_checkpoint

N_RANDOM, N_PREFIXES, N_FLIPPED = 150, 150, 100  # per loader


def variants(valid: bytes, magic: bytes, seed: int):
    """Random byte strings (half behind the format's magic bytes), prefixes of `valid` (always its
    first and last few cut points, then random ones) and `valid` with a few random bytes changed."""
    rng = np.random.RandomState(seed)
    for i in range(N_RANDOM):
        noise = rng.randint(0, 256, size=rng.randint(0, 400)).astype("uint8").tobytes()
        yield (magic if i % 2 else b"") + noise
    cuts = sorted({*range(min(8, len(valid))), *range(max(0, len(valid) - 8), len(valid)),
                   *rng.randint(0, len(valid), size=N_PREFIXES)})
    for cut in cuts[:N_PREFIXES]:
        yield valid[:cut]
    for _ in range(N_FLIPPED):
        flipped = bytearray(valid)
        for position in rng.randint(0, len(valid), size=rng.randint(1, 9)):
            flipped[position] = rng.randint(0, 256)
        yield bytes(flipped)


def only_raises(load, own_error, valid: bytes, magic: bytes, path, seed: int) -> int:
    """Feed every variant to `load(path)`; return how many it refused (each with `own_error`)."""
    path.write_bytes(valid)
    load(path)  # the valid file itself loads
    refused = 0
    for data in variants(valid, magic, seed):
        path.write_bytes(data)
        try:
            load(path)
        except own_error:
            refused += 1
        except Exception as error:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{type(error).__name__} escaped for {len(data)} bytes {data[:40]!r}…: {error}")
    assert refused >= N_RANDOM + N_PREFIXES // 2  # nearly every variant is unreadable
    return refused


# ---------------------------------------------------------------------------------------------


@pytest.fixture
def imdb_files(tmp_path):
    train = ([[2, 3, 300], [4, 70000, 5, 6], [7]], [1, 0, 1])
    test = ([[8, 9], [10, 11, 12]], [0, 1])
    return imdb.save_imdb(tmp_path, train, test, {"the": 2, "film": 3, "été": 4})


@pytest.mark.parametrize("load", [imdb.read_imdb_pickle, imdb.load_data], ids=["read_imdb_pickle", "load_data"])
def test_imdb_pickle_loaders(imdb_files, load):
    pickle_path, _ = imdb_files
    only_raises(load, DataError, pickle_path.read_bytes(), b"\x80\x02", pickle_path, seed=1)


def test_imdb_dictionary_loader(imdb_files):
    _, dict_path = imdb_files
    only_raises(imdb.load_dictionary, DataError, dict_path.read_bytes(), b"\x80\x02", dict_path, seed=2)


def test_imdb_loader_reads_other_protocols_and_gzip_too(tmp_path):
    """The original's Python 2 files are protocol 2; a hand-made one may be any protocol or gzipped."""
    import gzip

    split = ([[2, 3]], [1])
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        raw = pickle.dumps(split, protocol) + pickle.dumps(split, protocol)
        (tmp_path / "imdb.pkl").write_bytes(raw)
        assert imdb.read_imdb_pickle(tmp_path / "imdb.pkl") == (split, split)
    only_raises(imdb.read_imdb_pickle, DataError, gzip.compress(raw), b"\x1f\x8b\x08", tmp_path / "imdb.pkl.gz", 3)


class TinySpec:
    """The smallest FIM plug-in: scores are fixed numbers, no training."""

    n_samples, train_fingerprint, init_fingerprint = 5, "t" * 64, "i" * 64

    def config(self):
        return {"eps": 0.1, "lr": 1.0, "max_iters": 3, "norm": "fro", "bases": ["W"], "protocol": "toy", "seed": 1}

    def build(self):
        return lambda i: fim.PrivateRun(i + 1, 0.05, True, {("W", kind): 1.0 + i + k
                                                            for k, kind in enumerate(fim.SCORE_KINDS)})


@pytest.fixture
def artefact(tmp_path):
    path = tmp_path / "p.pkl"
    fim.mine(TinySpec(), path, n_jobs=1, progress=False, log=lambda s: None)
    return path


def test_fim_artefact_loaders(artefact):
    valid = artefact.read_bytes()
    only_raises(fim.read_artefact, fim.FIMError, valid, b"\x80\x04\x95", artefact, seed=4)
    only_raises(lambda p: fim.load_importance(p, TinySpec.train_fingerprint, 5), fim.FIMError,
                valid, b"\x80\x04\x95", artefact, seed=5)


def test_lstm_model_file_loader(tmp_path):
    options = {"n_words": 20, "dim_proj": 4, "ydim": 2}
    params = init_params(options, np.random.RandomState(0))
    save_model(str(tmp_path / "m.npz"), params, [[0.5, 0.5]], options)
    only_raises(lambda p: load_params(p, init_params(options, np.random.RandomState(1))), ModelFileError,
                (tmp_path / "m.npz").read_bytes(), b"PK\x03\x04", tmp_path / "m.npz", seed=6)


def test_rnnrbm_checkpoint_loader(tmp_path):
    config = RnnRbmConfig(n_hidden=3, n_hidden_recurrent=2, r=(60, 64))
    rng = np.random.RandomState(0)
    params = {"W": rng.rand(4, 3), "bv": np.zeros(4), "bh": np.zeros(3), "Wuh": rng.rand(2, 3), "Wuv": rng.rand(2, 4),
              "Wvu": rng.rand(4, 2), "Wuu": rng.rand(2, 2), "bu": np.zeros(2)}
    model = SimpleNamespace(config=config, get_params=lambda: params,  # what save_checkpoint reads of a model
                            random_states=lambda: {"train/0": rng.randint(1, 99, (3, 6)).astype("int32")})
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, TrainingState(2, rng.get_state(), {"song_order": np.arange(3)}))
    only_raises(read_checkpoint, CheckpointError, path.read_bytes(), b"PK\x03\x04", path, seed=7)


def test_midi_loader(tmp_path):
    import mido

    roll = np.zeros((12, 88))
    roll[0:5, 39] = roll[3:9, 43] = roll[6:12, 46] = 1
    midiwrite(tmp_path / "song.mid", roll, dt=0.3)
    song = mido.MidiFile(tmp_path / "song.mid")
    song.tracks[0][1:1] = [mido.MetaMessage("key_signature", key="Bb"), mido.MetaMessage("time_signature")]
    song.save(tmp_path / "song.mid")  # meta events too: mido raises its own errors for garbled ones
    only_raises(lambda p: midiread(p, (21, 109), 0.3), MidiError, (tmp_path / "song.mid").read_bytes(),
                b"MThd\x00\x00\x00\x06\x00\x01", tmp_path / "song.mid", seed=8)
