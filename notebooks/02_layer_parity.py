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
# # Layer-by-layer parity with PyTorch demucs
#
# Run our model and the official PyTorch `demucs` model on the same checkpoint and input,
# record every trace point on both sides (the outputs of every PyTorch module, in forward
# order, plus a few named steps such as `spec.magnitude`), and compare them point by point.
# Then break one layer on purpose and watch the comparison point at it.
#
# The model is the official `htdemucs` layer structure at toy width (`TINY`), so both sides
# run in seconds; every layer type and trace point of the full model is there. Set
# `TINY = False` for the full-size model (minutes, and several GB with tensors kept).
# This is the notebook form of `numba-demucs debug parity`; see docs/debugging.md for the
# diff rules and tolerances.

# %% tags=["parameters"]
ARCHITECTURE = "htdemucs"                   # or "htdemucs_6s"
TINY = True                                 # toy widths; False: the full-size model
SECONDS = 0.35                              # under one segment stride: a single segment (more: a context per segment)
SEED = 4
BROKEN_PARAMETER = "encoder.1.conv.weight"  # a parameter name as in the PyTorch state dict
BROKEN_CHANNEL = 3                          # which output channel of it to scale
BREAK_FACTOR = 1.01
CHANNEL_AXIS = 0                            # of the inspected tensor (conv outputs: channels first)

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import numba_demucs
from numba_demucs.debug import collect, reference
from numba_demucs.debug.diff import diff
from numba_demucs.debug.isolate import isolate
from numba_demucs.debug.parity import parity
from numba_demucs.debug.render import draw_errors, points_frame
from numba_demucs.debug.stats import channel_stats

# %% [markdown]
# ## Both sides on one checkpoint
#
# Seeded random weights, perturbed so that no branch is negligible (LayerScale, norm affines
# and biases away from their initial values), written as demucs writes `.th` files. Each side
# loads that file with its own loader. `parity` traces both sides (each trace a `Trace`
# value: header, one record per point, here with every tensor kept by `save_tensors=True`, so
# the diff also reports relative L2 error and SNR per point), diffs them and compares the
# outputs end to end: what `numba-demucs debug parity` prints. `trace.save(path)` would write
# the dump files `numba-demucs debug trace|reference` write.

# %%
workdir = Path(tempfile.mkdtemp(prefix="numba-demucs-parity-"))
overrides = reference.TINY if TINY else {}
checkpoint = reference.save_th(reference.build_model(ARCHITECTURE, seed=SEED, **overrides), workdir)
mix = reference.music_like_signal(SECONDS, seed=SEED)

report = parity(checkpoint, mix, save_tensors=True)
theirs_trace, result = report.reference, report.diff
print(f"{len(result.points)} points compared, rtol {result.tolerance['rtol']:g}:",
      "no divergence" if result.ok else f"first divergence at {result.first_divergence}")
print(f"{theirs_trace.header['model']}, end-to-end SNR per source (dB):",
      dict(zip(report.sources, report.snr_db.round(1))))

# %% [markdown]
# The diff as a table, one row per point in forward order. `error` is the worst relative
# error of the point (statistics and tensor); `context` tells repeated calls apart (here the
# segment of `apply_model`).

# %%
table = points_frame(result)
table.head(12)

# %%
table.sort_values("error", ascending=False).head(8)

# %%
figure, ax = plt.subplots(figsize=(14, 4.5), layout="constrained")
draw_errors(ax, result)
ax.set_title("ours vs PyTorch, unbroken: every point under rtol")
plt.show()

# %% [markdown]
# ## Break a layer on purpose
#
# Scale one output channel of `BROKEN_PARAMETER` by `BREAK_FACTOR` in our loaded model (the
# file is untouched, so the reference is the same) and trace our side again. The first point
# where the two part ways is the module that owns the parameter; the points after it inherit
# its error and are shown, not blamed.

# %%
broken = numba_demucs.load_model(checkpoint)
dict(broken.parameters())[BROKEN_PARAMETER][BROKEN_CHANNEL] *= np.float32(BREAK_FACTOR)
broken_trace = collect.trace_ours(checkpoint, mix, save_tensors=True, model=broken)
broken_result = diff(theirs_trace, broken_trace)

broken_module = BROKEN_PARAMETER.rsplit(".", 1)[0]
print("first divergence:", broken_result.first_divergence, broken_result.first_divergence_context)
assert broken_result.first_divergence == broken_module, "the diff should name the broken layer"

# %%
figure, ax = plt.subplots(figsize=(14, 4.5), layout="constrained")
draw_errors(ax, broken_result)
ax.set_title(f"ours with {BROKEN_PARAMETER}[{BROKEN_CHANNEL}] × {BREAK_FACTOR} vs PyTorch")
plt.show()

# %%
points_frame(broken_result, only_diverged=True).head(10)

# %% [markdown]
# ### Local or inherited?
#
# Every point after the broken one diverges too. Feeding each of our layers the reference's
# own input (`debug.isolate`, the CLI's `--isolate`) separates the error a layer makes itself
# (*local*) from the error that reaches it (*total*): only the broken layer has a local error
# above float32 rounding.

# %%
errors = pd.DataFrame(isolate(theirs_trace, broken, mix))
errors.sort_values("local", ascending=False).head(5)

# %%
figure, ax = plt.subplots(figsize=(14, 4), layout="constrained")
ax.semilogy(errors["total"].clip(lower=1e-12), label="total (what reaches the point)")
ax.semilogy(errors["local"].clip(lower=1e-12), label="local (the layer on the reference's input)")
ax.set_xlabel("trace point, forward order")
ax.set_ylabel("relative L2 error")
ax.legend()
plt.show()

# %% [markdown]
# ## Inside one tensor
#
# A record summarises a whole tensor; one channel gone wrong is averaged away in it. The
# broken layer's output, side by side: the value histograms barely differ, while the
# per-channel statistics of the difference show which channel is off.

# %%
context = broken_result.first_divergence_context
theirs = theirs_trace.tensor_of(broken_module, context)
ours = broken_trace.tensor_of(broken_module, context)
print(broken_module, context, "shape", theirs.shape)

figure, (left, right) = plt.subplots(1, 2, figsize=(13, 3.5), layout="constrained")
left.hist(theirs.ravel(), bins=100, alpha=0.6, label="PyTorch")
left.hist(ours.ravel(), bins=100, histtype="step", label="ours (broken)")
left.set_title("values")
left.legend()
right.hist((ours - theirs).ravel(), bins=100, log=True)
right.set_title("ours − PyTorch")
plt.show()

# %%
pd.concat({"PyTorch": channel_stats(theirs, axis=CHANNEL_AXIS),
           "ours − PyTorch": channel_stats(ours - theirs, axis=CHANNEL_AXIS)}, axis=1).round(5)
