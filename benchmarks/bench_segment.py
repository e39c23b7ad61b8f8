"""One 7.8 s htdemucs segment: our model against PyTorch demucs, each in its own process.

Prints the median wall time of several forward passes after a warm-up (numba's cache warm),
the ratio ours / PyTorch, each process's peak RSS, and what the trace points cost when no
capture is active. Random official-architecture weights (the forward costs the same as with
the published ones). Usage: python benchmarks/bench_segment.py [--repeat 3] [--arch htdemucs]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import timeit

WORKER = r"""
import json, resource, statistics, sys, time
import numpy as np
side, checkpoint, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
from numba_demucs.debug import reference
mix = None
if side == "torch":
    import torch
    torch.set_num_threads(int(sys.argv[4]))
    model = reference.load_reference(checkpoint)
    length = int(model.segment * model.samplerate)
    mix = torch.from_numpy(reference.music_like_signal(length / 44100 + 0.01)[None, :, :length])
    def run():
        with torch.no_grad():
            model(mix)
else:
    import numba_demucs
    model = numba_demucs.load_model(checkpoint)
    length = int(model.segment * model.samplerate)
    mix = reference.music_like_signal(length / 44100 + 0.01)[None, :, :length]
    def run():
        model(mix)
started = time.perf_counter(); run(); first = time.perf_counter() - started
times = []
for _ in range(repeat):
    started = time.perf_counter(); run(); times.append(time.perf_counter() - started)
print(json.dumps({"first": first, "median": statistics.median(times), "times": times,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(side, checkpoint, repeat, threads):
    result = subprocess.run([sys.executable, "-c", WORKER, side, str(checkpoint), str(repeat),
                             str(threads)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def trace_point_cost():
    """Seconds per trace.point call with no capture active, and points per forward."""
    import numpy as np

    from numba_demucs import trace

    array = np.zeros(4, np.float32)
    calls = 200_000
    per_call = timeit.timeit(lambda: trace.point("encoder.0.conv", array), number=calls) / calls
    return per_call


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--arch", default="htdemucs", choices=["htdemucs", "htdemucs_6s"])
    args = parser.parse_args()
    from numba_demucs.debug import reference

    threads = os.cpu_count()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = reference.save_th(reference.build_model(args.arch, seed=0), folder)
        torch_result = measure("torch", checkpoint, args.repeat, threads)
        ours_result = measure("ours", checkpoint, args.repeat, threads)
    points = len([line for line in open(os.path.join(os.path.dirname(__file__), "..", "tests",
                  "parity", "golden", f"{args.arch}_points.txt")) if not line.startswith("#")])
    per_call = trace_point_cost()
    print(f"{args.arch}, one 7.8 s segment, {threads} threads, median of {args.repeat}")
    print(f"  PyTorch       {torch_result['median']:.2f} s  (first {torch_result['first']:.2f} s)"
          f"  peak RSS {torch_result['peak_rss_mib']:.0f} MiB")
    print(f"  numba-demucs  {ours_result['median']:.2f} s  (first {ours_result['first']:.2f} s)"
          f"  peak RSS {ours_result['peak_rss_mib']:.0f} MiB")
    print(f"  ratio ours / PyTorch: {ours_result['median'] / torch_result['median']:.2f}")
    overhead = per_call * points
    print(f"  trace points with tracing off: {points} per forward x {per_call * 1e9:.0f} ns = "
          f"{overhead * 1e6:.0f} us ({overhead / ours_result['median'] * 100:.4f}% of a forward)")


if __name__ == "__main__":
    main()
