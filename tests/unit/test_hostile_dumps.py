"""Hostile dumps: every .npz failure and every record field of the wrong kind is one
DumpError naming the file, never a traceback and never a diff that says "no divergence"."""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from numba_demucs.debug.dumpfile import DumpError, tensors_path
from numba_demucs.debug.traces import Trace

HEADER = {"producer": "test", "model": "M", "sources": ["a", "b"], "checkpoint_sha256": "aa",
          "input_sha256": "bb", "dtype": "float32"}


def _points():
    rng = np.random.default_rng(0)
    return [("input.mix", {}, rng.standard_normal((2, 7)).astype(np.float32)),
            ("encoder.0", {}, rng.standard_normal((3, 4)).astype(np.float32))]


@pytest.fixture
def dump(tmp_path):
    return Trace.from_arrays(HEADER, _points(), keep_tensors=True).save(tmp_path / "d.jsonl")


def _tensors_of(path):
    with Trace.load(path) as trace:
        return [trace.tensor(i) for i in range(len(trace))]


def _rewrite_npz(dump, members):
    """The dump's .npz with some members replaced (name -> bytes), the others kept."""
    npz = tensors_path(dump)
    with zipfile.ZipFile(npz) as archive:
        kept = {name: archive.read(name) for name in archive.namelist()}
    kept.update(members)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in kept.items():
            archive.writestr(name, data)
    npz.write_bytes(buffer.getvalue())


def _npy(array=None, header=None):
    buffer = io.BytesIO()
    if header is None:
        np.lib.format.write_array(buffer, array, allow_pickle=True)
        return buffer.getvalue()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + b"\0" * 64


def test_the_original_loads(dump):
    assert [t.shape for t in _tensors_of(dump)] == [(2, 7), (3, 4)]


@pytest.mark.parametrize("case,message", [
    ("garbage", "cannot be read .*BadZipFile"),
    ("truncated", "cannot be read"),
    ("object array", "0.npy: dtype object is not a tensor's"),
    ("huge header", "0.npy: its header promises 8000000000000 bytes"),
    ("wrong shape", "the tensor of record 0 .'input.mix'. has shape .5,., the record says .2, 7."),
    ("flipped byte", "cannot be read"),
    ("npy version", "cannot be read|is not written here"),
])
def test_npz_failures_are_one_clean_error(dump, case, message):
    npz = tensors_path(dump)
    if case == "garbage":
        npz.write_bytes(b"not a zip at all" * 10)
    elif case == "truncated":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif case == "object array":
        _rewrite_npz(dump, {"0.npy": _npy(np.array([{"a": 1}, None], dtype=object))})
    elif case == "huge header":
        _rewrite_npz(dump, {"0.npy": _npy(header={"descr": "<f8", "fortran_order": False,
                                                  "shape": (10 ** 12,)})})
    elif case == "wrong shape":
        _rewrite_npz(dump, {"0.npy": _npy(np.zeros(5, np.float32))})
    elif case == "flipped byte":
        # a deflated member whose data no longer matches its CRC
        data = bytearray(npz.read_bytes())
        with zipfile.ZipFile(npz) as archive:
            info = archive.getinfo("0.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 80
        data[start] ^= 0xFF
        npz.write_bytes(bytes(data))
    elif case == "npy version":
        _rewrite_npz(dump, {"0.npy": b"\x93NUMPY\x09\x00" + b"\0" * 64})
    with pytest.raises(DumpError, match=f"^{npz}: .*({message})"):
        _tensors_of(dump)


def _edit_line(dump, number, **changes):
    lines = dump.read_text().splitlines()
    value = json.loads(lines[number])
    value.update(changes)
    lines[number] = json.dumps(value)
    dump.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("line,changes,message", [
    (0, {"records": "2"}, "header records must be a count"),
    (0, {"records": True}, "header records must be a count"),
    (0, {"tensors": "../elsewhere.npz"}, "header tensors must be null or the name of an .npz"),
    (0, {"tensors": "/etc/passwd"}, "header tensors must be null or the name of an .npz"),
    (0, {"tensors": 5}, "header tensors must be null or the name of an .npz"),
    (1, {"count": "14"}, "count: expected an integer"),
    (1, {"count": 15}, "count 15 is not the size of shape"),
    (1, {"shape": [-2, -7]}, "negative shape or count"),
    (1, {"shape": "2x7"}, "shape must be a list of integers"),
    (1, {"nan": -1}, "negative shape or count"),
    (1, {"argmin": 99}, "argmin 99 outside the 14 elements"),
    (1, {"argmax_index": [5, 0]}, r"argmax_index \[5, 0\] is not a position"),
    (1, {"mean": "0.5"}, "mean: .*'0.5'"),
    (1, {"mean": [1]}, "mean: expected a number"),
    (1, {"context": []}, "context must be a dict"),
    (1, {"name": 3}, "name must be a non-empty string"),
    (1, {"dtype": None}, "dtype must be a string"),
])
def test_fields_of_the_wrong_kind_are_one_clean_error(dump, line, changes, message):
    _edit_line(dump, line, **changes)
    with pytest.raises(DumpError, match=f"^{dump}:.*{message}"):
        _tensors_of(dump)


def test_debug_diff_on_a_bad_dump_is_one_line_and_no_verdict(dump, tmp_path):
    good = Trace.from_arrays(HEADER, _points(), keep_tensors=True).save(tmp_path / "g.jsonl")
    _rewrite_npz(dump, {"1.npy": _npy(np.zeros((4, 3), np.float32))})
    result = subprocess.run([sys.executable, "-m", "numba_demucs.cli", "debug", "diff", str(good),
                             str(dump)], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no divergence" not in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"numba-demucs: error: {tensors_path(dump)}: the tensor of record 1 ('encoder.0') has "
        "shape (4, 3), the record says (3, 4)"]
