"""Whole-track separation: numba-demucs against PyTorch demucs, each in its own fresh process.

Same official-architecture checkpoint (random weights: the cost is the same as with the
published ones), same stereo input, ``shifts=0``, ``overlap=0.25``, demucs' normalisation
by the mono downmix's mean and std around the call, as ``demucs/separate.py`` does.
PyTorch runs with ``torch.set_num_threads(cores)``; ours with its defaults (one segment per
core, single-threaded BLAS in each). Prints, per length:

- the median wall time of the separation call (normalise, apply_model, de-normalise) over
  ``--repeat`` runs, ours and PyTorch alternating so that load from other processes hits
  both alike; the ratio ours / PyTorch;
- the achieved GFLOP/s (FLOPs of one segment counted by ``torch.utils.flop_counter`` on
  demucs' model -- convolutions, matrix products and attention -- times the number of
  segments) and its fraction of the sgemm peak measured by this run (a NumPy float32
  4096^3 matmul, all cores);
- each process's peak RSS (``VmHWM``);
- which kernels ran each side's matrix products: NumPy's BLAS for ours (threadpoolctl's
  name for the OpenBLAS kernel), MKL and the CPU capability for PyTorch. Where the
  environment sets ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` (some machines pin an older
  kernel that way), ours runs on the pinned kernel; the script says so, and unsetting both
  for its command alone measures the kernel OpenBLAS itself picks;

and once: the cold start (first separation of one segment with an empty numba cache, in a
temporary ``NUMBA_CACHE_DIR``) against the same with a warm cache, the import time of
``numba_demucs`` with a warm cache, and a per-stage profile (STFT/iSTFT, encoders,
transformer, decoders) of one 60 s run on each side, plotted side by side.

    python benchmarks/bench_separate.py                      # 60 s and 240 s, 3 repeats
    python benchmarks/bench_separate.py --seconds 20 --repeat 1 --no-cold   # quick look
    python benchmarks/bench_separate.py --arch hdemucs_mmi --seconds 60 --repeat 1 \
        --no-cold --no-profile --no-jobs1        # demucs v3 (HDemucs), 44 s segments

``--arch hdemucs_mmi`` builds hdemucs_mmi's architecture (HDemucs, 48 channels, depth 6,
BLSTM and LocalState in the two innermost layers) with the 44 s segment its bag sets, as
``demucs -n hdemucs_mmi`` runs it. torch's flop counter does not count the LSTMs, so the
GFLOP/s figure is a lower bound there.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = ["stft", "encoders", "transformer", "decoders", "other"]
# the segment each architecture runs at (htdemucs: its training segment; hdemucs_mmi: the
# segment its bag yaml sets)
# set on some machines to pin OpenBLAS's kernel; they decide which GEMM kernel ours runs
BLAS_ENVIRONMENT = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SEGMENT = {"htdemucs": 7.8, "htdemucs_6s": 7.8, "hdemucs_mmi": 44}


# -- workers (run as ``python bench_separate.py --worker ...``) ---------------------------
def _peak_rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _StageClock:
    """Seconds per stage, summed over calls and threads (thread-seconds)."""

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.totals = dict.fromkeys(STAGES, 0.0)

    def add(self, stage, seconds):
        with self.lock:
            self.totals[stage] += seconds


class _Timed:
    """Proxy for one of our layers that adds its call time to a stage."""

    def __init__(self, layer, stage, clock):
        self._layer, self._stage, self._clock = layer, stage, clock

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._layer(*args, **kwargs)
        finally:
            self._clock.add(self._stage, time.perf_counter() - started)

    def __getattr__(self, name):
        return getattr(self._layer, name)


def _instrument_ours(model, clock):
    for attribute, stage in (("encoder", "encoders"), ("tencoder", "encoders"),
                             ("decoder", "decoders"), ("tdecoder", "decoders")):
        setattr(model, attribute, [_Timed(layer, stage, clock) for layer in getattr(model, attribute)])
    for attribute in ("crosstransformer", "channel_upsampler", "channel_downsampler",
                      "channel_upsampler_t", "channel_downsampler_t"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, _Timed(getattr(model, attribute), "transformer", clock))
    # HTDemucs runs its iSTFT through _ispec_of_mask (mask and iSTFT a row at a time)
    for attribute in ("_spec", "_ispec", "_ispec_of_mask"):
        if hasattr(model, attribute):
            setattr(model, attribute, _Timed(getattr(model, attribute), "stft", clock))


def _instrument_torch(model, clock):
    started = {}

    def pre(module, _inputs):
        started[id(module)] = time.perf_counter()

    def post_for(stage):
        def post(module, _inputs, _output):
            clock.add(stage, time.perf_counter() - started.pop(id(module)))
        return post

    groups = {"encoders": [*model.encoder, *model.tencoder],
              "decoders": [*model.decoder, *model.tdecoder],
              "transformer": [getattr(model, name) for name in (
                  "crosstransformer", "channel_upsampler", "channel_downsampler",
                  "channel_upsampler_t", "channel_downsampler_t") if getattr(model, name, None) is not None]}
    for stage, modules in groups.items():
        for module in modules:
            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post_for(stage))
    for attribute in ("_spec", "_ispec"):
        method = getattr(model, attribute)

        def timed(*args, _method=method, **kwargs):
            begun = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                clock.add("stft", time.perf_counter() - begun)
        setattr(model, attribute, timed)


def worker(args):
    import numpy as np

    report = {}
    mix = np.load(args.input)
    threads = len(os.sched_getaffinity(0))
    clock = _StageClock() if args.profile else None
    if args.worker == "torch":
        import torch

        torch.set_num_threads(threads)
        from demucs.apply import apply_model
        from numba_demucs.debug import reference

        model = reference.load_reference(args.checkpoint)
        if clock:
            _instrument_torch(model, clock)
        wav = torch.from_numpy(mix)

        def separate():
            ref = wav.mean(0)
            normed = (wav - ref.mean()) / ref.std()
            with torch.no_grad():
                out = apply_model(model, normed[None], shifts=0, split=True, overlap=0.25,
                                  progress=False, num_workers=0)[0]
            return (out * ref.std() + ref.mean()).numpy()
    else:
        started = time.perf_counter()
        import numba_demucs

        report["import_s"] = time.perf_counter() - started
        model = numba_demucs.load_model(args.checkpoint)
        if clock:
            _instrument_ours(model, clock)

        def separate():
            ref = mix.mean(0)
            mean, std = ref.mean(), ref.std(ddof=1)
            normed = (mix - mean) / std
            out = numba_demucs.apply_model(model, normed[None], shifts=0, split=True,
                                           overlap=0.25, jobs=args.jobs)[0]
            out *= std
            out += mean
            return out
    started = time.perf_counter()
    out = separate()
    report["separate_s"] = time.perf_counter() - started
    report["peak_rss_mib"] = _peak_rss_mib()
    report["output_shape"] = list(out.shape)
    report["blas"] = _blas_in_use(args.worker)
    if clock:
        report["stages"] = clock.totals
        report["parallel"] = 1
        if args.worker == "ours":
            from numba_demucs._threads import default_jobs

            report["parallel"] = default_jobs()
    if args.flops:
        report["segment_flops"] = _segment_flops(args.checkpoint)
    print(json.dumps(report))


def _blas_in_use(side):
    """What runs this worker's matrix products: NumPy's BLAS (ours) or torch's (PyTorch)."""
    if side == "torch":
        import torch

        return (f"torch {torch.__version__}: MKL "
                f"{'yes' if torch.backends.mkl.is_available() else 'no'}, "
                f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    from threadpoolctl import threadpool_info

    return "; ".join(f"{info['internal_api']} {info['version']} kernel "
                     f"{info.get('architecture') or '?'}"
                     for info in threadpool_info() if info["user_api"] == "blas")


def _segment_flops(checkpoint):
    """FLOPs of one segment's forward pass on demucs' model, by torch's flop counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from numba_demucs.debug import reference

    model = reference.load_reference(checkpoint)
    length = int(model.segment * model.samplerate)
    # nn.MultiheadAttention's inference fast path is one fused op the counter does not
    # know; the regular path is the same arithmetic through linear + sdpa, which it counts
    torch.backends.mha.set_fastpath_enabled(False)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 2, length))
    return counter.get_total_flops()


def gemm_peak():
    """Best float32 GEMM GFLOP/s of NumPy's BLAS on all cores and on one thread."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    n = 4096
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    out = np.empty_like(a)

    def best(repeat):
        np.matmul(a, b, out=out)
        fastest = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeat))
        return 2 * n ** 3 / fastest / 1e9

    all_cores = best(5)
    with threadpool_limits(1, user_api="blas"):
        one = best(3)
    print(json.dumps({"all_cores": all_cores, "one_thread": one}))


