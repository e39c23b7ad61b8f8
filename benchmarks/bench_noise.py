"""Cost of `debug noise` on one htdemucs segment, in forward passes.

Prints the wall time of one plain forward pass of our model, of one traced pass (every point's
statistics recorded, as `debug trace --segment-only` does) and of `measure_bands` with K runs,
and their ratios: the bands cost K + 2 traced passes (K randomly rounded, float64, float32).
Random official-architecture weights. Usage:
python benchmarks/bench_noise.py [--runs 8] [--arch htdemucs] [--tiny]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--arch", default="htdemucs")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()

    import numba_demucs
    from numba_demucs.debug import collect, reference
    from numba_demucs.debug.noise import measure_bands

    with tempfile.TemporaryDirectory() as folder:
        overrides = dict(reference.TINY) if args.tiny else {}
        checkpoint = reference.save_th(reference.build_model(args.arch, seed=0, **overrides), folder)
        model = numba_demucs.load_model(checkpoint)
        length = int(model.segment * model.samplerate)
        mix = reference.music_like_signal(length / 44100 + 0.01)[:, :length]
        batch = np.asarray(mix, dtype=np.float32)[None]
        model(batch)  # warm-up: numba's cache
        collect.trace_ours(checkpoint, mix, "float64", segment_only=True)
        timings = {}
        start = time.perf_counter()
        model(batch)
        timings["plain"] = time.perf_counter() - start
        start = time.perf_counter()
        collect.trace_ours(checkpoint, mix, "float32", segment_only=True, model=model)
        timings["traced"] = time.perf_counter() - start
        start = time.perf_counter()
        measure_bands(checkpoint, mix, runs=args.runs, seed=0)
        timings["noise"] = time.perf_counter() - start
    print(f"{args.arch}{' (tiny)' if args.tiny else ''}, one {length / 44100:.2f} s segment, K = {args.runs}")
    print(f"plain forward {timings['plain']:.2f} s, traced forward {timings['traced']:.2f} s, "
          f"noise {timings['noise']:.2f} s")
    print(f"noise / traced pass = {timings['noise'] / timings['traced']:.1f} (K + 2 = {args.runs + 2}); "
          f"noise / plain pass = {timings['noise'] / timings['plain']:.1f}")


if __name__ == "__main__":
    main()
