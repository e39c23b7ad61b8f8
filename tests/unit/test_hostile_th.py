"""Hostile `.th` files: tensors rebuilt out of bounds, BUILD on the loader's own objects,
odd byte orders, fractions and memo indices that would hang or exhaust memory.

The files are written by a small pickler that emits the globals and persistent ids of
`torch.save`'s format by name, starting from the arrays of a checkpoint saved by demucs'
own code, so that each case differs from a loadable file by the one thing under test.
"""
import collections
import pickle
import struct
import zipfile
from fractions import Fraction

import numpy as np
import pytest

from numba_demucs import checkpoint
from numba_demucs.checkpoint import read_package
from numba_demucs.debug import reference
from numba_demucs.errors import CheckpointError, UnsafeCheckpointError

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 4), t_layers=1, bottom_channels=16,
            dconv_mode=3)


class Global:
    """A global emitted by module and name (never imported here)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self):  # pickle's save_reduce wants a callable
        raise AssertionError


class Storage:
    def __init__(self, key, kind, numel):
        self.key, self.kind, self.numel = key, kind, numel


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _Writer(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[Global] = _save_global

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", Global("torch", obj.kind), obj.key, "cpu", obj.numel)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, Tensor):
            return (Global("torch._utils", "_rebuild_tensor_v2"),
                    (obj.storage, obj.offset, tuple(obj.size), tuple(obj.stride), False,
                     collections.OrderedDict()))
        return NotImplemented


def _strides(shape):
    strides, step = [], 1
    for n in reversed(shape):
        strides.insert(0, step)
        step *= n
    return strides


def write_th(path, package, *, byteorder="little", edit=None, pickle_bytes=None):
    """``package`` (klass, args, kwargs, state of numpy arrays) as a torch zip;
    ``edit(tensors, storages)`` may change the tensors' geometry before pickling."""
    storages, tensors, blobs = {}, {}, {}
    for index, (name, array) in enumerate(package["state"].items()):
        key = str(index)
        storages[name] = Storage(key, "HalfStorage", array.size)
        tensors[name] = Tensor(storages[name], 0, list(array.shape), _strides(array.shape))
        order = "<" if byteorder != "big" else ">"
        blobs[key] = np.ascontiguousarray(array, dtype=np.dtype("float16").newbyteorder(order)).tobytes()
    if edit is not None:
        edit(tensors, storages, blobs)
    if pickle_bytes is None:
        import io

        buffer = io.BytesIO()
        _Writer(buffer, protocol=2).dump({
            "klass": Global(*package.get("klass", "demucs.htdemucs.HTDemucs").rsplit(".", 1)),
            "args": package["args"],
            "kwargs": package["kwargs"], "state": collections.OrderedDict(tensors)})
        pickle_bytes = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", byteorder)
        for key, blob in blobs.items():
            archive.writestr(f"archive/data/{key}", blob)
    return path


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    path = reference.save_th(reference.build_model("htdemucs", seed=3, **TINY), folder, "cccc0001")
    loaded = read_package(path)
    return {"klass": loaded.klass, "args": loaded.args, "kwargs": loaded.kwargs,
            "state": loaded.state}


def _process_state():
    """What a file must not be able to change in the loading process."""
    return (dict(vars(Fraction)), dict(getattr(checkpoint._rebuild_tensor, "__dict__", {})),
            dict(getattr(checkpoint._fraction, "__dict__", {})),
            Fraction(1, 3) + Fraction(1, 6))


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_the_writer_makes_loadable_files(tmp_path, package, byteorder):
    loaded = read_package(write_th(tmp_path / f"ok-{byteorder}.th", package, byteorder=byteorder))
    assert loaded.kwargs == package["kwargs"]
    assert list(loaded.state) == list(package["state"])
    for name, array in package["state"].items():
        np.testing.assert_array_equal(loaded.state[name], array)


def _first_matrix(tensors):
    return next(name for name, t in tensors.items() if len(t.size) >= 2)


def _big_stride(tensors, storages, blobs):
    tensors[_first_matrix(tensors)].stride[0] = 1 << 24


def _negative_stride(tensors, storages, blobs):
    tensors[_first_matrix(tensors)].stride[-1] = -1


def _empty_storage(tensors, storages, blobs):
    storages[_first_matrix(tensors)].numel = 0


def _offset_past_the_end(tensors, storages, blobs):
    tensors[_first_matrix(tensors)].offset = 10 ** 6


def _shared_smaller_storage(tensors, storages, blobs):
    small = min(tensors, key=lambda name: storages[name].numel)
    tensors[_first_matrix(tensors)].storage = storages[small]


