"""Downloads with urllib only: streamed to a temporary file, hashed while written, verified,
then renamed into place; the servers are chosen by environment variables."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Union

from .._files import CHUNK, atomic_path
from ..errors import DownloadError
from . import catalog

HF_ENDPOINT = "https://huggingface.co"
LEGACY_ROOT = "https://dl.fbaipublicfiles.com/demucs"

TIMEOUT = 60.0  # seconds without a byte before a connection is given up

Progress = Union[bool, None, Callable[[int, "int | None"], object]]


def endpoints() -> tuple[str, str]:
    """(Hugging Face endpoint, legacy root). ``NUMBA_DEMUCS_REMOTE`` replaces both, so that one
    server can play both roles: ``REMOTE/{repo}/resolve/main/{file}`` and
    ``REMOTE/{folder}/{file}``."""
    remote = os.environ.get("NUMBA_DEMUCS_REMOTE")
    if remote:
        return remote.rstrip("/"), remote.rstrip("/")
    return (os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/"), LEGACY_ROOT


def offline() -> bool:
    return os.environ.get("NUMBA_DEMUCS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_url(repo_id: str, filename: str) -> str:
    return f"{endpoints()[0]}/{repo_id}/resolve/main/{filename}"


def legacy_url(sig: str) -> str:
    return f"{endpoints()[1]}/{catalog.LEGACY_FILES[sig]}"


class _HopRecorder(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping each redirect response's URL and headers
    (Hugging Face puts the sha256 of an LFS file on the redirect, not on the CDN's answer)."""

    def __init__(self):
        super().__init__()
        self.hops: list[tuple[str, object]] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.hops.append((req.full_url, headers))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@contextlib.contextmanager
def _reporter(progress: Progress, label: str):
    """A ``(done, total)`` callback: the caller's, a rich bar for ``True``, or nothing."""
    if callable(progress) and not isinstance(progress, bool):
        yield progress
        return
    if not progress:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress as RichProgress,
                               TextColumn, TimeRemainingColumn, TransferSpeedColumn)

    with RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def download(url: str, dest: Path, verify: Callable, progress: Progress) -> dict:
    """Stream ``url`` to a temporary file beside ``dest``, call ``verify(tmp, sha256, size,
    hops)`` (raises on a bad file, returns what to record), then rename to ``dest``. Nothing
    is left behind on failure or interruption; ``dest`` itself is only ever replaced by a
    verified file."""
    if offline():
        raise DownloadError(f"{dest.name}: not in the cache and NUMBA_DEMUCS_OFFLINE is set "
                            f"(would download {url})")
    recorder = _HopRecorder()
    opener = urllib.request.build_opener(recorder)
    request = urllib.request.Request(url, headers={
        "User-Agent": "numba-demucs", "Accept-Encoding": "identity"})
    with atomic_path(dest) as tmp:
        try:
            response = opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DownloadError(f"{url}: cannot reach the server ({reason})") from None
        with response:
            hops = recorder.hops + [(response.geturl(), response.headers)]
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            digest = hashlib.sha256()
            done = 0
            with _reporter(progress, dest.name) as report, open(tmp, "wb") as out:
                report(0, total)
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (http.client.HTTPException, OSError) as error:
                        raise DownloadError(
                            f"{url}: connection lost after {done} of {total or '?'} bytes "
                            f"({type(error).__name__}); {dest.name} not written") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    report(done, total)
        if total is not None and done != total:
            raise DownloadError(f"{url}: connection closed after {done} of {total} bytes; "
                                f"{dest.name} not written")
        return verify(tmp, digest.hexdigest(), done, hops)


def expected_from_headers(hops, hub: str) -> tuple[str, str | None, int | None, str | None]:
    """(kind, value, size, commit) Hugging Face announces for a file.

    ``X-Linked-Etag`` (on the hub's redirect to its CDN) is the sha256 of an LFS file and
    ``X-Linked-Size`` its size; a regular git file has no redirect and its ``ETag`` is its git
    blob sha1. A CDN's own ETag means nothing here, so plain ETags are read from the hub only.
    """
    def header(headers, key):
        value = headers.get(key)
        return value.strip() if value else None

    linked = next((header(h, "X-Linked-Etag") for _, h in hops if header(h, "X-Linked-Etag")), None)
    size = next((header(h, "X-Linked-Size") for _, h in hops if header(h, "X-Linked-Size")), None)
    commit = next((header(h, "X-Repo-Commit") for _, h in hops if header(h, "X-Repo-Commit")), None)
    etag = linked
    if etag is None:
        hub_hops = [h for url, h in hops if url.startswith(hub + "/")]
        etag = header(hub_hops[-1], "ETag") if hub_hops else None
    if etag is not None:
        etag = etag.removeprefix("W/").strip('"').lower()
    size = int(size) if size and size.isdigit() else None
    if etag and re.fullmatch(r"[0-9a-f]{64}", etag):
        return "sha256", etag, size, commit
    if etag and re.fullmatch(r"[0-9a-f]{40}", etag) and linked is None:
        return "git-sha1", etag, size, commit
    return "none", None, size, commit
