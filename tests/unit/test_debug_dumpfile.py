"""Dump files: round trip, tensors, and the refusals (format, version, truncation, bad lines)."""
import json
import math
import os

import numpy as np
import pytest

from numba_demucs import NumbaDemucsError
from numba_demucs.debug.dumpfile import (DumpError, read_dump, sha256_of_array, sha256_of_file,
                                         tensors_path, write_dump)
from numba_demucs.debug.stats import tensor_stats

HEADER = {"producer": "numba-demucs 0.1.0", "model": "htdemucs", "checkpoint_sha256": "ab" * 32,
          "input_sha256": "cd" * 32, "dtype": "float32"}


def _records():
    return [
        tensor_stats("input.mix", np.array([[1.0, -2.0]], dtype=np.float32), {"segment": 0}, 0),
        tensor_stats("encoder.0", np.array([np.nan, 1.0, np.inf]), {"segment": 0}, 1),
        tensor_stats("encoder.1", np.array([np.nan, np.nan]), {"segment": 0}, 2),
    ]


def _strict_loads(line):
    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")
    return json.loads(line, parse_constant=refuse)


def test_round_trip_and_header(tmp_path):
    records = _records()
    records[0]["sum"] = math.inf      # a statistic may itself overflow; it must survive the trip
    records[0]["mean"] = -math.inf
    records[1]["std"] = math.nan
    path = write_dump(tmp_path / "ours.jsonl", {**HEADER, "segment_only": True}, records)
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    header = _strict_loads(lines[0])
    assert header["format"] == "numba-demucs-dump" and header["version"] == 1
    assert header["std"] == "population" and header["records"] == 3 and header["tensors"] is None
    assert header["segment_only"] is True and header["model"] == "htdemucs"
    line1 = _strict_loads(lines[1])
    assert line1["sum"] == "inf" and line1["mean"] == "-inf"
    assert _strict_loads(lines[2])["std"] == "nan"
    assert _strict_loads(lines[3])["min"] is None

    dump = read_dump(path)
    assert dump.header == header
    assert dump.records[0]["sum"] == math.inf and dump.records[0]["mean"] == -math.inf
    assert math.isnan(dump.records[1]["std"])
    assert dump.records[1]["nan"] == 1 and dump.records[1]["inf"] == 1
    assert dump.records[2]["mean"] is None
    assert dump.records[0]["context"] == {"segment": 0} and dump.records[0]["argmin_index"] == [0, 1]
    assert dump.records[0]["max"] == 1.0
    assert not dump.has_tensors and dump.tensor(0) is None
    # no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.jsonl"]


def test_tensors_in_sibling_npz(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([np.nan, 2.0])
    path = write_dump(tmp_path / "ref.jsonl", HEADER, _records(), tensors=[a, b, None])
    assert tensors_path(path) == tmp_path / "ref.npz" and tensors_path(path).exists()
    with read_dump(path) as dump:
        assert dump.header["tensors"] == "ref.npz"
        np.testing.assert_array_equal(dump.tensor(0), a)
        assert dump.tensor(0).dtype == np.float32
        np.testing.assert_array_equal(dump.tensor(1), b)
        assert dump.tensor(2) is None
    # a mapping works as well
    write_dump(tmp_path / "map.jsonl", HEADER, _records(), tensors={2: a})
    dump = read_dump(tmp_path / "map.jsonl")
    assert dump.tensor(0) is None and dump.tensor(2).shape == (2, 3)
    dump.close()


def test_stale_npz_is_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    write_dump(path, HEADER, _records(), tensors={0: np.zeros(2)})
    old = tensors_path(path).read_bytes()
    write_dump(path, HEADER, _records(), tensors={0: np.ones(2)})
    tensors_path(path).write_bytes(old)
    with pytest.raises(DumpError, match="another dump"):
        read_dump(path).tensor(0)


def test_missing_npz_is_an_error_not_none(tmp_path):
    path = write_dump(tmp_path / "d.jsonl", HEADER, _records(), tensors={0: np.zeros(2)})
    tensors_path(path).unlink()
    with pytest.raises(DumpError, match="d.npz"):
        read_dump(path).tensor(0)


def _write_lines(path, lines, end="\n"):
    path.write_text("\n".join(lines) + end)
    return path


def test_unknown_version_and_format(tmp_path):
    path = write_dump(tmp_path / "d.jsonl", HEADER, _records())
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    v2 = _write_lines(tmp_path / "v2.jsonl", [json.dumps({**header, "version": 2})] + lines[1:])
    with pytest.raises(DumpError, match=r"v2\.jsonl:1: dump format version 2; .*version 1 only") as err:
        read_dump(v2)
    assert isinstance(err.value, NumbaDemucsError)
    other = _write_lines(tmp_path / "other.jsonl", [json.dumps({**header, "format": "something"})] + lines[1:])
    with pytest.raises(DumpError, match=r"other\.jsonl:1: not a numba-demucs dump"):
        read_dump(other)
    csv = _write_lines(tmp_path / "x.jsonl", ["a,b,c", "1,2,3"])
    with pytest.raises(DumpError, match=r"x\.jsonl:1: not a JSON line"):
        read_dump(csv)


def test_truncated_mid_line(tmp_path):
    path = write_dump(tmp_path / "d.jsonl", HEADER, _records())
    data = path.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) - 1) + 20  # 20 bytes into the 4th line
    path.write_bytes(data[:cut])
    with pytest.raises(DumpError, match=r"d\.jsonl:4: .*truncated"):
        read_dump(path)


