"""A bag of models: per-model, per-source weights, as demucs' ``BagOfModels``."""
from __future__ import annotations

import numpy as np

from ..errors import NumbaDemucsError


class BagOfModels:
    """Models with identical sources, averaged per source with ``weights[model][source]``."""

    def __init__(self, models, weights=None, segment=None, origin="bag"):
        if not models:
            raise NumbaDemucsError(f"{origin}: a bag needs at least one model")
        first = models[0]
        for other in models:
            if (other.sources, other.samplerate, other.audio_channels) != (
                    first.sources, first.samplerate, first.audio_channels):
                raise NumbaDemucsError(
                    f"{origin}: bag members disagree on sources, sample rate or channels")
            # demucs sets the bag's segment on every member except a transformer model
            # (one whose segment fixes its input length), which it only lets shorten.
            fixes_length = getattr(other, "segment_fixes_input_length", True)
            if segment is not None and (not fixes_length or segment <= other.segment):
                other.segment = segment
        self.models = list(models)
        self.sources = list(first.sources)
        self.samplerate = first.samplerate
        self.audio_channels = first.audio_channels
        if weights is None:
            weights = [[1.0] * len(self.sources) for _ in models]
        if len(weights) != len(models) or any(len(row) != len(self.sources) for row in weights):
            raise NumbaDemucsError(
                f"{origin}: weights must be {len(models)} rows of {len(self.sources)} values")
        self.weights = [[float(w) for w in row] for row in weights]
        self.origin = origin

    @property
    def segment(self):
        return min(model.segment for model in self.models)

    @property
    def dtype(self):
        return self.models[0].dtype

    def members_for(self, sources=None):
        """Indices of the models whose weights are not all zero on ``sources`` (all by default)."""
        wanted = range(len(self.sources)) if sources is None else [
            self.sources.index(name) for name in sources]
        return [i for i, row in enumerate(self.weights) if any(row[k] != 0 for k in wanted)]

    def weight_array(self, index):
        return np.asarray(self.weights[index])
