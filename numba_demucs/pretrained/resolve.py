"""Model names -> verified local files: a single model's file, or a bag with its members.

``--repo DIR`` folders are read as demucs reads them; every other name goes through the
catalog to the cache (and, when missing, to Hugging Face first, the legacy files second).
"""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from ..checkpoint import BagDescription, parse_bag, read_bag
from ..errors import (CheckpointError, ChecksumError, DownloadError, NumbaDemucsError,
                      UnknownModelError)
from .._files import atomic_write
from . import cache, catalog, openunmix
from .cache import Fetcher, NotCached, check_prefix, checksum_from_name
from .download import Progress

logger = logging.getLogger("numba_demucs.pretrained")

_HF_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# -- --repo DIR --------------------------------------------------------------------------

class LocalRepo:
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
                checksum = checksum_from_name(file)
                sig = file.stem.rsplit("-", 1)[0] if checksum else file.stem
                if sig in th:
                    raise CheckpointError(
                        f"{self.root}: two files for model {sig} ({th[sig].name}, {file.name}); "
                        "delete all but one")
                th[sig] = file
                self.models.setdefault(sig, (file, checksum))
            elif file.suffix == ".safetensors":
                self.models[file.stem] = (file, None)  # preferred over a .th, as in bag members

    def model(self, sig: str, context: Path) -> Path:
        try:
            path, checksum = self.models[sig]
        except KeyError:
            raise CheckpointError(f"{context}: model {sig} not found in {self.root}") from None
        if checksum:
            check_prefix(path, checksum)
        return path

    def locate(self, name: str):
        if name in self.models:
            return self.model(name, self.root)
        if name in self.bags:
            return read_bag(self.bags[name], find=self.model)
        known = sorted(set(self.models) | set(self.bags))
        raise UnknownModelError(
            f"{name!r} is neither a bag (NAME.yaml) nor a model (SIG.th, SIG-CHECKSUM.th, "
            f"SIG.safetensors) in {self.root}; found: {', '.join(known) or 'nothing'}", known)


# -- names from the catalog, through the cache -------------------------------------------

def _bag_yaml_text(spec: catalog.BagSpec) -> str:
    import yaml

    content = {"models": list(spec.models)}
    if spec.weights is not None:
        content["weights"] = spec.weights
    if spec.segment is not None:
        content["segment"] = spec.segment
    return yaml.safe_dump(content, default_flow_style=None, sort_keys=False)


def _locate_hf(fetch: Fetcher, namespace: str, name: str, network: bool) -> BagDescription:
    repo_id = f"{namespace}/{catalog.hf_repo_name(name)}"
    yaml_path = fetch.hf(repo_id, f"{name}.yaml", network)

    bag = parse_bag(yaml_path)
    for sig in bag.signatures:
        if not _HF_PART.fullmatch(sig):
            raise CheckpointError(f"{yaml_path}: invalid model name {sig!r} in the bag")
    members = [fetch.hf(repo_id, f"{sig}.safetensors", network) for sig in bag.signatures]
    return dataclasses.replace(bag, members=members)


def _locate_legacy(fetch: Fetcher, name: str, network: bool):
    if name in catalog.LEGACY_FILES:
        return fetch.legacy(name, network)
    spec = catalog.BAGS[name]
    members = [fetch.legacy(sig, network) for sig in spec.models]
    yaml_path = fetch.root / "legacy" / f"{name}.yaml"
    text = _bag_yaml_text(spec)
    if not yaml_path.is_file() or yaml_path.read_text() != text:
        atomic_write(yaml_path, text)
    return BagDescription(list(spec.models), spec.weights, spec.segment, yaml_path, members)


def _locate_remote(name: str, root: Path, progress: Progress):
    fetch = Fetcher(root, progress)
    if name.startswith("hf://") or "/" in name:
        rest = name.removeprefix("hf://")
        namespace, _, bare = rest.rpartition("/")
        namespace = namespace or catalog.HF_NAMESPACE
        if not (_HF_PART.fullmatch(namespace) and _HF_PART.fullmatch(bare)):
            raise UnknownModelError(f"invalid Hugging Face model name {name!r} "
                                    "(expected hf://[namespace/]name)", list(catalog.known_names()))
        if bare in catalog.BAGS and not catalog.supported(catalog.BAGS[bare].models):
            raise catalog.unsupported(bare, catalog.BAGS[bare].models)
        try:
            return _locate_hf(fetch, namespace, bare, network=False)
        except NotCached:
            pass
        try:
            return _locate_hf(fetch, namespace, bare, network=True)
        except DownloadError as error:
            raise DownloadError(fetch.with_corrupt_note(str(error))) from None
    if name in catalog.BAGS:
        sigs = catalog.BAGS[name].models
    elif name in catalog.LEGACY_FILES:
        sigs = (name,)
    else:
        raise catalog.unknown(name)
    if not catalog.supported(sigs):
        raise catalog.unsupported(name, sigs)
    is_bag = name in catalog.BAGS
    # A warm cache (either source) is used without touching the network.
    attempts = ([lambda net: _locate_hf(fetch, catalog.HF_NAMESPACE, name, net)] if is_bag
                else []) + [lambda net: _locate_legacy(fetch, name, net)]
    for attempt in attempts:
        try:
            return attempt(False)
        except NotCached:
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
    _, last = failures[-1]
    message = "; ".join(f"{src}: {err}" for src, err in failures)
    raise type(last)(fetch.with_corrupt_note(f"{name}: could not obtain the model. {message}")) \
        from None


# -- entry points ------------------------------------------------------------------------

def locate(name: str, repo=None, cache_dir=None, progress: Progress = False):
    """The verified local files for ``name``: the single model's ``Path``, or, for a bag, a
    ``BagDescription`` whose ``members`` are the member files (in yaml order), downloading
    whatever is missing from the cache. ``repo``: a demucs ``--repo`` folder (no network).
    Open-Unmix's names (``umxl``, ``umxhq``, ``umx``) give an ``openunmix.OpenUnmixFiles``."""
    name = str(name)
    if name in openunmix.CATALOG:
        return openunmix.locate(name, repo, cache_dir, progress)
    if repo is not None:
        return LocalRepo(repo).locate(name)
    root = Path(cache_dir) if cache_dir is not None else cache.cache_dir()
    return _locate_remote(name, root, progress)


def resolve(name: str, repo=None, cache_dir=None, progress: Progress = False) -> Path:
    """The local, verified file for ``name``: a bag yaml (its members beside it) or a single
    ``.th``/``.safetensors`` model, downloading whatever is missing from the cache."""
    found = locate(name, repo, cache_dir, progress)
    if isinstance(found, openunmix.OpenUnmixFiles):
        return found.folder
    return found.path if isinstance(found, BagDescription) else found


def list_models(repo=None, include_unsupported: bool = False) -> dict[str, str]:
    """Name -> one-line description of every name :func:`resolve` accepts.

    Without ``repo``: the demucs 4.1 bag names and single-model signatures whose architecture
    we implement (``include_unsupported=True`` adds the others, marked as such). With
    ``repo``: the bags and models found in that folder.
    """
    if repo is None:
        return {**catalog.known_names(include_unsupported),
                **{name: entry.summary for name, entry in openunmix.CATALOG.items()}}
    local = LocalRepo(repo)
    listing = {sig: f"single model, local {path.name}"
               for sig, (path, _checksum) in sorted(local.models.items())}
    for name, path in sorted(local.bags.items()):
        listing.setdefault(name, f"bag, local {path.name}")
    return listing
