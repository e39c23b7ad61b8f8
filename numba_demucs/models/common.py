"""What every model of the Demucs family sets up the same way."""
from __future__ import annotations

import numpy as np

from ..layers.base import StateReader


def bind_model(model, config, state: dict, dtype, origin: str) -> StateReader:
    """Refuse what ``config`` asks that we do not implement, give ``model`` the attributes
    demucs' models expose (``sources``, ``samplerate``, ``audio_channels``, ``segment``) plus
    ``config``/``dtype``/``origin``, and return the reader of its weights."""
    config.check_supported(origin)
    model.config = config
    model.sources = list(config.sources)
    model.samplerate = config.samplerate
    model.audio_channels = config.audio_channels
    model.segment = config.segment
    model.dtype = np.dtype(dtype)
    model.origin = origin
    return StateReader(state, dtype, origin)
