"""File integrity helpers shared by the builder and the query side: checksums, the MANIFEST, atomic writes,
checked reads."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import h5py

from .errors import TableError


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (readers never see a half-written
    file), on error remove it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should be an ordinary readable file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_h5(path: str | os.PathLike, fill: Callable[[h5py.File], None]) -> None:
    """Write an HDF5 file atomically: ``fill`` builds it in memory, then plain writes put the bytes in a temporary
    file beside ``path`` (synced), renamed onto ``path``. A full disk or another I/O error is then an
    ``OSError`` raised here, with the temporary file removed and ``path`` untouched — HDF5's own writer can crash
    the process when the disk fills under it."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        fill(f)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buffer.getbuffer())
        fh.flush()
        os.fsync(fh.fileno())


T = TypeVar("T")


def read_h5(path: str | os.PathLike, what: str, read: Callable[[h5py.File], T], error: type[Exception]) -> T:
    """Open one of our HDF5 files (a table, a search-results file) and hand it to ``read``: a missing path, and
    whatever a damaged file makes h5py or ``read`` raise, become one ``error`` naming the path and the cause;
    ``read``'s own ``error`` (a precise complaint) passes through."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {what} file")
    try:
        with h5py.File(path, "r") as f:
            return read(f)
    except error:
        raise
    except Exception as exc:  # noqa: BLE001 — whatever a damaged file makes h5py or the parsers raise
        raise error(f"{path}: unreadable or truncated {what} file ({type(exc).__name__}: {exc})") from None


def read_manifest(folder: Path) -> dict[str, str]:
    """``MANIFEST`` in sha256sum format (``<sha256>  <file>``), in order; {} when absent.

    Raises:
        TableError: the MANIFEST exists but a line is malformed.
    """
    path = Path(folder) / "MANIFEST"
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise TableError(f"{path}:{n}: expected '<sha256>  <file>', got {line!r}")
        out[name.strip()] = digest
    return out


def write_manifest(folder: Path, names: list[str]) -> None:
    """Write ``MANIFEST`` listing ``names`` (in this order: the first table of a space is its default) with each
    file's current SHA-256, atomically."""
    folder = Path(folder)
    text = "".join(f"{sha256_file(folder / n)}  {n}\n" for n in names)
    with atomic_path(folder / "MANIFEST") as tmp:
        tmp.write_text(text)


def refresh_manifest(path: str | os.PathLike) -> bool:
    """After rewriting ``path``: update its line in the ``MANIFEST`` beside it, if one lists it (order kept);
    whether it was listed."""
    path = Path(path)
    names = list(read_manifest(path.parent))
    if path.name not in names:
        return False
    write_manifest(path.parent, names)
    return True
