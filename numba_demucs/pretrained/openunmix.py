"""Open-Unmix's pretrained models: the catalog and the ``TARGET-HASH8.pth`` files.

openunmix publishes each model as four ``torch.save`` state dicts, one per target, named
``TARGET-HASH8.pth`` where HASH8 is the first 8 hex digits of the file's sha256 (torch.hub
checks it; so do we). The model name fixes the architecture, as openunmix's ``umxl()``,
``umxhq()`` and ``umx()`` do; the files' shapes must agree with it.

``--repo DIR -n umxl`` reads a folder holding one ``TARGET-HASH8.pth`` per target (any hash
that matches the content). Without a repo the official files are looked up in the cache
(``cache_dir()/openunmix/NAME/``) and downloaded from Zenodo when missing.

As the rest of this package, this only finds files: :func:`locate` gives an
:class:`OpenUnmixFiles`, and ``numba_demucs.loading`` turns it into a model through the
registry's ``OpenUnmix`` family.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .._files import hash_file
from ..errors import CheckpointError, ChecksumError, NumbaDemucsError, UnknownModelError
from .cache import cache_dir as default_cache_dir
from .download import download

TARGETS = ("vocals", "drums", "bass", "other")
ZENODO = "https://zenodo.org/records"


@dataclasses.dataclass(frozen=True)
class Entry:
    record: str
    files: dict          # target -> official file name
    hidden_size: int
    summary: str


CATALOG = {
    "umxl": Entry("5069601", {"bass": "bass-2ca1ce51.pth", "drums": "drums-69e0ebd4.pth",
                              "other": "other-c8c5b3e6.pth", "vocals": "vocals-bccbd9aa.pth"},
                  1024, "Open-Unmix UMX-L (private ~400 h dataset), hidden 1024"),
    "umxhq": Entry("3370489", {"bass": "bass-8d85a5bd.pth", "drums": "drums-9619578f.pth",
                               "other": "other-b52fbbf7.pth", "vocals": "vocals-b62c91ce.pth"},
                   512, "Open-Unmix UMX-HQ (MUSDB18-HQ), hidden 512"),
    "umx": Entry("3370486", {"bass": "bass-646024d3.pth", "drums": "drums-5a48008b.pth",
                             "other": "other-f8e132cc.pth", "vocals": "vocals-c8df74a5.pth"},
                 512, "Open-Unmix UMX (MUSDB18), hidden 512"),
}

_FILE_NAME = re.compile(r"(?P<target>[a-z]+)-(?P<hash>[0-9a-f]{8})\.pth")


def is_openunmix(name) -> bool:
    return str(name) in CATALOG


def _check_hash(path: Path, prefix: str) -> None:
    actual = hash_file(path)[:len(prefix)]
    if actual != prefix:
        raise ChecksumError(f"{path}: checksum mismatch: the file name promises a sha256 "
                            f"starting with {prefix}, the content hashes to {actual}")


def files_in_repo(name: str, repo) -> dict[str, Path]:
    """``{target: path}`` from a folder with one ``TARGET-HASH8.pth`` per target, checked."""
    root = Path(repo)
    if not root.is_dir():
        raise NumbaDemucsError(f"{root}: --repo must be an existing directory")
    found: dict[str, list[Path]] = {}
    for file in sorted(root.iterdir()):
        match = _FILE_NAME.fullmatch(file.name)
        if match and file.is_file() and match["target"] in TARGETS:
            found.setdefault(match["target"], []).append(file)
    missing = [target for target in TARGETS if target not in found]
    if missing:
        raise UnknownModelError(
            f"{name}: {root} has no {', '.join(f'{t}-HASH8.pth' for t in missing)} (an Open-Unmix "
            "model is one TARGET-HASH8.pth file per target: vocals, drums, bass, other)",
            sorted(CATALOG))
    files = {}
    for target in TARGETS:
        if len(found[target]) > 1:
            raise CheckpointError(f"{root}: several files for target {target} "
                                  f"({', '.join(p.name for p in found[target])}); keep one")
        path = found[target][0]
        _check_hash(path, _FILE_NAME.fullmatch(path.name)["hash"])
        files[target] = path
    return files


def files_in_cache(name: str, cache_dir=None, progress=False) -> dict[str, Path]:
    """The official files of ``name``, from the cache or downloaded (hash prefix verified)."""
    entry = CATALOG[name]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    files = {}
    for target in TARGETS:
        filename = entry.files[target]
        path = root / "openunmix" / name / filename
        prefix = _FILE_NAME.fullmatch(filename)["hash"]
        if path.is_file():
            try:
                _check_hash(path, prefix)
                files[target] = path
                continue
            except ChecksumError:
                path.unlink()
        url = f"{ZENODO}/{entry.record}/files/{filename}"

        def verify(tmp, sha256, size, hops, url=url, prefix=prefix, filename=filename):
            if not sha256.startswith(prefix):
                raise ChecksumError(f"{url}: checksum mismatch: {filename} must have a sha256 "
                                    f"starting with {prefix}, the {size} bytes received hash to "
                                    f"{sha256[:8]}; nothing was saved")
            return {}

        download(url, path, verify, progress)
        files[target] = path
    return files


@dataclasses.dataclass(frozen=True)
class OpenUnmixFiles:
    """An Open-Unmix model found on disk: ``{target: TARGET-HASH8.pth}`` (hashes checked).

    ``hidden_size`` is the one the name fixes (``umxl``: 1024), or None for a bare folder
    (``--checkpoint DIR``, the debug tools), whose files then give it (``fc1.weight``).
    """

    name: str
    files: dict
    hidden_size: int | None
    folder: Path


def locate(name: str, repo=None, cache_dir=None, progress=False) -> OpenUnmixFiles:
    """The checked files of ``umxl``/``umxhq``/``umx``, from ``repo`` or the cache (downloaded
    when missing)."""
    if name not in CATALOG:
        raise UnknownModelError(f"{name!r} is not an Open-Unmix model; known: "
                                f"{', '.join(CATALOG)}", sorted(CATALOG))
    files = files_in_repo(name, repo) if repo is not None else files_in_cache(name, cache_dir,
                                                                              progress)
    return OpenUnmixFiles(name, files, CATALOG[name].hidden_size,
                          Path(next(iter(files.values()))).parent)


def locate_folder(folder) -> OpenUnmixFiles:
    """A folder of ``TARGET-HASH8.pth`` files given as a path: any hidden size."""
    folder = Path(folder)
    return OpenUnmixFiles(folder.name, files_in_repo(folder.name, folder), None, folder)
