"""Hostile constructor arguments: a checkpoint written by demucs with one argument edited.

Each bad value must be refused with a CheckpointError naming the file, the argument and the
value, before the model is built; the ones that would loop or allocate hugely (depth 10^6,
channels 10^9, nfft 2^40 ...) are loaded in a subprocess under an address-space limit and
a timeout. Every published architecture's arguments stay accepted.
"""
import dataclasses
import subprocess
import sys
from fractions import Fraction

import pytest

import numba_demucs
from numba_demucs.checkpoint import read_package
from numba_demucs.debug import reference
from numba_demucs.errors import CheckpointError
from numba_demucs.models.config import DemucsConfig, HDemucsConfig, HTDemucsConfig

from .test_hostile_th import write_th

FAMILIES = {
    # architecture, the overrides that make it tiny
    "HTDemucs": ("htdemucs", dict(channels=8, dconv_comp=4, segment=Fraction(1, 4), t_layers=1,
                                  bottom_channels=16, dconv_mode=3)),
    "HDemucs": ("hdemucs_mmi", dict(channels=4, depth=3, segment=1)),
    "Demucs": ("demucs_9a6b4851", dict(channels=4, depth=3, segment=1)),
}

# bad values every family must refuse (sources is the positional argument demucs saves)
COMMON = [
    ("depth", "2"), ("depth", 2.0), ("depth", True), ("depth", 0), ("depth", -1),
    ("stride", 0), ("stride", 1.5), ("kernel_size", -8), ("samplerate", 0),
    ("samplerate", 44100.0), ("samplerate", None), ("audio_channels", 0), ("channels", 0),
    ("channels", 8.0), ("sources", 5), ("sources", []), ("sources", ["a", "a"]),
    ("sources", "drums"), ("sources", ["a", 3]), ("sources", ["../up", "b"]),
    ("segment", 0), ("segment", -1.0), ("segment", float("inf")), ("segment", float("nan")),
    ("segment", "10"), ("segment", Fraction(-1, 2)), ("rewrite", 1), ("rewrite", "yes"),
    ("dconv_mode", 4), ("dconv_depth", 0), ("dconv_comp", 0), ("norm_groups", 0),
    ("context", -1), ("rescale", float("nan")), ("dconv_init", [1]),
]
HYBRID = [
    ("nfft", 1000), ("nfft", 0), ("nfft", 4096.0), ("growth", 0), ("growth", 2.0),
    ("channels_time", 0), ("multi_freqs", "0.1"), ("multi_freqs", [1.5]),
    ("freq_emb", -0.2), ("time_stride", 0), ("cac", 0), ("wiener_iters", -1),
]
SPECIFIC = {
    "HTDemucs": HYBRID + [
        ("t_layers", -1), ("t_heads", 0), ("t_dropout", 2.0), ("t_hidden_scale", 0),
        ("t_cape_glob_loc_scale", [1.0]), ("t_emb", 5), ("t_max_period", 0),
        ("t_norm_first", "no"), ("bottom_channels", -1), ("use_train_segment", None),
        ("t_sparsity", 1.5), ("t_lr", "fast"),
    ],
    "HDemucs": HYBRID + [("hybrid", "yes"), ("hybrid_old", 0), ("dconv_attn", -1)],
    "Demucs": [("growth", 0.0), ("growth", float("inf")), ("growth", True), ("lstm_layers", -1),
               ("normalize", "no"), ("glu", 1)],
}
# values that would make a reader loop or allocate without bound if let through
HUGE = [("depth", 10 ** 6), ("channels", 10 ** 9), ("segment", 10 ** 9), ("samplerate", 10 ** 12),
        ("kernel_size", 10 ** 9), ("stride", 10 ** 9), ("sources", ["s%d" % i for i in range(10 ** 5)]),
        ("segment", 10 ** 400)]
HUGE_SPECIFIC = {
    "HTDemucs": [("nfft", 1 << 40), ("t_layers", 10 ** 6), ("t_max_positions", 10 ** 12),
                 ("bottom_channels", 10 ** 9), ("t_heads", 10 ** 9)],
    "HDemucs": [("nfft", 1 << 40), ("growth", 10 ** 6)],
    "Demucs": [("growth", 1e6), ("lstm_layers", 10 ** 6)],
}
# within each argument's own range, but together wider or longer than the maxima
COMBINED = [({"channels": 4096, "depth": 12}, "make layers wider than"),
            ({"segment": 3600, "samplerate": 192000}, "make segments longer than")]


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("args")
    found = {}
    for family, (architecture, tiny) in FAMILIES.items():
        path = reference.save_th(reference.build_model(architecture, seed=2, **tiny), folder,
                                 "dddd0001")
        loaded = read_package(path)
        assert loaded.klass.endswith("." + family)
        found[family] = {"klass": loaded.klass, "args": loaded.args, "kwargs": loaded.kwargs,
                         "state": loaded.state}
    return found


