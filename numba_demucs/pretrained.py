"""Pretrained model names -> verified local files, as ``demucs -n NAME [--repo DIR]`` resolves them.

Where a name is looked up (see docs/pretrained.md for the whole story):

* ``--repo DIR`` given: only that folder, never the network. It holds bag yamls
  (``NAME.yaml``) and single models (``SIG.th``, ``SIG-CHECKSUM.th``, ``SIG.safetensors``).
* a bag name demucs 4.1 knows (``htdemucs``, ``htdemucs_ft``, ``htdemucs_6s``, ...): the
  Hugging Face repository ``adefossez/<hf_repo_name(name)>`` (the bag yaml plus one
  ``SIG.safetensors`` per member), falling back to the legacy ``.th`` files listed in
  demucs' ``remote/files.txt`` (``https://dl.fbaipublicfiles.com/demucs/...``).
* a model signature (``955717e8``): the legacy ``.th`` file only.
* ``hf://[namespace/]name`` or ``namespace/name``: that Hugging Face repository only.

Downloads go to the cache (``$NUMBA_DEMUCS_CACHE``, else the platform cache folder),
streamed to a temporary name beside the final one, hashed while written, verified, and only
then renamed. Every cached file is verified again before it is used; a corrupted one is
deleted and fetched again. Nothing here imports torch or huggingface_hub: urllib only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import re
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Union

import numpy as np

from .checkpoint import read_package
from .errors import (CheckpointError, ChecksumError, DownloadError, NumbaDemucsError,
                     UnknownModelError, UnsupportedModelError)

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "htdemucs"
HF_ENDPOINT = "https://huggingface.co"
HF_NAMESPACE = "adefossez"
LEGACY_ROOT = "https://dl.fbaipublicfiles.com/demucs"

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds without a byte before a connection is given up

Progress = Union[bool, None, Callable[[int, "int | None"], object]]

# The legacy files demucs 4.1.0 lists in remote/files.txt: signature -> path under LEGACY_ROOT.
# The part of the file name after the last "-" is the start of the file's sha256.
_LEGACY_FILES = {
    sig: f"{folder}/{sig}-{checksum}.th"
    for folder, entries in {
        "mdx_final": (
            "0d19c1c6-0f06f20e 5d2d6c55-db83574e 7d865c68-3d5dd56b 7ecf8ec1-70f50cc9 "
            "a1d90b5c-ae9d2452 c511e2ab-fe698775 cfa93e08-61801ae1 e51eebcc-c1b80bdd "
            "6b9c2ca1-3fd82607 b72baf4e-8778635e 42e558d4-196e0e1b 305bc58f-18378783 "
            "14fc6a69-a89dd0ee 464b36d7-e5a9386e 7fd6ef75-a905dd85 83fc094f-4a16d450 "
            "1ef250f1-592467ce 902315c2-b39ce9c9 9a6b4851-03af0aa6 fa0cb7f9-100d8bf4"),
        "hybrid_transformer": (
            "955717e8-8726e21a f7e0c4bc-ba3fe64a d12395a8-e57c48e6 92cfc3b6-ef3bcb9c "
            "04573f0d-f3cf25b2 75fc33f5-1941ce65 5c90dfd2-34c22ccb"),
    }.items()
    for sig, checksum in (entry.split("-") for entry in entries.split())
}

_MDX_WEIGHTS = [[1., 1., 0., 0.], [0., 1., 0., 0.], [1., 0., 1., 1.], [1., 0., 1., 1.]]


@dataclasses.dataclass(frozen=True)
class _BagSpec:
    models: tuple
    weights: list | None = None
    segment: float | None = None


# The bags demucs 4.1.0 ships in remote/*.yaml (the same content as the Hugging Face yamls).
_BAGS = {
    "htdemucs": _BagSpec(("955717e8",)),
    "htdemucs_ft": _BagSpec(("f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"),
                            [[1. if i == j else 0. for j in range(4)] for i in range(4)]),
    "htdemucs_6s": _BagSpec(("5c90dfd2",)),
    "hdemucs_mmi": _BagSpec(("75fc33f5",), segment=44),
    "mdx": _BagSpec(("0d19c1c6", "7ecf8ec1", "c511e2ab", "7d865c68"), _MDX_WEIGHTS, 44),
    "mdx_extra": _BagSpec(("e51eebcc", "a1d90b5c", "5d2d6c55", "cfa93e08"), segment=44),
    "mdx_q": _BagSpec(("6b9c2ca1", "b72baf4e", "42e558d4", "305bc58f"), _MDX_WEIGHTS, 44),
    "mdx_extra_q": _BagSpec(("83fc094f", "464b36d7", "14fc6a69", "7fd6ef75"), segment=44),
    "repro_mdx_a": _BagSpec(("9a6b4851", "1ef250f1", "fa0cb7f9", "902315c2"), segment=44),
    "repro_mdx_a_hybrid_only": _BagSpec(("fa0cb7f9", "902315c2", "fa0cb7f9", "902315c2"),
                                        segment=44),
    "repro_mdx_a_time_only": _BagSpec(("9a6b4851", "9a6b4851", "1ef250f1", "1ef250f1"),
                                      segment=44),
}

# Signatures whose checkpoints are demucs.htdemucs.HTDemucs, the only class implemented here.
# Everything else in the lists is a demucs v3 model (Demucs / HDemucs, some diffq-quantized).
_HTDEMUCS = frozenset({"955717e8", "f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d", "5c90dfd2"})


# -- locations ---------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where downloads are kept: ``$NUMBA_DEMUCS_CACHE``, else the platform's cache folder.

    Linux and other Unix: ``$XDG_CACHE_HOME/numba-demucs`` (``~/.cache/numba-demucs``);
    macOS: ``~/Library/Caches/numba-demucs``; Windows: ``%LOCALAPPDATA%\\numba-demucs\\Cache``.
    """
    override = os.environ.get("NUMBA_DEMUCS_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "numba-demucs" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "numba-demucs"
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        base = str(Path.home() / ".cache")
    return Path(base) / "numba-demucs"


def _endpoints() -> tuple[str, str]:
    """(Hugging Face endpoint, legacy root). ``NUMBA_DEMUCS_REMOTE`` replaces both, so that one
    server can play both roles: ``REMOTE/{repo}/resolve/main/{file}`` and
    ``REMOTE/{folder}/{file}``."""
    remote = os.environ.get("NUMBA_DEMUCS_REMOTE")
    if remote:
        return remote.rstrip("/"), remote.rstrip("/")
    return (os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/"), LEGACY_ROOT


def _offline() -> bool:
    return os.environ.get("NUMBA_DEMUCS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_repo_name(name: str) -> str:
    """The Hugging Face repository demucs 4.1 keeps a bag in: ``htdemucs`` -> ``HTDemucs``,
    ``htdemucs_ft`` -> ``HTDemucs-ft``, any other ``name`` -> ``Demucs-name``."""
    if name == "htdemucs":
        return "HTDemucs"
    if name.startswith("htdemucs_"):
        return "HTDemucs-" + name[len("htdemucs_"):]
    return "Demucs-" + name


def _hf_url(repo_id: str, filename: str) -> str:
    return f"{_endpoints()[0]}/{repo_id}/resolve/main/{filename}"


def _legacy_url(sig: str) -> str:
    return f"{_endpoints()[1]}/{_LEGACY_FILES[sig]}"


# -- listing -----------------------------------------------------------------------------

def _supported(sigs) -> bool:
    return all(sig in _HTDEMUCS for sig in sigs)


def list_models(repo=None, include_unsupported: bool = False) -> dict[str, str]:
    """Name -> one-line description of every name :func:`resolve` accepts.

    Without ``repo``: the demucs 4.1 bag names and single-model signatures whose architecture
    we implement (``include_unsupported=True`` adds the others, marked as such). With
    ``repo``: the bags and models found in that folder.
    """
    if repo is not None:
        local = _LocalRepo(repo)
        listing = {}
        for sig, (path, _checksum) in sorted(local.models.items()):
            listing[sig] = f"single model, local {path.name}"
        for name, path in sorted(local.bags.items()):
            if name not in listing:
                listing[name] = f"bag, local {path.name}"
        return listing
    listing = {}
    for name, spec in _BAGS.items():
        count = len(spec.models)
        kind = f"bag of {count} HTDemucs"
        if _supported(spec.models):
            listing[name] = (f"{kind}; Hugging Face {HF_NAMESPACE}/{hf_repo_name(name)}, "
                             "legacy .th fallback")
        elif include_unsupported:
            listing[name] = f"bag of {count}; not supported (demucs v3 architecture)"
    for sig in _LEGACY_FILES:
        if sig in _HTDEMUCS:
            listing[sig] = f"single HTDemucs; legacy {_LEGACY_FILES[sig]}"
        elif include_unsupported:
            listing[sig] = "single model; not supported (demucs v3 architecture)"
    return listing


def _unknown(name: str) -> UnknownModelError:
    known = list(list_models())
    bags = [n for n in known if n in _BAGS]
    sigs = [n for n in known if n not in _BAGS]
    return UnknownModelError(
        f"unknown model name {name!r}; known names: {', '.join(bags)} "
        f"(single-model signatures: {', '.join(sigs)}); "
        "or use hf://namespace/name, --repo DIR or --checkpoint FILE", known)


def _unsupported(name: str, sigs) -> UnsupportedModelError:
    others = sorted({s for s in sigs if s not in _HTDEMUCS})
    supported = ", ".join(n for n, spec in _BAGS.items() if _supported(spec.models))
    return UnsupportedModelError(
        f"{name}: {', '.join(others)} {'is a' if len(others) == 1 else 'are'} demucs v3 "
        f"model{'' if len(others) == 1 else 's'} (Demucs/HDemucs), not HTDemucs; numba-demucs "
        f"implements only HTDemucs ({supported})")


# -- verification ------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    """The id git (and so the Hugging Face ``ETag``) gives a regular, non-LFS file."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


_HEX = re.compile(r"[0-9a-f]+")
_HF_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _checksum_from_name(path: Path) -> str | None:
    """The sha256 prefix in ``SIG-CHECKSUM.th``, or None (demucs' naming convention)."""
    if path.suffix != ".th" or "-" not in path.stem:
        return None
    checksum = path.stem.rsplit("-", 1)[1]
    return checksum if _HEX.fullmatch(checksum) else None


def _check_prefix(path: Path, checksum: str) -> None:
    actual = _sha256_file(path)[:len(checksum)]
    if actual != checksum:
        raise ChecksumError(
            f"{path}: checksum mismatch: the file name promises a sha256 starting with "
            f"{checksum}, the content hashes to {actual}")


# -- download ----------------------------------------------------------------------------

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


def _download(url: str, dest: Path, verify: Callable, progress: Progress) -> dict:
    """Stream ``url`` to ``dest.part-XXXX``, call ``verify(tmp, sha256, size, hops)`` (raises on
    a bad file, returns what to record), then rename to ``dest``. Nothing is left behind on
    failure or interruption; ``dest`` itself is only ever replaced by a verified file."""
    if _offline():
        raise DownloadError(f"{dest.name}: not in the cache and NUMBA_DEMUCS_OFFLINE is set "
                            f"(would download {url})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part-{secrets.token_hex(4)}")
    recorder = _HopRecorder()
    opener = urllib.request.build_opener(recorder)
    request = urllib.request.Request(url, headers={
        "User-Agent": "numba-demucs", "Accept-Encoding": "identity"})
    try:
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
            with _reporter(progress, dest.name) as report, open(tmp, "xb") as out:
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
        record = verify(tmp, digest.hexdigest(), done, hops)
        os.replace(tmp, dest)
        return record
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _expected_from_headers(hops, hub: str) -> tuple[str, str | None, int | None, str | None]:
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


# -- the cache ---------------------------------------------------------------------------

class _NotCached(Exception):
    pass


@dataclasses.dataclass
class _Resolved:
    path: Path                      # the bag yaml, or the single model file
    members: list[Path] | None      # bag member files, in yaml order (None: single model)
    weights: list | None = None
    segment: float | None = None


class _Fetcher:
    """Cache lookups and downloads for one :func:`resolve` call; remembers corrupt files."""

    def __init__(self, root: Path, progress: Progress):
        self.root = Path(root)
        self.progress = progress
        self.corrupt: list[str] = []

    def _discard(self, path: Path, reason: str) -> None:
        logger.warning("%s: cached file is corrupt (%s); deleting it", path, reason)
        self.corrupt.append(f"{path} ({reason})")
        for victim in (path, _sidecar(path)):
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()

    # legacy .th: the file name carries the checksum
    def legacy(self, sig: str, network: bool) -> Path:
        path = self.root / "legacy" / _LEGACY_FILES[sig].rsplit("/", 1)[1]
        checksum = _checksum_from_name(path)
        if path.is_file():
            try:
                _check_prefix(path, checksum)
                return path
            except ChecksumError as error:
                self._discard(path, str(error).split(": ", 1)[1])
        if not network:
            raise _NotCached(path)
        url = _legacy_url(sig)

        def verify(tmp, sha256, size, hops):
            if not sha256.startswith(checksum):
                raise ChecksumError(
                    f"{url}: checksum mismatch: {path.name} must have a sha256 starting with "
                    f"{checksum}, the {size} bytes received hash to {sha256[:len(checksum)]}; "
                    "nothing was saved")
            return {}

        _download(url, path, verify, self.progress)
        return path

    # Hugging Face: verified against the hub's headers, then remembered in a sidecar
    def hf(self, repo_id: str, filename: str, network: bool) -> Path:
        path = self.root / "hf" / repo_id / filename
        if path.is_file():
            try:
                record = json.loads(_sidecar(path).read_text())
                expected_sha, expected_size = record["sha256"], int(record["size"])
            except (OSError, ValueError, KeyError, TypeError):
                self._discard(path, "no readable checksum sidecar")
            else:
                if path.stat().st_size != expected_size:
                    self._discard(path, f"{path.stat().st_size} bytes, expected {expected_size}")
                elif _sha256_file(path) != expected_sha:
                    self._discard(path, "sha256 differs from the one recorded at download")
                else:
                    return path
        if not network:
            raise _NotCached(path)
        url = _hf_url(repo_id, filename)
        hub = _endpoints()[0]

        def verify(tmp, sha256, size, hops):
            kind, value, announced_size, commit = _expected_from_headers(hops, hub)
            if announced_size is not None and announced_size != size:
                raise ChecksumError(f"{url}: received {size} bytes, the hub announced "
                                    f"{announced_size}; nothing was saved")
            if kind == "sha256" and sha256 != value:
                raise ChecksumError(f"{url}: checksum mismatch: the hub gives sha256 {value}, "
                                    f"the bytes received hash to {sha256}; nothing was saved")
            if kind == "git-sha1":
                actual = _git_blob_sha1(tmp)
                if actual != value:
                    raise ChecksumError(
                        f"{url}: checksum mismatch: the hub gives git blob id {value}, the bytes "
                        f"received hash to {actual}; nothing was saved")
            if kind == "none":
                logger.warning("%s: the server gave no checksum; %s is kept unverified "
                               "(its sha256 is recorded to detect later corruption)", url, filename)
            record = {"url": url, "sha256": sha256, "size": size, "verified_against": kind,
                      "expected": value, "commit": commit}
            _atomic_write(_sidecar(path), json.dumps(record, indent=1) + "\n")
            return record

        _download(url, path, verify, self.progress)
        return path


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.part-{secrets.token_hex(4)}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _parse_bag(path: Path) -> tuple[list[str], list | None, float | None]:
    import yaml

    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CheckpointError(f"{path}: not a valid bag yaml ({error})") from None
    if not isinstance(content, dict) or not isinstance(content.get("models"), list) \
            or not content["models"]:
        raise CheckpointError(f"{path}: a bag yaml needs a non-empty 'models' list")
    sigs = [str(sig) for sig in content["models"]]
    weights = content.get("weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(sigs)):
        raise CheckpointError(f"{path}: 'weights' must have one row per model ({len(sigs)})")
    return sigs, weights, content.get("segment")


def _bag_yaml_text(spec: _BagSpec) -> str:
    import yaml

    content = {"models": list(spec.models)}
    if spec.weights is not None:
        content["weights"] = spec.weights
    if spec.segment is not None:
        content["segment"] = spec.segment
    return yaml.safe_dump(content, default_flow_style=None, sort_keys=False)


def _resolve_hf(fetch: _Fetcher, namespace: str, name: str, network: bool) -> _Resolved:
    repo_id = f"{namespace}/{hf_repo_name(name)}"
    yaml_path = fetch.hf(repo_id, f"{name}.yaml", network)
    sigs, weights, segment = _parse_bag(yaml_path)
    for sig in sigs:
        if not _HF_PART.fullmatch(sig):
            raise CheckpointError(f"{yaml_path}: invalid model name {sig!r} in the bag")
    members = [fetch.hf(repo_id, f"{sig}.safetensors", network) for sig in sigs]
    return _Resolved(yaml_path, members, weights, segment)


def _resolve_legacy(fetch: _Fetcher, name: str, network: bool) -> _Resolved:
    if name in _LEGACY_FILES:
        return _Resolved(fetch.legacy(name, network), None)
    spec = _BAGS[name]
    members = [fetch.legacy(sig, network) for sig in spec.models]
    yaml_path = fetch.root / "legacy" / f"{name}.yaml"
    text = _bag_yaml_text(spec)
    if not yaml_path.is_file() or yaml_path.read_text() != text:
        _atomic_write(yaml_path, text)
    return _Resolved(yaml_path, members, spec.weights, spec.segment)


def _resolve_remote(name: str, root: Path, progress: Progress) -> _Resolved:
    fetch = _Fetcher(root, progress)
    hf_only = name.startswith("hf://") or "/" in name
    if hf_only:
        rest = name.removeprefix("hf://")
        namespace, _, bare = rest.rpartition("/")
        namespace = namespace or HF_NAMESPACE
        if not (_HF_PART.fullmatch(namespace) and _HF_PART.fullmatch(bare)):
            raise UnknownModelError(f"invalid Hugging Face model name {name!r} "
                                    "(expected hf://[namespace/]name)", list(list_models()))
        if bare in _BAGS and not _supported(_BAGS[bare].models):
            raise _unsupported(bare, _BAGS[bare].models)
        try:
            return _resolve_hf(fetch, namespace, bare, network=False)
        except _NotCached:
            pass
        try:
            return _resolve_hf(fetch, namespace, bare, network=True)
        except DownloadError as error:
            raise DownloadError(_with_corrupt_note(str(error), fetch)) from None
    if name in _BAGS:
        sigs = _BAGS[name].models
    elif name in _LEGACY_FILES:
        sigs = (name,)
    else:
        raise _unknown(name)
    if not _supported(sigs):
        raise _unsupported(name, sigs)
    is_bag = name in _BAGS
    # A warm cache (either source) is used without touching the network.
    attempts = ([lambda net: _resolve_hf(fetch, HF_NAMESPACE, name, net)] if is_bag else []) + \
        [lambda net: _resolve_legacy(fetch, name, net)]
    for attempt in attempts:
        try:
            return attempt(False)
        except _NotCached:
            pass
    failures = []
    for source, attempt in zip((["Hugging Face"] if is_bag else []) + ["legacy"], attempts):
        try:
            return attempt(True)
        except (DownloadError, ChecksumError) as error:
            failures.append((source, error))
            if source == "Hugging Face":
                logger.warning("%s: Hugging Face download failed (%s); trying the legacy files",
                               name, error)
    source, last = failures[-1]
    message = "; ".join(f"{src}: {err}" for src, err in failures)
    raise type(last)(_with_corrupt_note(f"{name}: could not obtain the model. {message}",
                                        fetch)) from None


def _with_corrupt_note(message: str, fetch: _Fetcher) -> str:
    if fetch.corrupt:
        message += (". The cached copy was corrupt and has been deleted: "
                    + "; ".join(fetch.corrupt) + " -- and the server could not provide it again")
    return message


# -- --repo DIR --------------------------------------------------------------------------

class _LocalRepo:
    """A demucs ``--repo`` folder: ``NAME.yaml`` bags, ``SIG[-CHECKSUM].th``, ``SIG.safetensors``."""

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise NumbaDemucsError(f"{self.root}: --repo must be an existing directory")
        self.models: dict[str, tuple[Path, str | None]] = {}
        self.bags: dict[str, Path] = {}
        th: dict[str, Path] = {}
        for file in sorted(self.root.iterdir()):
            if not file.is_file():
                continue
            if file.suffix == ".yaml":
                self.bags[file.stem] = file
            elif file.suffix == ".th":
                checksum = _checksum_from_name(file)
                sig = file.stem.rsplit("-", 1)[0] if checksum else file.stem
                if sig in th:
                    raise CheckpointError(
                        f"{self.root}: two files for model {sig} ({th[sig].name}, {file.name}); "
                        "delete all but one")
                th[sig] = file
                self.models.setdefault(sig, (file, checksum))
            elif file.suffix == ".safetensors":
                self.models[file.stem] = (file, None)  # preferred over a .th, as in load_model

    def model(self, sig: str, context: Path) -> Path:
        try:
            path, checksum = self.models[sig]
        except KeyError:
            raise CheckpointError(f"{context}: model {sig} not found in {self.root}") from None
        if checksum:
            _check_prefix(path, checksum)
        return path

    def resolve(self, name: str) -> _Resolved:
        if name in self.models:
            return _Resolved(self.model(name, self.root), None)
        if name in self.bags:
            path = self.bags[name]
            sigs, weights, segment = _parse_bag(path)
            return _Resolved(path, [self.model(sig, path) for sig in sigs], weights, segment)
        known = sorted(set(self.models) | set(self.bags))
        raise UnknownModelError(
            f"{name!r} is neither a bag (NAME.yaml) nor a model (SIG.th, SIG-CHECKSUM.th, "
            f"SIG.safetensors) in {self.root}; found: {', '.join(known) or 'nothing'}", known)


# -- public entry points -----------------------------------------------------------------

def _resolve(name, repo, cache_dir_, progress) -> _Resolved:
    name = str(name)
    if repo is not None:
        return _LocalRepo(repo).resolve(name)
    root = Path(cache_dir_) if cache_dir_ is not None else cache_dir()
    return _resolve_remote(name, root, progress)


def resolve(name: str, repo=None, cache_dir=None, progress: Progress = False) -> Path:
    """The local, verified file for ``name``: a bag yaml (its members beside it) or a single
    ``.th``/``.safetensors`` model, downloading whatever is missing from the cache."""
    return _resolve(name, repo, cache_dir, progress).path


def get_model(name: str, repo=None, *, cache_dir=None, progress: Progress = False,
              dtype=np.float32):
    """Resolve ``name`` (see :func:`resolve`) and load it: a ``BagOfModels`` for a bag, an
    ``HTDemucs`` for a single signature. ``progress`` is ``True`` for a rich progress bar on
    stderr, or a callable ``(bytes_done, total_or_None)``."""
    from .models.bag import BagOfModels
    from .models.classes import from_package

    resolved = _resolve(name, repo, cache_dir, progress)
    if resolved.members is None:
        return from_package(read_package(resolved.path), dtype)
    models = [from_package(read_package(member), dtype) for member in resolved.members]
    return BagOfModels(models, resolved.weights, resolved.segment, str(resolved.path))


def load_checkpoint(path, dtype=np.float32):
    """``--checkpoint FILE``: one ``.th``/``.safetensors`` model or a bag ``.yaml``; a
    ``SIG-CHECKSUM.th`` name is checked against its content first, as demucs does."""
    from . import load_model

    path = Path(path)
    checksum = _checksum_from_name(path)
    if checksum and path.is_file():
        _check_prefix(path, checksum)
    return load_model(path, dtype)
