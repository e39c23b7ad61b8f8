"""Read demucs checkpoints without torch: ``.th`` (torch.save zip), ``.safetensors``, bag ``.yaml``.

Nothing a file names is ever imported or called. A ``.th`` pickle may only reference the
handful of globals a demucs checkpoint needs (tensor rebuilding, storages, OrderedDict,
Fraction, the demucs model class); every other global is refused before it is resolved.
A ``.safetensors`` file's ``klass`` metadata is a plain string compared against the model
classes demucs defines and those registered in ``registry``.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import json
import math
import pickle
import pickletools
import re
import reprlib
import zipfile
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from .errors import CheckpointError, UnsafeCheckpointError, UnsupportedModelError
from .quantized import DIFFQ_CLASS

# Model classes demucs may name; which of them we implement is registry's business.
KNOWN_DEMUCS_CLASSES = {
    "demucs.htdemucs.HTDemucs",
    "demucs.hdemucs.HDemucs",
    "demucs.demucs.Demucs",
    "demucs.wdemucs.Demucs",
}

_STORAGE_DTYPES = {
    "HalfStorage": np.float16,
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass
class ModelPackage:
    """What a checkpoint holds: the model class (as a dotted name), its init arguments, its state."""

    klass: str
    args: tuple
    kwargs: dict
    state: dict[str, np.ndarray]
    path: Path
    #: a model saved as several files (Open-Unmix: ``{target: TARGET-HASH8.pth}``, ``state``
    #: then ``{target: its state dict}`` and ``path`` their folder)
    parts: dict | None = None
    # A DiffQ-quantized state as pickled (see ``quantized``); ``state`` is then empty until
    # ``loading`` dequantizes it against the architecture's parameter layout.
    quantized: dict | None = None

    @property
    def class_name(self) -> str:
        """The registered class name (``HTDemucs``); UnsupportedModelError for any other class."""
        return registry.lookup(self.klass, self.path).class_name


def _nameable_classes() -> set[str]:
    """Class names a checkpoint may give: demucs' models, every registered family and diffq's
    quantizer (a quantized state's ``meta['klass']``, recorded, never resolved)."""
    return KNOWN_DEMUCS_CLASSES | registry.qualified_names() | {DIFFQ_CLASS}


@dataclasses.dataclass(frozen=True)
class _ClassReference:
    """Stands in for a pickled class; records its name and is never resolved."""

    qualified_name: str


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: Any


# Caps on what a checkpoint's pickle may make us allocate or compute before its data is
# read: far above the largest official file (a 170 MB demucs v3 model), far below harm.
MAX_PICKLE_BYTES = 64 << 20
MAX_MEMO_INDEX = 1 << 20
MAX_TENSOR_BYTES = 4 << 30
_FRACTION_TEXT = re.compile(r"-?[0-9]{1,30}(/[0-9]{1,30})?")


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << 48)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """torch's ``_rebuild_tensor_v2``: a copy of the strided view, every index checked
    against the storage first (the pickle's numbers are not trusted)."""
    if not isinstance(storage, np.ndarray):
        raise CheckpointError(f"a tensor's storage is {type(storage).__name__}, not tensor data")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and _is_index(storage_offset) and all(map(_is_index, size + stride))):
        raise CheckpointError(f"invalid tensor geometry: offset {storage_offset!r}, "
                              f"size {size!r}, stride {stride!r}")
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = storage_offset + sum((n - 1) * step for n, step in zip(size, stride))
    if last >= storage.size:
        raise CheckpointError(
            f"a tensor of size {size} with strides {stride} from offset {storage_offset} reads "
            f"element {last} of a storage holding {storage.size}")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=tuple(step * itemsize for step in stride))
    return np.array(view)


def _rebuild_parameter(data, *_ignored):
    return data


