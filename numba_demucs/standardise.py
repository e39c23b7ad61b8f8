"""demucs' standardisation of a mix before separation, and its inverse on the stems.

demucs 4.1's ``Separator.separate_tensor`` divides the mix by the standard deviation of
its mono downmix after subtracting that downmix's mean, and multiplies the stems back.
The moments are taken in float64 (one pass per block, merged exactly as Chan et al.'s
parallel variance), so a whole array and the same samples read block by block from a file
give the same float32 mean and deviation.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Standardisation:
    mean: np.float32
    std: np.float32  # unbiased deviation of the downmix, plus demucs' 1e-8
    silent: bool  # every sample is zero: the stems are silence, the model is not run

    @classmethod
    def of_blocks(cls, blocks: Iterable[np.ndarray]) -> "Standardisation":
        """From the mix's ``(channels, samples)`` blocks, in track order."""
        count, mean, m2, nonzero = 0, 0.0, 0.0, False
        for block in blocks:
            nonzero = nonzero or bool(block.any())
            downmix = block.mean(axis=0, dtype=np.float64)
            n, block_mean = downmix.size, downmix.mean()
            block_m2 = ((downmix - block_mean) ** 2).sum()
            if count == 0:
                mean, m2 = block_mean, block_m2
            else:
                delta = block_mean - mean
                total = count + n
                mean += delta * n / total
                m2 += block_m2 + delta * delta * count * n / total
            count += n
        spread = math.sqrt(m2 / (count - 1)) if count > 1 else 0.0
        return cls(np.float32(mean), np.float32(spread) + np.float32(1e-8), not nonzero)

    def apply(self, mix: np.ndarray) -> np.ndarray:
        """Standardise ``mix`` in place (float32: a full-length copy is hundreds of MB)."""
        mix -= self.mean
        mix /= self.std
        return mix

    def undo(self, stems: np.ndarray) -> np.ndarray:
        """Undo it on ``stems`` in place."""
        stems *= self.std
        stems += self.mean
        return stems