def _timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def import_time():
    started = time.perf_counter()
    import numba_demucs  # noqa: F401

    print(json.dumps({"import_s": time.perf_counter() - started}))


# -- parent -------------------------------------------------------------------------------
def run_child(arguments, env=None):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, os.path.abspath(__file__), *arguments],
                            capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"{arguments} failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["process_s"] = wall
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0, 240.0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--arch", default="htdemucs", choices=sorted(SEGMENT))
    parser.add_argument("--no-cold", action="store_true", help="skip the empty-cache run")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-stage run")
    parser.add_argument("--no-jobs1", action="store_true",
                        help="skip ours with jobs=1 (one segment at a time, BLAS on every core) "
                             "on the first length")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--plot", help="write the per-stage plot (PNG) to this file")
    parser.add_argument("--worker", choices=["ours", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gemm-peak", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--import-time", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.gemm_peak:
        return gemm_peak()
    if args.import_time:
        return import_time()

    import numpy as np

    from numba_demucs.debug import reference

    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg(), "lengths": {}}
    with tempfile.TemporaryDirectory() as folder:
        extra = {"segment": SEGMENT[args.arch]} if args.arch == "hdemucs_mmi" else {}
        checkpoint = str(reference.save_th(reference.build_model(args.arch, seed=0, **extra),
                                           folder))
        results["arch"] = args.arch
        inputs = {}
        for seconds in [*args.seconds, 7.8]:
            inputs[seconds] = os.path.join(folder, f"mix_{seconds:g}.npy")
            np.save(inputs[seconds], reference.music_like_signal(seconds, seed=3))

        def side(name, seconds, *extra, env=None):
            return run_child(["--worker", name, "--checkpoint", checkpoint,
                              "--input", inputs[seconds], *extra], env)

        forced = {name: os.environ[name] for name in BLAS_ENVIRONMENT if name in os.environ}
        results["blas_environment"] = forced
        if forced:
            print("NumPy's OpenBLAS is steered by the environment: "
                  + ", ".join(f"{k}={v}" for k, v in forced.items())
                  + " (ours runs on that kernel; unset both for the kernel OpenBLAS picks)",
                  flush=True)
        results["gemm_peak"] = run_child(["--gemm-peak"])
        print(f"sgemm peak: {results['gemm_peak']['all_cores']:.0f} GFLOP/s on "
              f"{results['cores']} threads, {results['gemm_peak']['one_thread']:.0f} on one", flush=True)
        warmup = side("ours", 7.8)  # warm numba's cache
        results["blas"] = {"ours": warmup["blas"], "torch": side("torch", 7.8)["blas"]}
        print(f"matrix products: ours {results['blas']['ours']}; PyTorch "
              f"{results['blas']['torch']}", flush=True)
        if not args.no_cold:
            with tempfile.TemporaryDirectory() as cache:
                cold = side("ours", 7.8, env={**os.environ, "NUMBA_CACHE_DIR": cache})
            warm = side("ours", 7.8)
            results["cold"] = {"cold": cold, "warm": warm}
            print(f"one 7.8 s segment, first run in a fresh process: empty numba cache "
                  f"{cold['separate_s']:.1f} s, warm cache {warm['separate_s']:.1f} s "
                  f"(compile ~{cold['separate_s'] - warm['separate_s']:.1f} s); process "
                  f"{cold['process_s']:.1f} s vs {warm['process_s']:.1f} s", flush=True)
        imports = [run_child(["--import-time"])["import_s"] for _ in range(3)]
        results["import_s"] = statistics.median(imports)
        print(f"import numba_demucs, warm cache: {results['import_s']:.2f} s (median of 3)", flush=True)
        flops = side("torch", 7.8, "--flops")["segment_flops"]
        results["segment_flops"] = flops
        print(f"FLOPs per {SEGMENT[args.arch]} s segment (torch flop counter): "
              f"{flops / 1e9:.1f} G", flush=True)

        for seconds in args.seconds:
            runs = {"ours": [], "torch": []}
            order = ["torch", "ours"]
            if seconds == args.seconds[0] and not args.no_jobs1:
                runs["ours_jobs1"] = []
                order.append("ours_jobs1")
            for repeat in range(args.repeat):
                for name in order if repeat % 2 == 0 else order[::-1]:
                    if name == "ours_jobs1":
                        runs[name].append(side("ours", seconds, "--jobs", "1"))
                    else:
                        runs[name].append(side(name, seconds))
                    print(f"  {seconds:g} s {name:5s} run {repeat + 1}: "
                          f"{runs[name][-1]['separate_s']:.1f} s, "
                          f"peak RSS {runs[name][-1]['peak_rss_mib']:.0f} MiB", flush=True)
            segments = len(range(0, int(seconds * 44100),
                                 int(0.75 * int(SEGMENT[args.arch] * 44100))))
            summary = {}
            for name, reports in runs.items():
                median = statistics.median(r["separate_s"] for r in reports)
                gflops = flops * segments / median / 1e9
                summary[name] = {"median_s": median, "runs": [r["separate_s"] for r in reports],
                                 "peak_rss_mib": max(r["peak_rss_mib"] for r in reports),
                                 "gflops": gflops,
                                 "peak_fraction": gflops / results["gemm_peak"]["all_cores"]}
            summary["ratio"] = summary["ours"]["median_s"] / summary["torch"]["median_s"]
            summary["segments"] = segments
            results["lengths"][f"{seconds:g}"] = summary
            _print_length(seconds, summary, args.repeat)

        if not args.no_profile:
            seconds = args.seconds[0]
            profile = {name: side(name, seconds, "--profile") for name in ("torch", "ours")}
            results["profile"] = {"seconds": seconds, **{
                name: {k: p[k] for k in ("separate_s", "stages", "parallel")}
                for name, p in profile.items()}}
            _print_profile(results["profile"])
            if args.plot:
                _plot(results["profile"], args.plot)
    results["load_after"] = os.getloadavg()
    print(f"{args.arch}: load average before {results['load_before'][0]:.1f}, "
          f"after {results['load_after'][0]:.1f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)


def _print_length(seconds, summary, repeat):
    print(f"{seconds:g} s stereo, {summary['segments']} segments, median of {repeat}:")
    for name, label in (("torch", "PyTorch demucs"), ("ours", "numba-demucs")):
        s = summary[name]
        print(f"  {label:15s} {s['median_s']:7.2f} s  {s['gflops']:6.1f} GFLOP/s "
              f"({s['peak_fraction'] * 100:4.1f}% of sgemm peak)  peak RSS {s['peak_rss_mib']:.0f} MiB")
    if "ours_jobs1" in summary:
        s = summary["ours_jobs1"]
        print(f"  {'ours, jobs=1':15s} {s['median_s']:7.2f} s  {s['gflops']:6.1f} GFLOP/s "
              f"({s['peak_fraction'] * 100:4.1f}% of sgemm peak)  peak RSS {s['peak_rss_mib']:.0f} MiB"
              "  (one segment at a time, BLAS on every core)")
    print(f"  ratio ours / PyTorch: time {summary['ratio']:.2f}, peak RSS "
          f"{summary['ours']['peak_rss_mib'] / summary['torch']['peak_rss_mib']:.2f}", flush=True)


def _stage_walls(side):
    """Stage times as seconds of wall time: ours runs ``parallel`` segments at once, so its
    per-call times (summed over threads) are divided by that; "other" is the rest of the
    wall time (apply_model's own work, normalisation, idle cores at the end)."""
    walls = {k: v / side["parallel"] for k, v in side["stages"].items() if k != "other"}
    walls["other"] = max(0.0, side["separate_s"] - sum(walls.values()))
    return walls


def _print_profile(profile):
    print(f"per stage, one {profile['seconds']:g} s run each (seconds of wall time):")
    walls = {name: _stage_walls(profile[name]) for name in ("torch", "ours")}
    for stage in STAGES:
        print(f"  {stage:12s} PyTorch {walls['torch'][stage]:6.2f}  ours {walls['ours'][stage]:6.2f}")


def _plot(profile, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    walls = {name: _stage_walls(profile[name]) for name in ("torch", "ours")}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    positions = range(len(STAGES))
    for offset, (name, label) in zip((-width / 2, width / 2),
                                      (("torch", "PyTorch demucs"), ("ours", "numba-demucs"))):
        ax.bar([p + offset for p in positions], [walls[name][s] for s in STAGES], width, label=label)
    ax.set_xticks(list(positions), ["STFT/iSTFT", "encoders", "transformer", "decoders", "other"])
    ax.set_ylabel("seconds (wall)")
    ax.set_title(f"Time per stage, {profile['seconds']:g} s stereo track, shifts=0")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
