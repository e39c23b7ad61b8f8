"""What every writer and verifier of files shares: one way to hash a file, one way to write one.

A file under its final name is always complete: writers fill a temporary file in the same
folder (so the rename never crosses file systems) and ``os.replace`` it onto the final name
only once it is whole; on any error, ``KeyboardInterrupt`` included, the temporary is removed.
Temporaries are named ``.NAME.PID-RANDOM.tmp``: hidden, unique per writer, and telling which
process wrote them, so that one killed between writing and renaming can be cleaned up
(:func:`writer_pid`).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Union

CHUNK = 1 << 20
TEMPORARY_SUFFIX = ".tmp"

Content = Union[bytes, str, Callable[[BinaryIO], object]]


def hash_file(path, algorithm: str = "sha256", prefix: bytes = b"") -> str:
    """Hex digest of ``prefix`` followed by the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm, prefix)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def temporary_beside(path) -> Path:
    """A new empty file ``.NAME.PID-RANDOM.tmp`` in ``path``'s folder (created with it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-",
                                    suffix=TEMPORARY_SUFFIX, dir=path.parent)
    os.close(handle)
    return Path(name)


def writer_pid(temporary, final) -> int | None:
    """The process id in a temporary :func:`temporary_beside` made for ``final``, else None."""
    name, head = Path(temporary).name, f".{Path(final).name}."
    if not (name.startswith(head) and name.endswith(TEMPORARY_SUFFIX)):
        return None
    pid = name[len(head):-len(TEMPORARY_SUFFIX)].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


@contextlib.contextmanager
def atomic_path(path, temporary=None) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (``temporary``, if already made by
    :func:`temporary_beside`); when the block ends normally the temporary becomes ``path``,
    otherwise it is removed and ``path`` is left as it was."""
    path = Path(path)
    temporary = temporary_beside(path) if temporary is None else Path(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path, content: Content, *, fsync: bool = False) -> Path:
    """Write ``content`` (bytes, text as UTF-8, or a ``write(binary_file)`` callback) to
    ``path`` atomically; ``fsync`` flushes it to the disk before the rename."""
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        if callable(content):
            content(handle)
        else:
            handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    return path
