"""Fetching archives from a mirror (verified, once) and extracting them safely."""
import io
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from dltutorials_is.datasets import download
from dltutorials_is.datasets.download import DataError


def _tar(path: Path, members: dict) -> Path:
    """members: name -> bytes content, or ("symlink", target)."""
    with tarfile.open(path, "w:gz") as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return path


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A mirror folder holding a small archive registered (with its checksum) as "imdb"."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    archive = _tar(folder / "aclImdb_v1_labeled.tar.gz", {"aclImdb/train/pos/0_9.txt": b"Good."})
    fake = download.Archive(
        filename="aclImdb_v1.tar.gz",
        url="http://unreachable.invalid/aclImdb_v1.tar.gz",
        mirror_names=("aclImdb_v1.tar.gz", "aclImdb_v1_labeled.tar.gz"),
        sha256=frozenset({download.sha256sum(archive)}),
    )
    monkeypatch.setitem(download.ARCHIVES, "imdb", fake)

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return folder


def test_copies_from_the_mirror_under_the_canonical_name(tmp_path, mirror):
    dest = download.fetch_archive("imdb", tmp_path / "data", mirror)
    assert dest == tmp_path / "data" / "aclImdb_v1.tar.gz"
    assert dest.read_bytes() == (mirror / "aclImdb_v1_labeled.tar.gz").read_bytes()
    assert not list(dest.parent.glob("*.part"))


def test_an_archive_already_there_is_not_copied_again(tmp_path, mirror):
    dest = download.fetch_archive("imdb", tmp_path / "data", mirror)
    (mirror / "aclImdb_v1_labeled.tar.gz").unlink()  # neither the mirror nor the network is available now
    assert download.fetch_archive("imdb", tmp_path / "data", mirror) == dest


def test_checksum_mismatch_in_the_mirror_is_refused(tmp_path, mirror):
    (mirror / "aclImdb_v1_labeled.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DataError, match="SHA-256"):
        download.fetch_archive("imdb", tmp_path / "data", mirror)
    assert not (tmp_path / "data" / "aclImdb_v1.tar.gz").exists()


def test_a_corrupt_archive_in_the_data_dir_says_to_delete_it(tmp_path, mirror):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "aclImdb_v1.tar.gz").write_bytes(b"truncated")
    with pytest.raises(DataError, match="Delete it"):
        download.fetch_archive("imdb", tmp_path / "data", mirror)


def test_failed_download_leaves_no_partial_file(tmp_path, mirror):
    with pytest.raises(DataError, match="could not download"):
        download.fetch_archive("imdb", tmp_path / "data", tmp_path / "empty-mirror")
    assert not list((tmp_path / "data").iterdir())


def test_extract_keeps_only_the_requested_members_and_runs_once(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"top/keep/a.txt": b"a", "top/unsup/b.txt": b"b", "top/other/c.txt": b"c"})
    dest = download.extract(archive, tmp_path / "out", members_prefix=("top/keep/", "top/other/"))
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.txt")) == ["top/keep/a.txt", "top/other/c.txt"]
    (dest / "top" / "keep" / "a.txt").unlink()
    download.extract(archive, tmp_path / "out", members_prefix=("top/keep/",))
    assert not (dest / "top" / "keep" / "a.txt").exists()  # second call is a no-op


@pytest.mark.parametrize(
    "members",
    [
        {"ok.txt": b"x", "../escaped.txt": b"x"},
        {"ok.txt": b"x", "inside/../../escaped.txt": b"x"},
        {"link": ("symlink", "/etc/passwd")},
    ],
)
def test_extract_refuses_unsafe_tar_members(tmp_path, members):
    archive = _tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(DataError, match="unsafe"):
        download.extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()


def test_extract_refuses_a_zip_escaping_the_target(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "x")
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(DataError, match="outside"):
        download.extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()
