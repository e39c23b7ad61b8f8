"""umxl: our Open-Unmix against openunmix's PyTorch Separator, time and peak memory, one run.

    python benchmarks/bench_umx.py --seconds 60            # both sides, prints the ratios
    python benchmarks/bench_umx.py --seconds 1200 --sides ours

Each side runs in its own process (so each peak RSS is its own): it loads the same four
random full-size umxl files (TARGET-HASH8.pth), separates the same music-like stereo signal
of ``--seconds`` (niter=1, blocks of 300 frames), and reports the separation's wall time,
the process's peak RSS, and its RSS just before the separation (imports, weights, input).
The first side to run also warms numba's cache with a short call that is not timed.
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
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(side: str, folder: Path, seconds: float) -> dict:
    import numpy as np

    from numba_demucs.debug.reference import music_like_signal

    if side == "ours":
        from numba_demucs import load_model

        model = load_model("umxl", repo=folder)
        model.separate(music_like_signal(3.0))  # compile / load numba's cache, untimed
        run = model.separate
    else:
        import torch

        from numba_demucs.debug import reference_umx

        torch.set_num_threads(os.cpu_count() or 1)
        separator = reference_umx.load_separator(folder)

        def run(mix):
            with torch.no_grad():
                return separator(torch.from_numpy(mix)[None])[0].numpy()
    mix = music_like_signal(seconds)
    before = _rss_mb()
    start = time.perf_counter()
    out = run(mix)
    elapsed = time.perf_counter() - start
    assert out.shape == (4,) + mix.shape and np.isfinite(out).all()
    return {"side": side, "seconds": elapsed, "peak_mb": _peak_mb(), "before_mb": before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sides", default="ours,theirs")
    parser.add_argument("--weights", type=Path, help="folder of umxl files (made if absent)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.weights, args.seconds)))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.weights or Path(scratch) / "umxl"
        if not folder.exists():
            from numba_demucs.debug import reference_umx

            reference_umx.save_targets(reference_umx.build_separator("umxl", seed=0), folder)
        results = {}
        for side in args.sides.split(","):
            output = subprocess.run(
                [sys.executable, __file__, "--child", side, "--weights", str(folder),
                 "--seconds", str(args.seconds)], capture_output=True, text=True, check=True)
            results[side] = json.loads(output.stdout.strip().splitlines()[-1])
            print(f"{side:7s} {args.seconds:.0f} s of audio: {results[side]['seconds']:.1f} s, "
                  f"peak RSS {results[side]['peak_mb']:.0f} MB "
                  f"(before the separation {results[side]['before_mb']:.0f} MB)")
        if {"ours", "theirs"} <= set(results):
            ours, theirs = results["ours"], results["theirs"]
            print(f"time ratio ours/openunmix {ours['seconds'] / theirs['seconds']:.2f}, "
                  f"peak RSS ratio {ours['peak_mb'] / theirs['peak_mb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
