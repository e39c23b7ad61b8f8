"""Checkpoint model classes -> our model classes: the one place a model family registers.

A checkpoint names its model class (``demucs.htdemucs.HTDemucs`` in a ``.th`` pickle or a
``.safetensors`` header) and gives the constructor's ``args``/``kwargs`` and a state dict. A
:class:`ModelFamily` says which of our classes computes that model, how its arguments bind
(as the checkpoint's own constructor would bind them) and which of them we refuse. The
checkpoint readers accept exactly the registered classes, and ``loading`` builds a model as
``family.model(family.read_config(args, kwargs, origin), state, dtype, origin)``.

A new model class registers at the end of this file, next to HTDemucs, HDemucs and Demucs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .errors import UnsupportedModelError
from .models.config import DemucsConfig, HDemucsConfig, HTDemucsConfig
from .models.demucs import Demucs
from .models.hdemucs import HDemucs
from .models.htdemucs import HTDemucs
from .models.openunmix import OpenUnmixConfig, OpenUnmixSeparator
from .quantized import demucs_layout, hdemucs_layout


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """One checkpoint class and what we compute it with.

    ``class_name``: the class as the checkpoint pickles it (``HTDemucs``); ``modules``: the
    modules a checkpoint may name it under (``demucs.htdemucs``); ``model``: our class,
    called as ``model(config, state, dtype, origin)``; ``read_config``: ``(args, kwargs,
    origin) -> config``, binding the arguments as the original constructor does and raising
    :class:`UnsupportedModelError` that names every argument we do not implement. A family
    with no ``modules`` is never named by a checkpoint file (no ``.th`` may pickle it); only
    ``loading`` builds it (Open-Unmix: its files are bare state dicts, one per target).
    """

    class_name: str
    model: type
    read_config: Callable[[tuple, dict, str], Any]
    modules: tuple[str, ...] = ()
    #: run-time options a user may add to the checkpoint's arguments (Open-Unmix's Wiener
    #: filter settings); any other family refuses them
    options: tuple[str, ...] = ()
    # ``config -> [(name, shape)]``: the parameters in PyTorch ``named_modules()`` order,
    # needed to read a DiffQ-quantized state (which holds no names); None: not readable.
    layout: Callable[[Any], list] | None = None

    @property
    def qualified_names(self) -> tuple[str, ...]:
        return tuple(f"{module}.{self.class_name}" for module in self.modules)


_FAMILIES: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    """Add (or replace) the family for ``family.class_name``."""
    _FAMILIES[family.class_name] = family
    return family


def unregister(class_name: str) -> None:
    _FAMILIES.pop(class_name, None)


def families() -> list[ModelFamily]:
    return list(_FAMILIES.values())


def qualified_names() -> frozenset[str]:
    """Every dotted class name a checkpoint may give for a registered family."""
    return frozenset(name for family in _FAMILIES.values() for name in family.qualified_names)


def lookup(class_name: str, origin) -> ModelFamily:
    """The family of ``class_name`` (``HTDemucs`` or a registered dotted name such as
    ``demucs.htdemucs.HTDemucs``); ``origin`` names the file in the error for any other."""
    short = class_name.rsplit(".", 1)[-1]
    family = _FAMILIES.get(short)
    if family is not None and (class_name == short or class_name in family.qualified_names):
        return family
    implemented = ", ".join(name for f in _FAMILIES.values() for name in
                            (f.qualified_names or (f.class_name,)))
    raise UnsupportedModelError(
        f"{origin}: model class {class_name} is not supported (implemented: {implemented})")


# -- the families we implement (a new model class registers here) -------------------------

register(ModelFamily("HTDemucs", HTDemucs, HTDemucsConfig.from_arguments, ("demucs.htdemucs",)))
register(ModelFamily("HDemucs", HDemucs, HDemucsConfig.from_arguments, ("demucs.hdemucs",),
                     layout=hdemucs_layout))
register(ModelFamily("Demucs", Demucs, DemucsConfig.from_arguments, ("demucs.demucs",),
                     layout=demucs_layout))

# Open-Unmix (openunmix 1.3.0's Separator around one OpenUnmix per target): its files are
# bare per-target state dicts that name no class, so no checkpoint may name it (no
# modules); loading builds its package from the TARGET-HASH8.pth files that
# pretrained.openunmix finds, and Separator's Wiener settings are its run-time options.
register(ModelFamily("OpenUnmix", OpenUnmixSeparator, OpenUnmixConfig.from_arguments,
                     options=OpenUnmixConfig.OPTIONS))
