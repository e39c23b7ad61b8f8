"""Hostile safetensors and bag yamls, second round: dtypes without a numpy type, JSON and
yaml nested past the recursion limit, "billion laughs" aliases, malformed structures.

The safetensors cases start from a small HTDemucs written by safetensors' own writer in
demucs 4.1's layout and change one thing. The cases that could hang or take gigabytes run
in a subprocess with an address-space limit and a timeout.
"""
import json
import subprocess
import sys
from fractions import Fraction

import pytest
import torch
from safetensors.torch import load_file, save_file

from numba_demucs.checkpoint import parse_bag, read_safetensors
from numba_demucs.debug import reference
from numba_demucs.errors import CheckpointError

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 4), t_layers=1, bottom_channels=16,
            dconv_mode=3)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    folder = tmp_path_factory.mktemp("st")
    path = reference.save_safetensors(reference.build_model("htdemucs", seed=4, **TINY), folder)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    return path, load_file(str(path)), metadata


def _rewrite(tmp_path, original, tensors=None, **metadata):
    _, state, meta = original
    path = tmp_path / "edited.safetensors"
    save_file(tensors or state, str(path), metadata={**meta, **metadata})
    return path


def test_the_original_loads(original):
    assert read_safetensors(original[0]).klass == "demucs.htdemucs.HTDemucs"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
                                   torch.complex64])
def test_dtypes_without_a_numpy_type_are_refused_by_name(tmp_path, original, dtype):
    state = dict(original[1])
    state["encoder.0.conv.weight"] = state["encoder.0.conv.weight"].to(dtype)
    path = _rewrite(tmp_path, original, state)
    with pytest.raises(CheckpointError, match=f"^{path}: tensor 'encoder.0.conv.weight' has dtype "
                                              r"'(BF16|F8_E4M3|F8_E5M2|C64)', which this reader"):
        read_safetensors(path)


@pytest.mark.parametrize("field,text,message", [
    ("args", "[" * 100_000 + "]" * 100_000, "RecursionError"),
    ("kwargs", '{"a": ' * 100_000 + "1" + "}" * 100_000, "RecursionError"),
    ("kwargs", '{"segment": {"_type": "fraction", "numerator": 1, "denominator": 0}}',
     "invalid fraction"),
    ("kwargs", '{"segment": {"_type": "fraction", "numerator": "1e9999", "denominator": 1}}',
     "ValueError"),
    ("structure", '{"_list": ' * 5_000 + "1" + "}" * 5_000, "RecursionError"),
    ("structure", '{"_dict": [["a", {"_tensor": "not.there"}]]}', "KeyError: 'not.there'"),
    ("structure", '{"_dict": [1, 2]}', "TypeError"),
    ("structure", '{"_tensor": [1]}', "TypeError"),
])
def test_malformed_metadata_is_one_clean_error(tmp_path, original, field, text, message):
    path = _rewrite(tmp_path, original, **{field: text})
    with pytest.raises(CheckpointError, match=f"^{path}: malformed metadata .*{message}"):
        read_safetensors(path)


LIMITED = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from numba_demucs.checkpoint import parse_bag
from numba_demucs.errors import NumbaDemucsError
start = time.perf_counter()
try:
    parse_bag(sys.argv[1])
    print("LOADED")
except NumbaDemucsError as error:
    print(f"{time.perf_counter() - start:.3f}", error)
"""


def _parse_in_a_box(path):
    """parse_bag in a subprocess under a 3 GiB address-space limit and a 120 s timeout."""
    result = subprocess.run([sys.executable, "-c", LIMITED, str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    seconds, message = result.stdout.strip().split(" ", 1)
    return float(seconds), message


LAUGHS = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]


@pytest.mark.parametrize("tail,message", [
    ("models: *a9", "bag member [[[...], [...],"),
    ("models: [a]\nweights: [*a9]", "'weights' row 0 must be"),
    ("models: [a]\nsegment: *a9", "'segment' must be a positive number"),
])
def test_billion_laughs_is_refused_quickly_in_bounded_memory(tmp_path, tail, message):
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(LAUGHS) + "\n" + tail + "\n")  # 9^10 items if expanded
    seconds, text = _parse_in_a_box(path)
    assert text.startswith(f"{path}: {message}") and len(text) < len(str(path)) + 400, text
    assert seconds < 5.0


def test_yaml_nested_past_the_recursion_limit(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("models: " + "[" * 30_000 + "]" * 30_000 + "\n")
    seconds, text = _parse_in_a_box(path)
    assert text.startswith(f"{path}: not a valid bag yaml (maximum recursion depth"), text
    big = tmp_path / "big.yaml"
    big.write_text("models: [a]\n" + "#" * 70_000 + "\n")
    with pytest.raises(CheckpointError, match=f"^{big}: 70013 bytes is not a bag yaml"):
        parse_bag(big)
