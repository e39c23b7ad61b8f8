"""The Trace value: built from records, checked, looked up, saved and loaded unchanged."""
import json
import math

import numpy as np
import pytest

from numba_demucs import NumbaDemucsError
from numba_demucs.debug.diff import diff
from numba_demucs.debug.dumpfile import DumpError, read_dump, tensors_path
from numba_demucs.debug.stats import tensor_stats
from numba_demucs.debug.traces import Trace, TraceError

HEADER = {"producer": "test", "model": "HTDemucs[drums,bass,other,vocals]",
          "sources": ["drums", "bass", "other", "vocals"], "checkpoint_sha256": "aa",
          "input_sha256": "bb", "dtype": "float32", "mode": "segment"}


def _points(seed=0):
    rng = np.random.default_rng(seed)
    with_nan = rng.standard_normal(6)
    with_nan[2] = np.nan
    return [("input.mix", {"segment": 0}, rng.standard_normal((2, 7)).astype(np.float32)),
            ("encoder.0", {"segment": 0}, rng.standard_normal((3, 4, 5)).astype(np.float32)),
            ("encoder.0", {"segment": 1}, with_nan),
            ("output.sources", {"segment": 1}, np.zeros((4, 2, 7), dtype=np.float32))]


def test_from_arrays_makes_the_records_of_tensor_stats():
    trace = Trace.from_arrays(HEADER, _points(), keep_tensors=True)
    assert len(trace) == 4 and trace.has_tensors
    for i, (name, context, array) in enumerate(_points()):
        assert trace.records[i] == tensor_stats(name, array, context, index=i)
        np.testing.assert_array_equal(trace.tensor(i), array)
    assert trace.records[2]["nan"] == 1
    assert not Trace.from_arrays(HEADER, _points()).has_tensors


@pytest.mark.parametrize("keep_tensors", [True, False])
def test_save_and_load_give_an_equal_trace(tmp_path, keep_tensors):
    trace = Trace.from_arrays(HEADER, _points(), keep_tensors=keep_tensors)
    path = trace.save(tmp_path / "t.jsonl")
    assert tensors_path(path).exists() is keep_tensors
    with Trace.load(path) as loaded:
        assert loaded == trace
        assert loaded.header == HEADER            # the dump's own keys stay in the file
        assert loaded.origin == str(path)
        assert loaded.sources == ["drums", "bass", "other", "vocals"]
        if keep_tensors:
            assert loaded.tensor(1).dtype == np.float32
            assert math.isnan(loaded.tensor(2)[2])
    # a changed value, record or tensor makes them unequal
    other = Trace.from_arrays(HEADER, _points(seed=1), keep_tensors=keep_tensors)
    assert other != trace
    assert Trace(dict(HEADER, dtype="float64"), trace.records) != Trace(HEADER, trace.records)


def test_diff_of_traces_equals_diff_of_their_saved_copies(tmp_path):
    reference = Trace.from_arrays(HEADER, _points(), keep_tensors=True)
    changed = _points()
    changed[1][2][1, 2, 3] *= 1.01                      # one element of encoder.0, segment 0
    ours = Trace.from_arrays(dict(HEADER, producer="other"), changed, keep_tensors=True)
    in_memory = diff(reference, ours)
    assert in_memory.first_divergence == "encoder.0"
    assert in_memory.first_divergence_context == {"segment": 0}
    loaded = diff(Trace.load(reference.save(tmp_path / "r.jsonl")),
                  Trace.load(ours.save(tmp_path / "o.jsonl")))
    assert loaded.to_dict() == in_memory.to_dict()
    # saved without tensors, only the statistics are compared, in memory as from disk
    stats_only = diff(Trace.load(reference.save(tmp_path / "r2.jsonl", tensors=False)),
                      Trace.load(ours.save(tmp_path / "o2.jsonl", tensors=False)))
    assert stats_only.to_dict() == diff(Trace(reference.header, reference.records),
                                        Trace(ours.header, ours.records)).to_dict()
    assert stats_only.points[1]["tensor"] is None and in_memory.points[1]["tensor"] is not None


def test_header_sources_are_a_list_and_the_file_keys_are_left_out():
    trace = Trace({**HEADER, "sources": ("a", "b"), "format": "numba-demucs-dump", "version": 1,
                   "std": "population", "records": 0, "tensors": None, "dump_id": "x"}, [])
    assert trace.header["sources"] == ["a", "b"] and trace.sources == ["a", "b"]
    assert set(trace.header) == set(HEADER)
    assert Trace({k: v for k, v in HEADER.items() if k != "sources"}, []).sources is None
    with pytest.raises(TraceError, match="sources must be a list of stem names"):
        Trace(dict(HEADER, sources="drums,bass"), [])


