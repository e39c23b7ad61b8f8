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
# # BSS Eval on a MUSDB18-HQ-layout folder
#
# Score separations the way SiSEC 2018 and the Demucs paper do: museval's BSS Eval v4
# (SDR, SIR, ISR, SAR on one-second frames), the median over a track's frames, then the
# median over tracks per source. `numba_demucs.eval` computes museval's numbers (to about
# 1e-10 dB) in a fraction of its time; see docs/evaluation.md.
#
# The data here is **generated**: a folder in MUSDB18-HQ's layout whose stems are tones, and
# two "methods" whose estimates are the stems degraded by known amounts (leakage from another
# source, noise, a low-pass filter). That makes the notebook runnable anywhere and the scores
# predictable (the lighter degradation scores higher); none of it says anything about a
# separator. Point `MUSDB_ROOT` at the real dataset and `ESTIMATES` at your separations to
# score those instead.

# %% tags=["parameters"]
TRACKS = {"Alpha - One": 2.0, "Beta - Two": 1.6, "Gamma - Three": 1.3}  # generated: name -> seconds
DEGRADATIONS = {  # generated methods: name -> arguments of synthetic.degrade
    "light leak": {"leak": 0.1, "noise_level": 0.01},
    "heavy leak, filtered": {"leak": 0.3, "noise_level": 0.05, "filtered": True},
}
SEED = 0
MUSDB_ROOT = None  # a real MUSDB18-HQ folder (ROOT/test/TRACK/*.wav) instead of generated tracks
ESTIMATES = {}     # with MUSDB_ROOT: method name -> folder of TRACK/{vocals,drums,bass,other}.wav

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from numba_demucs.eval import bss_eval, musdb, report, runner, synthetic

# %% [markdown]
# ## The data
#
# `ROOT/test/TRACK/{mixture,vocals,drums,bass,other}.wav`, and per method a folder
# `METHOD/TRACK/{vocals,drums,bass,other}.wav`, the layout `numba-demucs eval musdb
# --estimates` reads.

# %%
workdir = Path(tempfile.mkdtemp(prefix="numba-demucs-eval-"))
if MUSDB_ROOT is None:
    root = synthetic.write_musdb(workdir / "musdb18hq", TRACKS, seed=SEED)
    estimates = {name: synthetic.write_degraded_estimates(root, workdir / "estimates" / name,
                                                          seed=SEED, **degradation)
                 for name, degradation in DEGRADATIONS.items()}
else:
    root, estimates = Path(MUSDB_ROOT), {name: Path(path) for name, path in ESTIMATES.items()}
tracks = musdb.find_tracks(root, "test")
print(f"{len(tracks)} tracks:", ", ".join(track.name for track in tracks))

# %% [markdown]
# ## One track by hand
#
# `bss_eval(references, estimates)` takes `(sources, samples, channels)` arrays and returns
# SDR, ISR, SIR and SAR as `(sources, frames)`, what `museval.evaluate` returns.

# %%
first_method = next(iter(estimates))
references, rate = musdb.load_stems(tracks[0], musdb.SOURCES)
estimated = runner.load_estimates(estimates[first_method] / tracks[0].name, musdb.SOURCES,
                                  references, rate)
sdr, isr, sir, sar = bss_eval(references, estimated, sr=rate)
pd.DataFrame(sdr, index=list(musdb.SOURCES),
             columns=[f"{second} s" for second in range(sdr.shape[1])]).round(2)

# %% [markdown]
# ## Every track, every method
#
# `runner.run` scores the tracks and writes one museval-format JSON per track
# (`RESULTS/test/TRACK.json`), skipping tracks already scored: an interrupted run resumes.
# It is what `numba-demucs eval musdb` runs.

# %%
results = {}
for name, folder in estimates.items():
    tasks = [runner.TrackTask(track, estimates_dir=str(folder)) for track in tracks]
    runner.run(tasks, workdir / "results" / name, progress=False)
    results[name] = report.read_results(workdir / "results" / name)

# %% [markdown]
# Median over frames per track and source, methods side by side (the first table of
# `numba-demucs eval report --compare`):

# %%
report.per_track_frame(results).round(2)

# %% [markdown]
# The SiSEC aggregate: per source, the median over tracks of those medians; the last row is
# the mean over sources, the single SDR papers quote.

# %%
report.aggregate_frame(results).round(2)

# %%
figure = plt.figure(figsize=(13, 4))
report.sdr_boxplots(results, figure=figure)
plt.show()

# %% [markdown]
# ## On the real dataset
#
# The same from a shell, with a model separating every test track
# (`--checkpoint my_model.th`) or estimates you already have, and museval's own result
# folders compared directly:
#
# ```sh
# numba-demucs eval musdb --root ~/data/musdb18hq --estimates separated/ -o results/mine
# numba-demucs eval report results/mine --compare museval_output/ --csv scores.csv --plot sdr.png
# ```