def _fraction(*args):
    """``Fraction(text)`` or ``Fraction(numerator, denominator)``, as Fraction pickles
    itself, for bounded values only (no exponent that takes hours to expand, no zero
    denominator)."""
    if len(args) == 1 and isinstance(args[0], str) and _FRACTION_TEXT.fullmatch(args[0]):
        numerator, _, denominator = args[0].partition("/")
        args = (int(numerator), int(denominator or 1))
    if not (len(args) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                   and abs(v) < (1 << 64) for v in args) and args[1] != 0):
        raise CheckpointError(f"invalid fraction {str(args)[:60]} in the pickle")
    return Fraction(*args)


def _ordered_dict(*args):
    if args:
        raise CheckpointError("an OrderedDict in the pickle is built with arguments")
    return collections.OrderedDict()


class _Inert:
    """What the pickle gets in place of an allowed class or function: callable, but with no
    state a file could change (BUILD on it is refused)."""

    __slots__ = ("_name", "_function")

    def __init__(self, name, function):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_function", function)

    def __call__(self, *args):
        return self._function(*args)

    def __setattr__(self, key, value):
        raise UnsafeCheckpointError(f"the pickle tries to set {key!r} on {self._name}")

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"the pickle tries to change {self._name}")

    def __repr__(self):
        return self._name


def _scan_pickle(data: bytes) -> None:
    """Refuse, before unpickling, a pickle whose opcodes ask for an absurd memo."""
    if len(data) > MAX_PICKLE_BYTES:
        raise CheckpointError(f"the pickle is {len(data)} bytes (at most {MAX_PICKLE_BYTES})")
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if "PUT" in opcode.name and isinstance(argument, int) and argument > MAX_MEMO_INDEX:
                raise CheckpointError(f"the pickle's memo index {argument} is out of range")
    except (ValueError, UnicodeDecodeError):
        pass  # malformed further on: the unpickler stops there and says what it found


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for torch.save zips that resolves only an allow list of globals."""

    _ALLOWED = {
        ("collections", "OrderedDict"): _ordered_dict,
        ("fractions", "Fraction"): _fraction,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, path: Path):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._byteorder = "<" if byteorder == "little" else ">"
        self._path = path
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        allowed = self._ALLOWED.get((module, name))
        if allowed is not None:
            return _Inert(f"{module}.{name}", allowed)
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        qualified = f"{module}.{name}"
        if qualified in _nameable_classes():
            return _ClassReference(qualified)
        raise UnsafeCheckpointError(
            f"{self._path}: the pickle references {qualified}, which is not allowed in a "
            "demucs checkpoint; refusing to load it"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unexpected persistent id {pid!r} in the pickle")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self._path}: unsupported storage type {storage_type!r}")
        if not _is_index(numel):
            raise CheckpointError(f"{self._path}: invalid storage size {numel!r}")
        key = str(key)
        if key in self._storages:
            if self._storages[key].size != numel:
                raise CheckpointError(f"{self._path}: storage {key} is given two sizes")
            return self._storages[key]
        name = f"{self._prefix}/data/{key}"
        dtype = np.dtype(storage_type.dtype).newbyteorder(self._byteorder)
        wanted = numel * dtype.itemsize
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self._path}: tensor data {name} is missing") from None
        if info.compress_type != zipfile.ZIP_STORED and wanted > 64 * info.compress_size + (1 << 20):
            raise CheckpointError(f"{self._path}: tensor data {name} would inflate from "
                                  f"{info.compress_size} to {wanted} bytes; refusing it")
        if wanted > MAX_TENSOR_BYTES or info.file_size < wanted:
            raise CheckpointError(f"{self._path}: tensor data {name} is truncated or too large: "
                                  f"it holds {info.file_size} bytes, its tensor needs {wanted}")
        with self._archive.open(info) as member:
            raw = member.read(wanted)  # never inflate past what the tensor needs
        if len(raw) < wanted:
            raise CheckpointError(f"{self._path}: tensor data {name} is truncated")
        self._storages[key] = np.frombuffer(raw, dtype=dtype, count=numel).astype(
            np.dtype(storage_type.dtype).newbyteorder("="))
        return self._storages[key]


def _open_checked(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    return path


def _read_torch_zip(path: Path):
    """The object a ``torch.save`` zip holds, through the restricted unpickler."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:
        if not isinstance(error, zipfile.BadZipFile):
            raise CheckpointError(f"{path}: cannot be read as a zip archive ({error})") from None
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head[:1] == b"\x80":
            raise CheckpointError(
                f"{path}: legacy (pre-1.6) torch serialization is not supported; "
                "re-save it with a recent torch") from None
        raise CheckpointError(f"{path}: not a torch checkpoint (not a zip archive, or truncated)") from None
    with archive:
        try:
            package = _unpickle_archive(archive, path)
        except (CheckpointError, UnsupportedModelError) as error:
            message = str(error)
            if not message.startswith(str(path)):
                message = f"{path}: {message}"
            raise type(error)(message) from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zlib.error, ValueError,
                TypeError, AttributeError, IndexError, KeyError, OSError, RecursionError,
                MemoryError, NotImplementedError) as error:
            raise CheckpointError(f"{path}: corrupted checkpoint ({error})") from None
    return package