def test_truncated_at_a_line_boundary(tmp_path):
    path = write_dump(tmp_path / "d.jsonl", HEADER, _records())
    lines = path.read_text().splitlines()
    _write_lines(path, lines[:-1])
    with pytest.raises(DumpError, match=r"d\.jsonl:4: header announces 3 records, the file holds 2"):
        read_dump(path)


def test_bad_line_in_the_middle_and_empty_file(tmp_path):
    path = write_dump(tmp_path / "d.jsonl", HEADER, _records())
    lines = path.read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    _write_lines(path, lines)
    with pytest.raises(DumpError, match=r"d\.jsonl:3: not a JSON line"):
        read_dump(path)
    (tmp_path / "e.jsonl").write_bytes(b"")
    with pytest.raises(DumpError, match=r"e\.jsonl: empty file"):
        read_dump(tmp_path / "e.jsonl")
    with pytest.raises(DumpError, match="nope.jsonl: cannot read"):
        read_dump(tmp_path / "nope.jsonl")


def test_record_missing_keys_and_bad_stat(tmp_path):
    path = write_dump(tmp_path / "d.jsonl", HEADER, _records())
    lines = path.read_text().splitlines()
    rec = json.loads(lines[1])
    del rec["l2"]
    _write_lines(path, [lines[0], json.dumps(rec)] + lines[2:])
    with pytest.raises(DumpError, match=r"d\.jsonl:2: record lacks l2"):
        read_dump(path)
    rec = json.loads(lines[1])
    rec["max"] = "big"
    _write_lines(path, [lines[0], json.dumps(rec)] + lines[2:])
    with pytest.raises(DumpError, match=r"d\.jsonl:2: max"):
        read_dump(path)


def test_writer_refusals_leave_the_old_dump_intact(tmp_path):
    path = write_dump(tmp_path / "d.jsonl", HEADER, _records())
    before = path.read_bytes()
    with pytest.raises(DumpError, match="lacks input_sha256"):
        write_dump(path, {k: v for k, v in HEADER.items() if k != "input_sha256"}, _records())
    with pytest.raises(DumpError, match="version"):
        write_dump(path, {**HEADER, "version": 7}, _records())
    bad = _records()
    bad[1]["context"] = {"segment": object()}
    with pytest.raises(DumpError, match="record 1 .*encoder.0"):
        write_dump(path, HEADER, bad)
    with pytest.raises(DumpError, match="tensor for record 5"):
        write_dump(path, HEADER, _records(), tensors={5: np.zeros(1)})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl"]


def test_sha256_of_file(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    # FIPS 180-2 test vector
    assert sha256_of_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sha256_of_array():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    h = sha256_of_array(a)
    assert len(h) == 64
    assert sha256_of_array(np.asfortranarray(a)) == h                 # layout does not matter
    assert sha256_of_array(a.astype(">f4")) == h                      # nor byte order
    assert sha256_of_array(a.astype(np.float64)) != h                 # dtype does
    assert sha256_of_array(a.reshape(4, 3)) != h                      # and shape does
    b = a.copy()
    b[2, 3] = np.nextafter(b[2, 3], np.float32(100))
    assert sha256_of_array(b) != h                                    # one ulp anywhere does
