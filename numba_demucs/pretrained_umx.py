"""Open-Unmix's pretrained models: the catalog, the ``TARGET-HASH8.pth`` files, loading.

openunmix publishes each model as four ``torch.save`` state dicts, one per target, named
``TARGET-HASH8.pth`` where HASH8 is the first 8 hex digits of the file's sha256 (torch.hub
checks it; so do we). The model name fixes the architecture, as openunmix's ``umxl()``,
``umxhq()`` and ``umx()`` do; the files' shapes must agree with it.

``--repo DIR -n umxl`` reads a folder holding one ``TARGET-HASH8.pth`` per target (any hash
that matches the content). Without a repo the official files are looked up in the cache
(``cache_dir()/openunmix/NAME/``) and downloaded from Zenodo when missing.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ._files import hash_file
from .pretrained import cache_dir as default_cache_dir
from .pretrained.download import download
from .checkpoint import read_state_dict
from .errors import CheckpointError, ChecksumError, NumbaDemucsError, UnknownModelError
from .models.openunmix import OpenUnmixConfig, OpenUnmixSeparator

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


def load(name: str, repo=None, *, dtype=np.float32, cache_dir=None, progress=False,
         **options) -> OpenUnmixSeparator:
    """``OpenUnmixSeparator`` for ``umxl``/``umxhq``/``umx`` from ``repo`` or the cache.

    ``options`` are the Separator's (``niter``, ``softmask``, ``residual``,
    ``wiener_win_len``); the defaults are openunmix's ``umxl()`` ones (niter=1, 300 frames).
    """
    if name not in CATALOG:
        raise UnknownModelError(f"{name!r} is not an Open-Unmix model; known: "
                                f"{', '.join(CATALOG)}", sorted(CATALOG))
    files = files_in_repo(name, repo) if repo is not None else files_in_cache(name, cache_dir,
                                                                              progress)
    return load_files(files, CATALOG[name].hidden_size, dtype=dtype, label=name, **options)


def load_files(files: dict, hidden_size: int, *, dtype=np.float32, label="openunmix",
               **options) -> OpenUnmixSeparator:
    states = {target: read_state_dict(path) for target, path in files.items()}
    for target, state in states.items():
        weight = state.get("fc1.weight")
        if weight is not None and weight.shape[0] != hidden_size:
            raise CheckpointError(
                f"{files[target]}: fc1.weight has {weight.shape[0]} hidden units, but {label} "
                f"has {hidden_size}; the model name fixes the architecture")
    config = OpenUnmixConfig(targets=tuple(files), hidden_size=hidden_size, **options)
    origin = str(Path(next(iter(files.values()))).parent)
    model = OpenUnmixSeparator(config, states, dtype, origin,
                               origins={target: str(path) for target, path in files.items()})
    model.name = label
    return model