def read_th(path) -> ModelPackage:
    """Read a demucs ``.th`` file (``torch.save`` of ``{klass, args, kwargs, state}``)."""
    path = _open_checked(path)
    return _package_from_dict(_read_torch_zip(path), path)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Read a bare ``torch.save(model.state_dict())`` file (Open-Unmix's ``.pth``) as numpy."""
    path = _open_checked(path)
    state = _read_torch_zip(path)
    if not isinstance(state, dict) or not all(
            isinstance(key, str) and isinstance(value, np.ndarray) for key, value in state.items()):
        raise CheckpointError(f"{path}: not a state dict (a mapping of names to tensors)")
    return dict(state)


def _unpickle_archive(archive: zipfile.ZipFile, path: Path):
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: no data.pkl in the archive; not a torch checkpoint")
    prefix = pickles[0][: -len("/data.pkl")]
    try:
        byteorder = archive.read(f"{prefix}/byteorder").decode("ascii", "replace").strip()
    except KeyError:
        byteorder = "little"
    if byteorder not in ("little", "big"):
        raise CheckpointError(f"{path}: byte order {byteorder[:20]!r} is neither little nor big")
    info = archive.getinfo(pickles[0])
    if info.file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: the pickle is {info.file_size} bytes "
                              f"(at most {MAX_PICKLE_BYTES})")
    with archive.open(info) as handle:
        data = handle.read(MAX_PICKLE_BYTES + 1)
    _scan_pickle(data)
    return _RestrictedUnpickler(io.BytesIO(data), archive, prefix, byteorder, path).load()


def _package_from_dict(package, path: Path) -> ModelPackage:
    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= set(package):
        raise CheckpointError(
            f"{path}: not a demucs model package (expected klass, args, kwargs and state)")
    klass = package["klass"]
    if not isinstance(klass, _ClassReference):
        raise CheckpointError(f"{path}: klass entry is not a model class")
    state = package["state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: state is not a dictionary of tensors")
    if state.get("__quantized"):
        if klass.qualified_name == DIFFQ_CLASS:
            raise CheckpointError(f"{path}: klass entry is not a model class")
        return ModelPackage(klass.qualified_name, tuple(package["args"]),
                            dict(package["kwargs"]), {}, path, quantized=state)
    for key, value in state.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise CheckpointError(f"{path}: state entry {key} is not a numeric tensor")
    return ModelPackage(klass.qualified_name, tuple(package["args"]), dict(package["kwargs"]),
                        dict(state), path)


def _decode_json_value(value):
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return _fraction(int(value["numerator"]), int(value["denominator"]))
        return {key: _decode_json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode_json_value(item) for item in value]
    return value


