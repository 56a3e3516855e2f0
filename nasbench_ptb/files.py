"""File integrity helpers shared by the builder and the query side: checksums and atomic writes."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import h5py


def sha256_file(path: str | os.PathLike) -> str:
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
