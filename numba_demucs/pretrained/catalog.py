"""The names demucs 4.1.0 knows: its bags, its legacy single-model files, which we implement.

The tables are demucs' ``remote/files.txt`` and ``remote/*.yaml`` (a test compares them);
nothing here touches the network or the disk.
"""
from __future__ import annotations

import dataclasses

from ..errors import UnknownModelError, UnsupportedModelError

DEFAULT_MODEL = "htdemucs"
HF_NAMESPACE = "adefossez"

# The legacy files demucs 4.1.0 lists in remote/files.txt: signature -> path under the legacy
# root. The part of the file name after the last "-" is the start of the file's sha256.
LEGACY_FILES = {
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
class BagSpec:
    models: tuple
    weights: list | None = None
    segment: float | None = None


# The bags demucs 4.1.0 ships in remote/*.yaml (the same content as the Hugging Face yamls).
BAGS = {
    "htdemucs": BagSpec(("955717e8",)),
    "htdemucs_ft": BagSpec(("f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"),
                           [[1. if i == j else 0. for j in range(4)] for i in range(4)]),
    "htdemucs_6s": BagSpec(("5c90dfd2",)),
    "hdemucs_mmi": BagSpec(("75fc33f5",), segment=44),
    "mdx": BagSpec(("0d19c1c6", "7ecf8ec1", "c511e2ab", "7d865c68"), _MDX_WEIGHTS, 44),
    "mdx_extra": BagSpec(("e51eebcc", "a1d90b5c", "5d2d6c55", "cfa93e08"), segment=44),
    "mdx_q": BagSpec(("6b9c2ca1", "b72baf4e", "42e558d4", "305bc58f"), _MDX_WEIGHTS, 44),
    "mdx_extra_q": BagSpec(("83fc094f", "464b36d7", "14fc6a69", "7fd6ef75"), segment=44),
    "repro_mdx_a": BagSpec(("9a6b4851", "1ef250f1", "fa0cb7f9", "902315c2"), segment=44),
    "repro_mdx_a_hybrid_only": BagSpec(("fa0cb7f9", "902315c2", "fa0cb7f9", "902315c2"),
                                       segment=44),
    "repro_mdx_a_time_only": BagSpec(("9a6b4851", "9a6b4851", "1ef250f1", "1ef250f1"),
                                     segment=44),
}

# The model class of every signature in the lists (the class its checkpoint pickles; from
# demucs' training grids, docs/training.md and the published file sizes, see
# docs/pretrained.md). The class is read from the file itself when it is loaded; this table
# only lets a name be refused before anything is downloaded.
CLASSES = {
    **dict.fromkeys(("955717e8", "f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d", "5c90dfd2"),
                    "HTDemucs"),
    **dict.fromkeys(("75fc33f5", "c511e2ab", "7d865c68", "e51eebcc", "a1d90b5c", "5d2d6c55",
                     "cfa93e08", "fa0cb7f9", "902315c2"), "HDemucs"),
    **dict.fromkeys(("0d19c1c6", "7ecf8ec1", "9a6b4851", "1ef250f1"), "Demucs"),
    # DiffQ twins: mdx_q's i-th member retrains mdx's i-th architecture (demucs'
    # grids/mdx.py, same weight matrix), mdx_extra_q's are mdx_extra's HDemucs (inferred;
    # the file's own klass decides when it is loaded).
    **dict(zip(("6b9c2ca1", "b72baf4e", "42e558d4", "305bc58f"),
               ("Demucs", "Demucs", "HDemucs", "HDemucs"))),
    **dict.fromkeys(("83fc094f", "464b36d7", "14fc6a69", "7fd6ef75"), "HDemucs"),
}
# The DiffQ-quantized members of mdx_q and mdx_extra_q: their state is diffq's packed integer
# levels, dequantized by numba_demucs.quantized when they are loaded.
DIFFQ = frozenset({"6b9c2ca1", "b72baf4e", "42e558d4", "305bc58f",
                   "83fc094f", "464b36d7", "14fc6a69", "7fd6ef75"})
# Signatures whose architecture (and storage) we implement.
IMPLEMENTED = frozenset(CLASSES)


def hf_repo_name(name: str) -> str:
    """The Hugging Face repository demucs 4.1 keeps a bag in: ``htdemucs`` -> ``HTDemucs``,
    ``htdemucs_ft`` -> ``HTDemucs-ft``, any other ``name`` -> ``Demucs-name``."""
    if name == "htdemucs":
        return "HTDemucs"
    if name.startswith("htdemucs_"):
        return "HTDemucs-" + name[len("htdemucs_"):]
    return "Demucs-" + name


def supported(sigs) -> bool:
    return all(sig in IMPLEMENTED for sig in sigs)


def _composition(sigs) -> str:
    """``2 Demucs + 2 HDemucs`` for a bag's members, in the order of their first member."""
    counts: dict[str, int] = {}
    for sig in sigs:
        kind = CLASSES.get(sig, "unknown")
        counts[kind] = counts.get(kind, 0) + 1
    text = " + ".join(f"{count} {kind}" for kind, count in counts.items())
    return text + (" (DiffQ-quantized)" if all(sig in DIFFQ for sig in sigs) else "")


def known_names(include_unsupported: bool = False) -> dict[str, str]:
    """Name -> one-line description of the demucs 4.1 bags and single-model signatures whose
    architecture we implement (``include_unsupported=True`` adds the others, marked as such)."""
    listing = {}
    for name, spec in BAGS.items():
        count = len(spec.models)
        if supported(spec.models):
            kinds = _composition(spec.models)
            listing[name] = (f"bag of {kinds} [{' '.join(spec.models)}]; Hugging Face "
                             f"{HF_NAMESPACE}/{hf_repo_name(name)}, legacy .th fallback")
        elif include_unsupported:
            listing[name] = f"bag of {count} models we do not implement; not supported"
    for sig in LEGACY_FILES:
        if sig in IMPLEMENTED:
            quantized = ", DiffQ-quantized" if sig in DIFFQ else ""
            listing[sig] = f"single {CLASSES[sig]}{quantized}; legacy {LEGACY_FILES[sig]}"
        elif include_unsupported:
            listing[sig] = "single model we do not implement; not supported"
    return listing


def unknown(name: str) -> UnknownModelError:
    known = list(known_names())
    bags = [n for n in known if n in BAGS]
    sigs = [n for n in known if n not in BAGS]
    return UnknownModelError(
        f"unknown model name {name!r}; known names: {', '.join(bags)} "
        f"(single-model signatures: {', '.join(sigs)}); "
        "or use hf://namespace/name, --repo DIR or --checkpoint FILE", known)


def unsupported(name: str, sigs) -> UnsupportedModelError:
    others = sorted({s for s in sigs if s not in IMPLEMENTED})
    names = ", ".join(n for n, spec in BAGS.items() if supported(spec.models))
    plural = len(others) != 1
    return UnsupportedModelError(
        f"{name}: {', '.join(others)} {'are models' if plural else 'is a model'} whose "
        f"architecture we do not implement; implemented names: {names}")
