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

This package only finds files; ``numba_demucs.loading.load_model`` turns them into models.

  catalog.py    the names demucs knows (bags, legacy files) and which we implement
  download.py   urllib downloads, endpoints, what the hub's headers promise
  cache.py      the cache folder, verification of cached files, fetching missing ones
  resolve.py    names (and --repo folders) -> a model file or a bag with its member files
  openunmix.py  Open-Unmix's umxl / umxhq / umx: one TARGET-HASH8.pth per target (Zenodo)
"""
from __future__ import annotations

import numpy as np

from .cache import cache_dir, check_name_checksum, checksum_from_name
from .catalog import DEFAULT_MODEL, HF_NAMESPACE, hf_repo_name
from .download import HF_ENDPOINT, LEGACY_ROOT, Progress
from .resolve import list_models, locate, resolve

__all__ = ["DEFAULT_MODEL", "HF_NAMESPACE", "HF_ENDPOINT", "LEGACY_ROOT", "Progress",
           "cache_dir", "check_name_checksum", "checksum_from_name", "hf_repo_name",
           "list_models", "locate", "resolve", "get_model", "load_checkpoint"]


def get_model(name: str, repo=None, *, cache_dir=None, progress: Progress = False,
              dtype=np.float32):
    """Kept for compatibility: ``numba_demucs.loading.load_named`` (``load_model`` for a name)."""
    from ..loading import load_named

    return load_named(str(name), repo=repo, dtype=dtype, cache_dir=cache_dir, progress=progress)


def load_checkpoint(path, dtype=np.float32):
    """Kept for compatibility: ``numba_demucs.loading.load_file`` (one ``.th``/``.safetensors``
    file or a bag ``.yaml``; a ``SIG-CHECKSUM.th`` name is checked against its content)."""
    from ..loading import load_file

    return load_file(path, dtype)