def _edited(tmp_path, package, **changes):
    args, kwargs = list(package["args"]), dict(package["kwargs"])
    if "sources" in changes:
        args = []  # demucs saves the sources positionally
    kwargs.update(changes)
    name = "-".join(changes).replace("_", "") + ".th"
    return write_th(tmp_path / name, dict(package, args=tuple(args), kwargs=kwargs))


def _family_cases(common, specific):
    return [(family, name, value) for family in FAMILIES
            for name, value in common + specific[family]]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_unedited_files_load(tmp_path, packages, family):
    model = numba_demucs.load_model(write_th(tmp_path / "ok.th", packages[family]))
    assert type(model).__name__ == family
    assert model.sources == reference.FOUR_SOURCES


@pytest.mark.parametrize("family,name,value", _family_cases(COMMON, SPECIFIC),
                         ids=lambda v: repr(v)[:20])
def test_each_bad_argument_is_refused_by_name(tmp_path, packages, family, name, value):
    path = _edited(tmp_path, packages[family], **{name: value})
    with pytest.raises(CheckpointError) as error:
        numba_demucs.load_model(path)
    message = str(error.value)
    shown = repr(value)[:40]
    assert message.startswith(f"{path}: {family} argument {name}="), message
    assert shown in message or repr(value)[:77] in message, message
    assert len(message) < len(str(path)) + 200, message


@pytest.mark.parametrize("changes,text", COMBINED)
def test_arguments_that_together_exceed_the_maxima_are_refused(tmp_path, packages, changes, text):
    for family in FAMILIES:
        if family == "Demucs" and "channels" in changes:
            changes = dict(changes, growth=2.0)
        path = _edited(tmp_path, packages[family], **changes)
        with pytest.raises(CheckpointError, match=f"^{path}: {family} arguments .*{text}"):
            numba_demucs.load_model(path)


LIMITED = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import numba_demucs
from numba_demucs.errors import NumbaDemucsError
for path in sys.argv[1:]:
    start = time.perf_counter()
    try:
        numba_demucs.load_model(path)
        print("LOADED", path)
    except NumbaDemucsError as error:
        print(f"{time.perf_counter() - start:.3f}", type(error).__name__, str(error)[:300])
"""


def test_huge_arguments_are_refused_quickly_in_bounded_memory(tmp_path, packages):
    """One subprocess under a 3 GiB address-space limit and a 300 s timeout loads them all."""
    cases = _family_cases(HUGE, HUGE_SPECIFIC)
    paths = []
    for index, (family, name, value) in enumerate(cases):
        folder = tmp_path / str(index)
        folder.mkdir()
        paths.append(_edited(folder, packages[family], **{name: value}))
    result = subprocess.run([sys.executable, "-c", LIMITED, *map(str, paths)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(cases), result.stdout
    for (family, name, _), path, line in zip(cases, paths, lines):
        seconds, kind, message = line.split(" ", 2)
        assert kind == "CheckpointError", line
        assert message.startswith(f"{path}: {family} argument {name}="), line
        assert float(seconds) < 2.0, line


@pytest.mark.parametrize("config", [HTDemucsConfig, HDemucsConfig, DemucsConfig])
def test_every_argument_has_a_declared_check(config):
    assert set(config.ARGUMENTS) == {field.name for field in dataclasses.fields(config)}


@pytest.mark.parametrize("config,architectures", [
    (HTDemucsConfig, reference.ARCHITECTURES), (HDemucsConfig, reference.HDEMUCS_ARCHITECTURES),
    (DemucsConfig, reference.DEMUCS_ARCHITECTURES)])
def test_every_published_architecture_is_accepted(config, architectures):
    """The full-size arguments of every published file (and the libraries' defaults) pass."""
    for name, kwargs in architectures.items():
        built = config.from_arguments((), kwargs, name)
        assert built.sources == kwargs["sources"]
        defaults = config(sources=kwargs["sources"])
        for field in dataclasses.fields(config):
            assert field.name in kwargs or getattr(built, field.name) == getattr(defaults, field.name)