def test_lookups_by_name_and_context():
    trace = Trace.from_arrays(HEADER, _points(), keep_tensors=True)
    assert trace.positions("encoder.0") == [1, 2]
    assert trace.position("encoder.0", {"segment": 1}) == 2
    assert trace.record("input.mix", {"segment": 0})["shape"] == [2, 7]
    assert trace.tensor_of("output.sources", {"segment": 1}).shape == (4, 2, 7)
    assert [name for name, _, _ in trace.points()] == ["input.mix", "encoder.0", "encoder.0",
                                                       "output.sources"]
    with pytest.raises(KeyError, match="'encoder.0' under context {'segment': 3}: 0 record"):
        trace.position("encoder.0", {"segment": 3})


def test_bad_records_and_headers_are_refused_by_name():
    records = Trace.from_arrays(HEADER, _points()).records
    with pytest.raises(TraceError, match=r"record 1 \('encoder.0'\) lacks l2"):
        Trace(HEADER, [records[0], {k: v for k, v in records[1].items() if k != "l2"}])
    with pytest.raises(TraceError, match=r"record 0 \('input.mix'\): shape"):
        Trace(HEADER, [dict(records[0], shape="2x7")])
    with pytest.raises(TraceError, match=r"record 0 \('input.mix'\): mean: expected a number"):
        Trace(HEADER, [dict(records[0], mean="0.1")])
    with pytest.raises(TraceError, match="record 0: expected a dict"):
        Trace(HEADER, [("input.mix", {}, None)])
    with pytest.raises(TraceError, match="trace header lacks checkpoint_sha256, input_sha256"):
        Trace({"producer": "p", "model": "m", "dtype": "float32"}, records)
    with pytest.raises(TraceError, match="std 'unbiased'"):
        Trace(dict(HEADER, std="unbiased"), records)
    with pytest.raises(TraceError, match="not JSON-serialisable"):
        Trace(dict(HEADER, seed=object()), records)
    with pytest.raises(TraceError, match="3 tensors for 4 records"):
        Trace(HEADER, records, [None, None, None])
    with pytest.raises(TraceError, match=r"tensor for record 0 \('input.mix'\) has shape \(7, 2\)"):
        Trace(HEADER, records, {0: np.zeros((7, 2))})
    assert issubclass(TraceError, NumbaDemucsError)
    # numpy scalars (an importer's) are taken and turned into plain Python values
    trace = Trace(HEADER, [dict(records[0], mean=np.float32(0.5), count=np.int64(14))])
    assert type(trace.records[0]["mean"]) is float and type(trace.records[0]["count"]) is int


def test_a_dump_whose_record_is_not_a_record_names_the_file(tmp_path):
    path = Trace.from_arrays(HEADER, _points()).save(tmp_path / "d.jsonl")
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    record["shape"] = "3x4x5"
    path.write_text("\n".join([lines[0], lines[1], json.dumps(record)] + lines[3:]) + "\n")
    with pytest.raises(DumpError, match=r"d\.jsonl: record 1 \('encoder.0'\): shape"):
        Trace.load(path)


# A version-1 dump as the code before the Trace value wrote it: no "sources" in the header.
OLD_DUMP = "\n".join([
    '{"format": "numba-demucs-dump", "version": 1, "producer": "numba-demucs 0.1.0", '
    '"model": "HTDemucs[drums,bass,other,vocals]", "checkpoint_sha256": "ab", "input_sha256": "cd", '
    '"dtype": "float32", "mode": "segment", "std": "population", "records": 1, "tensors": null, '
    '"dump_id": "0f"}',
    '{"name": "input.mix", "context": {"segment": 0}, "index": 0, "shape": [1, 2], "dtype": "float32", '
    '"count": 2, "min": -2.0, "max": 1.0, "mean": -0.5, "std": 1.5, "sum": -1.0, "l2": "inf", '
    '"argmin": 1, "argmax": 0, "argmin_index": [0, 1], "argmax_index": [0, 0], "nan": 0, "inf": 0}',
]) + "\n"


def test_dumps_written_before_the_trace_value_still_load(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(OLD_DUMP)
    trace = Trace.load(path)
    assert trace.sources is None and trace.header["model"] == "HTDemucs[drums,bass,other,vocals]"
    assert trace.records == read_dump(path).records
    assert trace.records[0]["l2"] == math.inf and not trace.has_tensors
    assert diff(trace, trace).ok
