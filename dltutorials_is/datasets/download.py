"""Fetch the raw archives from a local mirror or their canonical URL, verify them, extract them safely.

Nothing is downloaded twice: an archive already in the data directory with a good checksum is reused.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dltutorials_is.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Archive:
    """A raw data archive: where users get it, what the mirror calls it, which checksums we trust."""

    filename: str  # name in the data directory
    url: str  # canonical address users download from
    mirror_names: tuple[str, ...]  # names it may have in a mirror directory, best first
    sha256: frozenset[str]  # known-good checksums (the full archive and the labeled-only mirror)


ARCHIVES = {
    "imdb": Archive(
        filename="aclImdb_v1.tar.gz",
        url="http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        mirror_names=("aclImdb_v1.tar.gz", "aclImdb_v1_labeled.tar.gz"),
        sha256=frozenset(
            {
                "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",  # official full archive
                "3c27c84c5b647935a2b44ee9c5b3fc302d26b6d268caf4c6a360aa7cb1f5fce7",  # labeled-only mirror
            }
        ),
    ),
    "nottingham": Archive(
        filename="Nottingham.zip",
        url="http://www-etud.iro.umontreal.ca/~boulanni/Nottingham.zip",
        mirror_names=("Nottingham.zip",),
        sha256=frozenset({"4f8bdeaaae2cfe5338c3ecb2dd4e8ff0b240ff013458f63ca6ad2b11e7465ad0"}),
    ),
}


class DataError(UserError, RuntimeError):
    """Raised for missing, corrupt or unexpected data; the message says how to fix it."""


def default_data_dir() -> Path:
    """`$DLTUTORIALS_DATA`, else the repository's git-ignored `data/` folder."""
    return Path(os.environ.get("DLTUTORIALS_DATA", REPO_ROOT / "data"))


def find_mirror() -> Path | None:
    """`$DLTUTORIALS_MIRROR`, else `../shared/data` beside the repository, if it exists."""
    candidates = [os.environ.get("DLTUTORIALS_MIRROR"), REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, archive: Archive) -> None:
    actual = sha256sum(path)
    if actual not in archive.sha256:
        raise DataError(
            f"{path} has SHA-256 {actual}, which is not a known checksum of {archive.filename}: "
            f"the file is truncated or not the expected archive. Delete it and fetch again."
        )


def _download(url: str, dest: Path) -> None:
    partial = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(partial, "wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr
            ) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {error}") from error
    partial.replace(dest)


def fetch_archive(name: str, data_dir: Path | None = None, mirror: Path | None = None) -> Path:
    """Return the verified archive `name` in `data_dir`, copying it from a mirror or downloading it once."""
    archive = ARCHIVES[name]
    data_dir = Path(data_dir or default_data_dir())
    data_dir.mkdir(parents=True, exist_ok=True)
    dest = data_dir / archive.filename
    if dest.exists():
        _verify(dest, archive)
        return dest
    mirror = mirror or find_mirror()
    source = next(
        (mirror / n for n in archive.mirror_names if mirror and (mirror / n).is_file()), None
    )
    if source is not None:
        print(f"Copying {source} -> {dest}", file=sys.stderr)
        _verify(source, archive)
        shutil.copyfile(source, dest.with_suffix(dest.suffix + ".part"))
        dest.with_suffix(dest.suffix + ".part").replace(dest)
    else:
        print(f"Downloading {archive.url} -> {dest}", file=sys.stderr)
        _download(archive.url, dest)
        try:
            _verify(dest, archive)
        except DataError:
            dest.unlink()
            raise
    return dest


def _inside(root: Path, member: str) -> bool:
    target = (root / member).resolve()
    return target == root or root in target.parents


def extract(archive_path: Path, dest: Path, members_prefix: str | tuple[str, ...] = "") -> Path:
    """Extract a .tar.gz or .zip into `dest`, refusing members that would land outside it.

    Only members whose name starts with `members_prefix` (a string or a tuple of them) are
    extracted (e.g. skip the unlabeled IMDB reviews). A marker file makes a second call a no-op.
    """
    dest = Path(dest).resolve()
    marker = dest / f".extracted-{Path(archive_path).name}"
    if marker.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    if str(archive_path).endswith(".zip"):
        with zipfile.ZipFile(archive_path) as zf:
            names = [n for n in zf.namelist() if n.startswith(members_prefix)]
            unsafe = [n for n in names if not _inside(dest, n)]
            if unsafe:
                raise DataError(f"{archive_path} has members outside the target folder: {unsafe[:3]}")
            for n in tqdm(names, desc=f"extract {Path(archive_path).name}", file=sys.stderr):
                zf.extract(n, dest)
    else:
        with tarfile.open(archive_path, "r:*") as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(members_prefix)]
            unsafe = [
                m.name
                for m in members
                if not _inside(dest, m.name) or m.issym() or m.islnk() or m.isdev()
            ]
            if unsafe:
                raise DataError(f"{archive_path} has unsafe members (links or paths outside): {unsafe[:3]}")
            for m in tqdm(members, desc=f"extract {Path(archive_path).name}", file=sys.stderr):
                tf.extract(m, dest, set_attrs=False)
    marker.touch()
    return dest
