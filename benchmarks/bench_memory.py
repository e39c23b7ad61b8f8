"""Peak memory of `numba-demucs separate`, in memory and with --stream, against track length.

    python benchmarks/bench_memory.py --minutes 1 4 20 --model tiny
    python benchmarks/bench_memory.py --minutes 1 4 --model htdemucs

Each run is a fresh process (`numba-demucs separate --shifts 0 -q`) on generated stereo
noise at 44.1 kHz; its peak RSS is VmHWM from /proc/self/status at the end of that process. The checkpoint is
generated with PyTorch demucs (the `reference` extra): `htdemucs` is the official
architecture; `tiny` is the same model class at 8 channels, nfft 1024, one transformer layer
and 8 s segments, which keeps a 20-minute run short and leaves the track-length buffers as
most of what is measured.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile

CHILD = """
import json, sys, time
from numba_demucs import cli
start = time.perf_counter()
code = cli.main(sys.argv[1:])
# VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across exec.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"code": code, "seconds": time.perf_counter() - start, "peak_mib": peak / 1024}))
"""


def write_noise(path: Path, minutes: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * 44100)
    with soundfile.SoundFile(str(path), "w", 44100, 2, subtype="PCM_16") as handle:
        for start in range(0, total, 1 << 20):
            n = min(1 << 20, total - start)
            handle.write((0.1 * rng.standard_normal((n, 2))).astype(np.float32))


def make_checkpoint(kind: str, folder: Path) -> Path:
    from numba_demucs.debug import reference

    overrides = {} if kind == "htdemucs" else dict(
        channels=8, dconv_comp=4, segment=Fraction(8), t_layers=1, bottom_channels=16,
        nfft=1024)
    return reference.save_th(reference.build_model("htdemucs", seed=0, **overrides), folder)


def measure(checkpoint: Path, track: Path, out: Path, stream: bool, jobs: int) -> dict:
    argv = ["separate", str(track), "--checkpoint", str(checkpoint), "--shifts", "0", "-q",
            "-o", str(out), "-j", str(jobs)] + (["--stream"] if stream else [])
    result = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 4, 20])
    parser.add_argument("--model", choices=["tiny", "htdemucs"], default="tiny")
    parser.add_argument("-j", "--jobs", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=["memory", "stream"],
                        default=["memory", "stream"],
                        help="which ways of separating to measure (default both)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        checkpoint = make_checkpoint(args.model, scratch)
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
              f"model {args.model}, -j {args.jobs}")
        print(f"{'minutes':>8} {'mode':>10} {'seconds':>9} {'peak MiB':>9} {'track MiB':>10}")
        rows = []
        for minutes in args.minutes:
            track = scratch / f"noise-{minutes:g}min.wav"
            write_noise(track, minutes)
            float_track_mib = minutes * 60 * 44100 * 2 * 4 / 2 ** 20
            for stream in [mode == "stream" for mode in args.modes]:
                figures = measure(checkpoint, track, scratch / "out", stream, args.jobs)
                mode = "--stream" if stream else "in memory"
                rows.append((minutes, mode, figures))
                print(f"{minutes:8g} {mode:>10} {figures['seconds']:9.1f} "
                      f"{figures['peak_mib']:9.0f} {float_track_mib:10.0f}", flush=True)
            track.unlink()


if __name__ == "__main__":
    main()