def _size_as_text(tensors, storages, blobs):
    tensors[_first_matrix(tensors)].size[0] = "4"


@pytest.mark.parametrize("edit,message", [
    (_big_stride, "reads element"), (_negative_stride, "invalid tensor geometry"),
    (_empty_storage, "reads element"), (_offset_past_the_end, "reads element"),
    (_shared_smaller_storage, "reads element|two sizes"),
    (_size_as_text, "invalid tensor geometry")])
def test_tensor_geometry_is_checked_against_the_storage(tmp_path, package, edit, message):
    path = write_th(tmp_path / "bad.th", package, edit=edit)
    with pytest.raises(CheckpointError, match=rf"bad\.th: .*({message})"):
        read_package(path)


def test_byte_orders_other_than_little_and_big_are_refused(tmp_path, package):
    path = write_th(tmp_path / "order.th", package, byteorder="middle")
    with pytest.raises(CheckpointError, match=r"order\.th: byte order 'middle'"):
        read_package(path)


def _payload_th(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
    return path


PROTO = b"\x80\x02"


@pytest.mark.parametrize("global_name", [b"fractions\nFraction\n",
                                         b"torch._utils\n_rebuild_tensor_v2\n",
                                         b"collections\nOrderedDict\n"])
@pytest.mark.parametrize("state", [
    b"}X\x07\x00\x00\x00__add__K\x01s",          # a dict state: __dict__.update
    b"N}X\x07\x00\x00\x00__add__K\x01s\x86",     # (None, slots): setattr
])
def test_build_cannot_change_the_loaders_objects(tmp_path, global_name, state):
    before = _process_state()
    path = _payload_th(tmp_path / "build.th", PROTO + b"c" + global_name + state + b"b.")
    with pytest.raises(UnsafeCheckpointError, match=r"build\.th: the pickle tries to"):
        read_package(path)
    assert _process_state() == before


@pytest.mark.parametrize("text", [b"1/0", b"1e100000000", b"nan", b"3/-0", b"1" * 200])
def test_fractions_are_bounded(tmp_path, text):
    payload = PROTO + b"cfractions\nFraction\nX" + struct.pack("<I", len(text)) + text + b"\x85R."
    path = _payload_th(tmp_path / "fraction.th", payload)
    with pytest.raises(CheckpointError, match=r"fraction\.th: invalid fraction"):
        read_package(path)


def test_fraction_of_a_zero_denominator_pair_is_refused(tmp_path):
    payload = PROTO + b"cfractions\nFraction\nK\x01K\x00\x86R."
    with pytest.raises(CheckpointError, match=r"zero\.th: invalid fraction"):
        read_package(_payload_th(tmp_path / "zero.th", payload))


def test_a_huge_memo_index_is_refused_before_unpickling(tmp_path):
    payload = PROTO + b"}r" + struct.pack("<I", 1 << 31) + b"."
    with pytest.raises(CheckpointError, match=r"memo\.th: .*memo index 2147483648"):
        read_package(_payload_th(tmp_path / "memo.th", payload))


def test_deflated_tensor_data_is_not_inflated_past_its_tensor(tmp_path, package):
    """A member declaring far more bytes than its tensor needs is read only as far as needed;
    one that would inflate to more than 64x its compressed size is refused."""
    name = next(iter(package["state"]))

    def bomb(tensors, storages, blobs):
        storages[name].numel = 1 << 30  # 2 GiB of float16, from a few MB of zeros
        tensors[name].size, tensors[name].stride = [1 << 30], [1]
        blobs[storages[name].key] = b"\0" * (8 << 20)

    path = tmp_path / "bomb.th"
    write_th(path, package, edit=bomb)
    # re-deflate the data member
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp_path / "bomb2.th", "w") as out:
        for item in source.infolist():
            compress = zipfile.ZIP_DEFLATED if "/data/" in item.filename else zipfile.ZIP_STORED
            out.writestr(item.filename, source.read(item), compress_type=compress)
    with pytest.raises(CheckpointError, match=r"bomb2\.th: tensor data .* (inflate|truncated)"):
        read_package(tmp_path / "bomb2.th")


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "c\\d", ""])
def test_source_names_cannot_steer_stems_out_of_the_output_folder(tmp_path, name):
    from numba_demucs.errors import NumbaDemucsError
    from numba_demucs.outputs import StemOutput

    with pytest.raises(NumbaDemucsError, match="cannot be a file name"):
        StemOutput().targets(tmp_path, "model", tmp_path / "song.wav", ["drums", name])
