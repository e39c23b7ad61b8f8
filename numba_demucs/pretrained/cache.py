"""The download cache: where it is, how each cached file is verified before every use, and
how a missing or corrupt one is fetched (``Fetcher``).

Legacy ``SIG-CHECKSUM.th`` files carry a sha256 prefix in their name; a Hugging Face file is
checked against the hub's headers when downloaded, and its sha256 and size are kept in a
``.meta.json`` sidecar that every later use checks again.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from pathlib import Path

from .._files import atomic_write, hash_file
from ..errors import ChecksumError
from . import catalog, download
from .download import Progress

logger = logging.getLogger("numba_demucs.pretrained")

APP_NAME = "numba-demucs"

_HEX = re.compile(r"[0-9a-f]+")


def cache_dir() -> Path:
    """Where downloads are kept: ``$NUMBA_DEMUCS_CACHE``, else the platform's cache folder.

    Linux and other Unix: ``$XDG_CACHE_HOME/numba-demucs`` (``~/.cache/numba-demucs``);
    macOS: ``~/Library/Caches/numba-demucs``; Windows: ``%LOCALAPPDATA%\\numba-demucs\\Cache``.
    """
    override = os.environ.get("NUMBA_DEMUCS_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform not in ("win32", "darwin"):
        base = os.environ.get("XDG_CACHE_HOME")
        # the XDG spec: a relative path is invalid and ignored (platformdirs would take it)
        if not base or not os.path.isabs(base):
            return Path.home() / ".cache" / APP_NAME
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def checksum_from_name(path: Path) -> str | None:
    """The sha256 prefix in ``SIG-CHECKSUM.th``, or None (demucs' naming convention)."""
    path = Path(path)
    if path.suffix != ".th" or "-" not in path.stem:
        return None
    checksum = path.stem.rsplit("-", 1)[1]
    return checksum if _HEX.fullmatch(checksum) else None


def check_prefix(path: Path, checksum: str) -> None:
    actual = hash_file(path)[:len(checksum)]
    if actual != checksum:
        raise ChecksumError(
            f"{path}: checksum mismatch: the file name promises a sha256 starting with "
            f"{checksum}, the content hashes to {actual}")


def check_name_checksum(path) -> None:
    """For ``SIG-CHECKSUM.th``: the content's sha256 must start with CHECKSUM, as demucs checks."""
    path = Path(path)
    checksum = checksum_from_name(path)
    if checksum and path.is_file():
        check_prefix(path, checksum)


def git_blob_sha1(path: Path) -> str:
    """The id git (and so the Hugging Face ``ETag``) gives a regular, non-LFS file."""
    return hash_file(path, "sha1", f"blob {path.stat().st_size}\0".encode())


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


class NotCached(Exception):
    """The file is not in the cache (or was corrupt) and the network was not to be used."""


class Fetcher:
    """Cache lookups and downloads for one resolution; remembers corrupt files."""

    def __init__(self, root: Path, progress: Progress):
        self.root = Path(root)
        self.progress = progress
        self.corrupt: list[str] = []

    def _discard(self, path: Path, reason: str) -> None:
        logger.warning("%s: cached file is corrupt (%s); deleting it", path, reason)
        self.corrupt.append(f"{path} ({reason})")
        for victim in (path, sidecar(path)):
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()

    # legacy .th: the file name carries the checksum
    def legacy(self, sig: str, network: bool) -> Path:
        path = self.root / "legacy" / catalog.LEGACY_FILES[sig].rsplit("/", 1)[1]
        checksum = checksum_from_name(path)
        if path.is_file():
            try:
                check_prefix(path, checksum)
                return path
            except ChecksumError as error:
                self._discard(path, str(error).split(": ", 1)[1])
        if not network:
            raise NotCached(path)
        url = download.legacy_url(sig)

        def verify(tmp, sha256, size, hops):
            if not sha256.startswith(checksum):
                raise ChecksumError(
                    f"{url}: checksum mismatch: {path.name} must have a sha256 starting with "
                    f"{checksum}, the {size} bytes received hash to {sha256[:len(checksum)]}; "
                    "nothing was saved")
            return {}

        download.download(url, path, verify, self.progress)
        return path

    # Hugging Face: verified against the hub's headers, then remembered in a sidecar
    def hf(self, repo_id: str, filename: str, network: bool) -> Path:
        path = self.root / "hf" / repo_id / filename
        if path.is_file():
            try:
                record = json.loads(sidecar(path).read_text())
                expected_sha, expected_size = record["sha256"], int(record["size"])
            except (OSError, ValueError, KeyError, TypeError):
                self._discard(path, "no readable checksum sidecar")
            else:
                if path.stat().st_size != expected_size:
                    self._discard(path, f"{path.stat().st_size} bytes, expected {expected_size}")
                elif hash_file(path) != expected_sha:
                    self._discard(path, "sha256 differs from the one recorded at download")
                else:
                    return path
        if not network:
            raise NotCached(path)
        url = download.hf_url(repo_id, filename)
        hub = download.endpoints()[0]

        def verify(tmp, sha256, size, hops):
            kind, value, announced_size, commit = download.expected_from_headers(hops, hub)
            if announced_size is not None and announced_size != size:
                raise ChecksumError(f"{url}: received {size} bytes, the hub announced "
                                    f"{announced_size}; nothing was saved")
            if kind == "sha256" and sha256 != value:
                raise ChecksumError(f"{url}: checksum mismatch: the hub gives sha256 {value}, "
                                    f"the bytes received hash to {sha256}; nothing was saved")
            if kind == "git-sha1":
                actual = git_blob_sha1(tmp)
                if actual != value:
                    raise ChecksumError(
                        f"{url}: checksum mismatch: the hub gives git blob id {value}, the bytes "
                        f"received hash to {actual}; nothing was saved")
            if kind == "none":
                logger.warning("%s: the server gave no checksum; %s is kept unverified "
                               "(its sha256 is recorded to detect later corruption)", url, filename)
            record = {"url": url, "sha256": sha256, "size": size, "verified_against": kind,
                      "expected": value, "commit": commit}
            atomic_write(sidecar(path), json.dumps(record, indent=1) + "\n")
            return record

        download.download(url, path, verify, self.progress)
        return path

    def with_corrupt_note(self, message: str) -> str:
        if self.corrupt:
            message += (". The cached copy was corrupt and has been deleted: "
                        + "; ".join(self.corrupt) + " -- and the server could not provide it again")
        return message
