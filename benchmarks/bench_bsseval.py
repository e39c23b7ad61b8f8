"""BSS Eval v4: numba_demucs.eval.bss_eval against museval.evaluate, same data, one run.

Each scorer runs in its own subprocess so that its peak resident memory
(``resource.getrusage(...).ru_maxrss``) is its own. The data are 4 stereo sources of
music-like tones plus noise, with estimates that are filtered, leaked and noisy versions
of them, generated once from a fixed seed as float32 (what an audio file decodes to) and
loaded from a file by each worker. museval
receives the float64 copy that ``soundfile.read`` would give it, loaded as float64 from a
second file; ours is run on float32 (what our runner passes) and on that float64 copy.

    python benchmarks/bench_bsseval.py                 # 60 s and 240 s
    python benchmarks/bench_bsseval.py --seconds 30    # quicker
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SR = 44100


def make_signals(seconds: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n, dtype=np.float64) / SR
    refs = np.empty((4, n, 2), dtype=np.float32)
    for source in range(4):
        f0 = 82.0 * 1.5 ** source
        note = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (0.5 + 0.3 * source) * t) ** 2
        for channel in range(2):
            refs[source, :, channel] = (0.7 + 0.3 * channel) * note * envelope \
                + 0.05 * rng.standard_normal(n)
    del t
    ests = np.empty_like(refs)
    kernel = np.hanning(17)[1:-1]
    kernel /= kernel.sum()
    for source in range(4):
        for channel in range(2):
            ests[source, :, channel] = np.convolve(refs[source, :, channel], kernel)[:n] \
                + 0.15 * refs[(source + 1) % 4, :, channel] + 0.02 * rng.standard_normal(n)
    return refs, ests


def worker(scorer: str, signals_path: str, dtype: str, out_path: str) -> None:
    # Signals come from a file, as decoded audio would: generating them here would add the
    # generator's float64 temporaries to the peak memory of whichever scorer runs.
    # float64 input is read from a float64 copy of the signals, as ``soundfile.read`` gives
    # it: converting after loading kept the float32 and float64 copies of one array alive
    # together, a harness peak (1.7 GiB at 240 s) above the float64 scorer's own.
    with np.load(signals_path if dtype == "float32" else signals_path + "64.npz") as stored:
        refs, ests = stored["refs"], stored["ests"]
    if scorer == "museval":
        import museval

        assert refs.dtype == ests.dtype == np.float64
        start = time.perf_counter()
        result = museval.evaluate(refs, ests)
    else:
        from numba_demucs.eval import bss_eval

        # One array at a time, and no copy when the dtype already matches: converting both
        # at once kept the loaded and the converted signals alive together, a peak of the
        # harness (twice the signals at 240 s) rather than of the scorer.
        refs = refs.astype(dtype, copy=False)
        ests = ests.astype(dtype, copy=False)
        bss_eval(refs[:, : 2 * SR], ests[:, : 2 * SR])  # JIT compile / cache load, not timed
        start = time.perf_counter()
        result = bss_eval(refs, ests)
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out_path + ".npy", np.stack(result))
    with open(out_path, "w") as handle:
        json.dump({"seconds": elapsed, "peak_rss_mib": peak_kib / 1024}, handle)


def run(scorer, seconds, dtype, scratch):
    out_path = os.path.join(scratch, f"{scorer}-{dtype}-{seconds}.json")
    signals_path = os.path.join(scratch, f"signals-{seconds}.npz")
    if not os.path.exists(signals_path):
        # In a subprocess: on Linux a child's ru_maxrss starts from its parent's resident
        # size at fork, so a parent holding the generated signals would lift every
        # worker's peak to its own.
        subprocess.run([sys.executable, __file__, "--make-signals", str(seconds),
                        "--signals", signals_path], check=True)
    subprocess.run([sys.executable, __file__, "--worker", scorer, "--signals", signals_path,
                    "--dtype", dtype, "--out", out_path], check=True)
    with open(out_path) as handle:
        record = json.load(handle)
    record["scores"] = np.load(out_path + ".npy")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0, 240.0])
    parser.add_argument("--worker", choices=["ours", "museval"])
    parser.add_argument("--signals", help="(worker) .npz with refs and ests")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out")
    parser.add_argument("--make-signals", type=float, help="(helper) write the signals")
    args = parser.parse_args()
    if args.make_signals:
        refs, ests = make_signals(args.make_signals)
        np.savez(args.signals, refs=refs, ests=ests)
        np.savez(args.signals + "64.npz", refs=refs.astype(np.float64),
                 ests=ests.astype(np.float64))
        return
    if args.worker:
        worker(args.worker, args.signals, args.dtype, args.out)
        return
    print(f"{'track':>7} {'scorer':>16} {'time s':>8} {'peak RSS MiB':>13} "
          f"{'speed-up':>9} {'RSS ratio':>9} {'max |dSDR| dB':>14} {'max |dISR| dB':>14} "
          f"{'max |dSIR| dB':>14} {'max |dSAR| dB':>14}")
    with tempfile.TemporaryDirectory() as scratch:
        for seconds in args.seconds:
            theirs = run("museval", seconds, "float64", scratch)
            print(f"{seconds:>6.0f}s {'museval':>16} {theirs['seconds']:>8.2f} "
                  f"{theirs['peak_rss_mib']:>13.0f}", flush=True)
            for dtype in ("float32", "float64"):
                ours = run("ours", seconds, dtype, scratch)
                deviation = np.abs(ours["scores"] - theirs["scores"])
                print(f"{seconds:>6.0f}s {'ours ' + dtype:>16} {ours['seconds']:>8.2f} "
                      f"{ours['peak_rss_mib']:>13.0f} "
                      f"{theirs['seconds'] / ours['seconds']:>8.1f}x "
                      f"{ours['peak_rss_mib'] / theirs['peak_rss_mib']:>9.3f} "
                      + " ".join(f"{np.nanmax(metric):>14.2e}" for metric in deviation),
                      flush=True)


if __name__ == "__main__":
    main()