def _unflatten_structure(node, tensors, path: Path):
    if not isinstance(node, dict):
        return node
    if "_tensor" in node:
        return tensors[node["_tensor"]]
    if "_dict" in node:
        return {key: _unflatten_structure(item, tensors, path) for key, item in node["_dict"]}
    if "_list" in node:
        return [_unflatten_structure(item, tensors, path) for item in node["_list"]]
    if "_tuple" in node:
        return tuple(_unflatten_structure(item, tensors, path) for item in node["_tuple"])
    if "_class" in node:
        if node["_class"] == DIFFQ_CLASS:  # a quantized state's meta['klass'], never resolved
            return _ClassReference(DIFFQ_CLASS)
        raise UnsafeCheckpointError(
            f"{path}: the state structure names the class {node['_class']}; "
            "refusing to import anything a checkpoint names")
    raise CheckpointError(f"{path}: invalid state structure node {node!r}")


# The dtypes numpy has (safetensors' "np" framework reads these); BF16 and the F8 kinds have
# no numpy type and are refused by name before safetensors is asked.
SAFETENSORS_DTYPES = frozenset({"F16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16",
                                "U32", "U64", "BOOL"})
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # safetensors' own limit


def _check_safetensors_header(path: Path) -> None:
    """Refuse, naming the tensor, a dtype we do not read; the header is read once, bounded."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size > MAX_SAFETENSORS_HEADER:
                raise CheckpointError(f"{path}: safetensors header of {size} bytes (at most "
                                      f"{MAX_SAFETENSORS_HEADER})")
            header = json.loads(handle.read(size).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: corrupted or truncated safetensors file "
                              f"({_short(error)})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors file (its header is not a mapping)")
    for name, info in header.items():
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if name != "__metadata__" and isinstance(dtype, str) and dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{path}: tensor {_short(name)} has dtype {_short(dtype)}, which this reader "
                f"does not support ({', '.join(sorted(SAFETENSORS_DTYPES))})")


def read_safetensors(path) -> ModelPackage:
    """Read a demucs 4.1 Hugging Face ``.safetensors`` model (class and args in the metadata)."""
    from safetensors import SafetensorError, safe_open

    path = _open_checked(path)
    _check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: corrupted or truncated safetensors file "
                              f"({_short(error)})") from None
    missing = {"klass", "args", "kwargs"} - set(metadata)
    if missing:
        raise CheckpointError(
            f"{path}: safetensors metadata lacks {', '.join(sorted(missing))}; not a demucs model")
    klass = metadata["klass"]
    if klass not in _nameable_classes():
        raise UnsafeCheckpointError(
            f"{path}: metadata names {klass!r} as the model class, which is neither a demucs "
            "model nor a registered one; refusing to load it")
    try:
        args = _decode_json_value(json.loads(metadata["args"]))
        kwargs = _decode_json_value(json.loads(metadata["kwargs"]))
        structure = json.loads(metadata["structure"]) if "structure" in metadata else None
        state = tensors if structure is None else _unflatten_structure(structure, tensors, path)
    except UnsafeCheckpointError:
        raise
    except (CheckpointError, KeyError, TypeError, ValueError, RecursionError) as error:
        # JSON nested past the recursion limit, a fraction with a zero denominator, a
        # structure naming a tensor that is not there or a pair that is not one
        raise CheckpointError(f"{path}: malformed metadata ({type(error).__name__}: "
                              f"{_short(error)})") from None
    return _package_from_dict(
        {"klass": _ClassReference(klass), "args": args, "kwargs": kwargs, "state": state}, path)


def read_package(path) -> ModelPackage:
    """Read a single-model checkpoint, choosing the reader by suffix."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if path.suffix == ".th":
        return read_th(path)
    raise CheckpointError(f"{path}: unknown checkpoint type (expected .th, .safetensors or .yaml)")


@dataclasses.dataclass
class BagDescription:
    """A demucs bag yaml: member signatures (and, once found, files), per-model per-source
    weights, optional segment."""

    signatures: list[str]
    weights: list[list[float]] | None
    segment: float | None
    path: Path
    members: list[Path] | None = None


def find_member(folder: Path, signature: str, path: Path) -> Path:
    """The file for a bag member: ``SIG.safetensors``, ``SIG.th`` or ``SIG-CHECKSUM.th``."""
    for candidate in (folder / f"{signature}.safetensors", folder / f"{signature}.th"):
        if candidate.is_file():
            return candidate
    matches = sorted(folder.glob(f"{signature}-*.th"))
    if matches:
        return matches[0]
    raise CheckpointError(f"{path}: bag member {signature} not found in {folder}")


