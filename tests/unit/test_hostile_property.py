"""Property test (issue 19): a small real checkpoint (written by demucs' code), a dump and a
bag yaml, mutated at random (bytes flipped, inserted, deleted, truncated), with a fixed seed
and a bounded number of examples. The only allowed outcomes: the file loads, or a
NumbaDemucsError whose message names the file. Anything else (another exception, a crash)
fails the test with the mutation that caused it."""
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, seed, settings
from hypothesis import strategies as st

from numba_demucs import load_model
from numba_demucs.debug import reference
from numba_demucs.debug.traces import Trace
from numba_demucs.errors import NumbaDemucsError

TINY = dict(channels=4, dconv_comp=4, segment=Fraction(1, 4), t_layers=1, bottom_channels=8,
            dconv_mode=3, depth=2)
EXAMPLES = 60
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    th = reference.save_th(reference.build_model("htdemucs", seed=7, **TINY), folder, "eeee0001")
    (folder / "bag.yaml").write_text("models: [eeee0001, eeee0001]\n"
                                     "weights: [[1, 0, 1, 1], [1, 1, 0, 1]]\nsegment: 0.2\n")
    rng = np.random.default_rng(0)
    points = [("input.mix", {}, rng.standard_normal((2, 9)).astype(np.float32)),
              ("encoder.0", {"segment": 0}, rng.standard_normal((3, 5)).astype(np.float32))]
    dump = Trace.from_arrays({"producer": "t", "model": "M", "checkpoint_sha256": None,
                              "input_sha256": None, "dtype": "float32"}, points,
                             keep_tensors=True).save(folder / "d.jsonl")
    return {"th": th, "bag": folder / "bag.yaml", "dump": dump}


# one edit: (kind, position as a fraction of the length, bytes)
EDIT = st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                 st.floats(0.0, 1.0, allow_nan=False), st.binary(min_size=1, max_size=8))
EDITS = st.lists(EDIT, min_size=1, max_size=4)


def mutate(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for kind, where, payload in edits:
        at = min(int(where * len(data)), max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[at] ^= payload[0] or 1
        elif kind == "set":
            data[at:at + len(payload)] = payload
        elif kind == "insert":
            data[at:at] = payload
        elif kind == "delete":
            del data[at:at + len(payload)]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


def _outcome(path: Path, load):
    """None if it loaded; the message if refused cleanly; re-raises anything else."""
    try:
        load(path)
    except NumbaDemucsError as error:
        assert path.name in str(error), f"the error does not name {path.name}: {error}"
        event(f"refused: {type(error).__name__}")
        return str(error)
    event("loaded")
    return None


def _load_trace(path):
    with Trace.load(path) as trace:
        for position in range(len(trace)):
            trace.tensor(position)


def mutate_member(archive_bytes: bytes, suffix: str, edits) -> bytes:
    """The zip with its member ending in ``suffix`` mutated and its CRC made right again, so
    the edit reaches the reader behind the zip layer (the unpickler, the .npy parser)."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as source, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info.filename, mutate(data, edits) if info.filename.endswith(suffix)
                            else data)
    return out.getvalue()


@seed(19)
@SETTINGS
@given(edits=EDITS, where=st.sampled_from(["file", "data.pkl"]))
def test_mutated_checkpoint(originals, edits, where):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "eeee0001.th"
        data = originals["th"].read_bytes()
        path.write_bytes(mutate(data, edits) if where == "file"
                         else mutate_member(data, "data.pkl", edits))
        _outcome(path, load_model)


@seed(19)
@SETTINGS
@given(edits=EDITS)
@example(edits=[("insert", 0.0, b"# a comment\n")])  # still a bag: it must load
def test_mutated_bag(originals, edits):
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(originals["th"], Path(folder) / originals["th"].name)
        path = Path(folder) / "bag.yaml"
        path.write_bytes(mutate(originals["bag"].read_bytes(), edits))
        try:
            load_model(path)
            event("loaded")
        except NumbaDemucsError as error:
            # a bag's error names the yaml, or the member file it led to
            assert "bag.yaml" in str(error) or "eeee0001" in str(error), str(error)
            event(f"refused: {type(error).__name__}")


@seed(19)
@SETTINGS
@given(edits=EDITS, which=st.sampled_from(["jsonl", "npz", "0.npy", "1.npy"]))
def test_mutated_dump(originals, edits, which):
    with tempfile.TemporaryDirectory() as folder:
        for suffix in ("jsonl", "npz"):
            shutil.copy(originals["dump"].with_suffix(f".{suffix}"), Path(folder) / f"d.{suffix}")
        target = Path(folder) / f"d.{which if which in ('jsonl', 'npz') else 'npz'}"
        target.write_bytes(mutate(target.read_bytes(), edits) if which in ("jsonl", "npz")
                           else mutate_member(target.read_bytes(), which, edits))
        try:
            _load_trace(Path(folder) / "d.jsonl")
            event("loaded")
        except NumbaDemucsError as error:
            assert "d.jsonl" in str(error) or "d.npz" in str(error), str(error)
            event(f"refused: {type(error).__name__}")
