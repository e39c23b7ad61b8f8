# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Separating a track
#
# Load a model, separate a mix into its stems, look at them and listen to them.
#
# Out of the box this runs offline: the model is the official `htdemucs` architecture with
# **seeded random weights** (built with PyTorch demucs and saved as demucs saves its `.th`
# files), and the mix is a synthesised test signal. Random weights run exactly the computation
# the published model runs, but their "stems" are not a separation: they show the pipeline,
# not its quality. Set `USE_PRETRAINED` or `CHECKPOINT`, and `INPUT_PATH`, to separate real
# music with real weights.

# %% tags=["parameters"]
USE_PRETRAINED = False  # True: the published htdemucs weights (downloaded once, then cached)
CHECKPOINT = None       # or your own .th / .safetensors file, or a bag .yaml
INPUT_PATH = None       # any audio file libsndfile reads; None synthesises SECONDS of a test signal
SECONDS = 4.0
SHIFTS = 1              # demucs' default: one random time shift
SEED = 0                # random weights, test signal and shift offsets
OUTPUT_DIR = None       # a folder to write the stems to as .wav files

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Audio, display

import numba_demucs
from numba_demucs.plots import plot_stems

# %% [markdown]
# ## The model
#
# A `Separator` holds a model and the separation options. Three ways to get one. The
# published weights come by name (`Separator("htdemucs")` goes through
# `numba_demucs.pretrained`, which downloads a checkpoint once and caches it); CI has no
# network, so that branch only runs when you set `USE_PRETRAINED = True`. A checkpoint file
# of your own is read without torch. The default builds the random-weight model described
# above, which needs the `reference` extra (torch and demucs).

# %%
if USE_PRETRAINED:
    separator = numba_demucs.Separator("htdemucs", shifts=SHIFTS, seed=SEED)
else:
    if CHECKPOINT is None:
        from numba_demucs.debug import reference

        workdir = Path(tempfile.mkdtemp(prefix="numba-demucs-separate-"))
        CHECKPOINT = reference.save_th(reference.build_model("htdemucs", seed=SEED), workdir)
    separator = numba_demucs.Separator(CHECKPOINT, shifts=SHIFTS, seed=SEED)
model = separator.model
print(f"sources {model.sources}, {model.samplerate} Hz, segments of {float(model.segment):.1f} s")

# %% [markdown]
# ## The mix
#
# `(channels, samples)` at any rate. A full song takes a while: one 7.8 s segment costs
# several seconds on a laptop core, and a song is about 25 segments per minute with the
# default overlap.

# %%
if INPUT_PATH is not None:
    from numba_demucs import audio

    mix, rate = audio.read(INPUT_PATH)
else:
    from numba_demucs.debug.reference import music_like_signal

    mix, rate = music_like_signal(SECONDS, seed=SEED), model.samplerate
print(f"{mix.shape[0]} channels, {mix.shape[1] / rate:.1f} s at {rate} Hz")

# %% [markdown]
# ## Separation
#
# `separate_array` does what demucs' `Separator` does to a mix — resample to 44.1 kHz,
# standardise by the mono downmix, `apply_model` (overlapping segments blended with
# triangular weights, `shifts` random time shifts averaged, the offsets demucs draws after
# `random.seed(seed)`), undo the standardisation — and gives the stems back at the mix's
# rate and channel count. (`numba_demucs.apply_model` is the lower-level call on a batch
# `(batch, channels, samples)` already at the model's rate.)

# %%
separated = separator.separate_array(mix, rate)
stems = np.stack([separated[name] for name in model.sources])
stems.shape

# %%
figure = plt.figure(figsize=(12, 2.2 * (1 + len(model.sources))), layout="constrained")
plot_stems(mix, stems, model.sources, rate, figure=figure, max_frequency=8000)
plt.show()

# %% [markdown]
# ## Listening

# %%
print("mix")
display(Audio(mix, rate=rate))
for name, stem in zip(model.sources, stems):
    print(name)
    display(Audio(stem, rate=rate))

# %%
if OUTPUT_DIR is not None:
    from numba_demucs import audio

    for name, stem in zip(model.sources, stems):
        audio.write(Path(OUTPUT_DIR) / f"{name}.wav", audio.prevent_clip(stem), rate)