def parse_bag(path) -> BagDescription:
    """The bag yaml's content, checked (``models`` a non-empty list, one ``weights`` row per
    model); ``members`` is left unset."""
    import yaml

    path = _open_checked(path)
    try:
        if path.stat().st_size > MAX_BAG_BYTES:
            raise CheckpointError(f"{path}: {path.stat().st_size} bytes is not a bag yaml "
                                  f"(at most {MAX_BAG_BYTES})")
        content = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as error:
        raise CheckpointError(f"{path}: not a valid bag yaml ({_short(error)})") from None
    if not isinstance(content, dict) or not isinstance(content.get("models"), list) \
            or not content["models"]:
        raise CheckpointError(f"{path}: a bag yaml needs a non-empty 'models' list")
    signatures = [_member_name(sig, path) for sig in content["models"]]
    weights = _bag_weights(content.get("weights"), len(signatures), path)
    return BagDescription(signatures, weights, _bag_segment(content.get("segment"), path), path)


MAX_BAG_BYTES = 1 << 16  # demucs' bags are a few hundred bytes


def _short(value) -> str:
    """A bounded repr: a yaml's aliases can make a small file a structure of 10^9 items
    ("billion laughs") that ``str`` would expand."""
    if isinstance(value, BaseException):
        return _SHORT.repr(str(value))[1:-1]
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 6, 6, 80, 80
_SHORT.maxtuple = _SHORT.maxset = 6


# A member is named by its signature and found beside the yaml (or in --repo): a plain file
# name, never a path (demucs would follow "../x" or "/abs/x" out of the folder).
_MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _member_name(value, path: Path) -> str:
    # yaml reads an all-digit signature (12345678) as an int; demucs str()s it too
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CheckpointError(f"{path}: bag member {_short(value)} is a "
                              f"{type(value).__name__}, not a model name")
    name = str(value)
    if not _MEMBER_NAME.fullmatch(name):
        raise CheckpointError(
            f"{path}: bag member {_short(name)} is not a model name (letters, digits, '.', "
            "'_', '-'; no folders: members are found beside the yaml, never elsewhere)")
    return name


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _bag_weights(weights, models: int, path: Path):
    """One row of finite numbers per model, rows of one length, no source whose weights sum
    to zero (demucs divides each source by its total weight)."""
    if weights is None:
        return None
    if not isinstance(weights, list) or len(weights) != models:
        raise CheckpointError(f"{path}: 'weights' must have one row per model ({models} models)")
    for index, row in enumerate(weights):
        if not isinstance(row, list) or not row or not all(_real(w) for w in row):
            raise CheckpointError(f"{path}: 'weights' row {index} must be a non-empty list of "
                                  f"finite numbers, got {_short(row)}")
    if len({len(row) for row in weights}) != 1:
        raise CheckpointError(f"{path}: 'weights' rows have different lengths "
                              f"({', '.join(str(len(row)) for row in weights)})")
    for source in range(len(weights[0])):
        if sum(row[source] for row in weights) == 0:
            raise CheckpointError(
                f"{path}: 'weights' of source #{source} sum to zero over the models (demucs "
                "divides each source by its total weight)")
    return [[float(w) for w in row] for row in weights]


def _bag_segment(segment, path: Path):
    if segment is None:
        return None
    if not _real(segment) or segment <= 0:
        raise CheckpointError(f"{path}: 'segment' must be a positive number of seconds, got "
                              f"{_short(segment)}")
    return segment


def read_bag(path, find=None) -> BagDescription:
    """:func:`parse_bag`, with each member's file found by ``find(signature, bag_path)``
    (default: :func:`find_member` in the yaml's folder)."""
    bag = parse_bag(path)
    if find is None:
        def find(signature, context):
            return find_member(context.parent, signature, context)
    return dataclasses.replace(bag, members=[find(sig, bag.path) for sig in bag.signatures])
