"""A trace as a value: what one run recorded at its trace points, in forward order.

A ``Trace`` holds a ``header`` (who produced it, from which checkpoint and input, in which
dtype, which stems), the ``records`` (one ``stats.tensor_stats`` dict per trace point) and,
optionally, the tensors themselves. Both sides of the debugging loop produce one
(``collect.trace_ours``, ``collect.trace_reference``), ``diff.diff`` compares two, and a dump
file (``dumpfile``) only saves and loads one. A port elsewhere (a demucs.cpp printout, an
ONNX run) becomes comparable by building a ``Trace`` from its records: the constructor checks
every record and says which one is wrong.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import NumbaDemucsError
from .stats import FLOAT_KEYS, RECORD_KEYS, tensor_stats

# What a producer must say about itself (values may be null: no checkpoint file, say).
REQUIRED_HEADER_KEYS = ("producer", "model", "checkpoint_sha256", "input_sha256", "dtype")
# Keys a dump file adds to the header for itself; they describe the file, not the run.
FILE_HEADER_KEYS = ("format", "version", "records", "tensors", "dump_id")
STD_CONVENTION = "population"

_INT_KEYS = ("count", "nan", "inf")
_OPTIONAL_INT_KEYS = ("index", "argmin", "argmax")
_INDEX_LIST_KEYS = ("argmin_index", "argmax_index")


class TraceError(NumbaDemucsError):
    """A trace cannot be built: a header or record lacks keys or holds values of the wrong kind."""


def _plain_int(value, what):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TraceError(f"{what}: expected an integer, got {value!r}")
    return int(value)


def _plain_float(value, what):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TraceError(f"{what}: expected a number or None, got {value!r}")
    return float(value)


def _checked_record(position: int, record) -> dict:
    """A plain-Python copy of ``record``, or a TraceError naming the record and the key."""
    if not isinstance(record, Mapping):
        raise TraceError(f"record {position}: expected a dict (stats.tensor_stats), got {type(record).__name__}")
    label = f"record {position} ({record.get('name')!r})"
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise TraceError(f"{label} lacks {', '.join(missing)}")
    if not isinstance(record["name"], str) or not record["name"]:
        raise TraceError(f"record {position}: name must be a non-empty string, got {record['name']!r}")
    context = record["context"]
    if not isinstance(context, Mapping) or not all(isinstance(k, str) for k in context):
        raise TraceError(f"{label}: context must be a dict with string keys, got {context!r}")
    out = dict(record)
    out["context"] = dict(context)
    if not isinstance(record["shape"], (list, tuple)):
        raise TraceError(f"{label}: shape must be a list of integers, got {record['shape']!r}")
    out["shape"] = [_plain_int(n, f"{label}: shape") for n in record["shape"]]
    if not isinstance(record["dtype"], str):
        raise TraceError(f"{label}: dtype must be a string, got {record['dtype']!r}")
    for key in _INT_KEYS:
        out[key] = _plain_int(record[key], f"{label}: {key}")
    for key in _OPTIONAL_INT_KEYS:
        out[key] = None if record[key] is None else _plain_int(record[key], f"{label}: {key}")
    for key in _INDEX_LIST_KEYS:
        value = record[key]
        if value is not None:
            if not isinstance(value, (list, tuple)):
                raise TraceError(f"{label}: {key} must be a list of integers or None, got {value!r}")
            out[key] = [_plain_int(i, f"{label}: {key}") for i in value]
    for key in FLOAT_KEYS:
        out[key] = _plain_float(record[key], f"{label}: {key}")
    if "floor" in record and record["floor"] is not None:
        floor = record["floor"]
        if not isinstance(floor, Mapping) or not all(k in FLOAT_KEYS for k in floor):
            raise TraceError(f"{label}: floor must map statistics ({', '.join(FLOAT_KEYS)}) to "
                             f"numbers, got {floor!r}")
        out["floor"] = {k: _plain_float(v, f"{label}: floor {k}") for k, v in floor.items()}
    if "band" in record and record["band"] is not None:
        band = record["band"]
        if (not isinstance(band, Mapping) or set(band) != {"mean", "std", "runs"}
                or _plain_float(band["mean"], f"{label}: band mean") is None
                or _plain_float(band["std"], f"{label}: band std") is None):
            raise TraceError(f"{label}: band must be {{\"mean\": number, \"std\": number, "
                             f"\"runs\": integer}}, got {band!r}")
        out["band"] = {"mean": float(band["mean"]), "std": float(band["std"]),
                       "runs": _plain_int(band["runs"], f"{label}: band runs")}
    if out["nan"] + out["inf"] > out["count"]:
        raise TraceError(f"{label}: {out['nan']} NaN and {out['inf']} Inf in {out['count']} elements")
    # what tensor_stats makes of a real tensor: anything else was edited, and a diff over it
    # would compare numbers that describe no tensor
    if any(n < 0 for n in out["shape"]) or min(out["count"], out["nan"], out["inf"]) < 0:
        raise TraceError(f"{label}: negative shape or count ({out['shape']}, {out['count']})")
    if math.prod(out["shape"]) != out["count"]:
        raise TraceError(f"{label}: count {out['count']} is not the size of shape {out['shape']}")
    for key in ("argmin", "argmax"):
        if out[key] is not None and not 0 <= out[key] < out["count"]:
            raise TraceError(f"{label}: {key} {out[key]} outside the {out['count']} elements")
        index = out[f"{key}_index"]
        if index is not None and (len(index) != len(out["shape"]) or any(
                not 0 <= i < n for i, n in zip(index, out["shape"]))):
            raise TraceError(f"{label}: {key}_index {index} is not a position in shape {out['shape']}")
    return out


def _checked_header(header) -> dict:
    if not isinstance(header, Mapping):
        raise TraceError(f"trace header: expected a dict, got {type(header).__name__}")
    missing = [key for key in REQUIRED_HEADER_KEYS if key not in header]
    if missing:
        raise TraceError(f"trace header lacks {', '.join(missing)} (None is allowed for unknown values)")
    std = header.get("std", STD_CONVENTION)
    if std != STD_CONVENTION:
        raise TraceError(f"trace header: std {std!r}; records hold the {STD_CONVENTION} std")
    run = {key: value for key, value in header.items() if key not in FILE_HEADER_KEYS and key != "std"}
    sources = run.get("sources")
    if sources is not None and (not isinstance(sources, (list, tuple))
                                or not all(isinstance(s, str) for s in sources)):
        raise TraceError(f"trace header: sources must be a list of stem names, got {sources!r}")
    try:
        # a JSON round trip: the header a dump gives back is then equal to this one
        return json.loads(json.dumps(run, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TraceError(f"trace header is not JSON-serialisable: {exc}") from None


def tensor_items(tensors) -> list:
    """``(position, array)`` pairs of ``tensors``: a mapping from record position to array, or a
    sequence parallel to the records; None (no tensor kept) is left out."""
    if tensors is None:
        return []
    items = tensors.items() if isinstance(tensors, Mapping) else enumerate(tensors)
    return [(position, array) for position, array in items if array is not None]


def context_key(context) -> str:
    """A hashable, order-free form of a record's context (points match on name and this)."""
    return json.dumps(context or {}, sort_keys=True)


def _same_float(a, b) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def _same_record(a: dict, b: dict) -> bool:
    return all(_same_float(a[k], b[k]) if k in FLOAT_KEYS else a[k] == b[k] for k in RECORD_KEYS)


def _same_tensor(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


class Trace:
    """One run's trace: ``header`` (dict), ``records`` (list of dicts), optional tensors.

    ``tensors`` is None, a sequence parallel to ``records`` (None where a tensor was not
    kept) or a mapping from record position to array; arrays are kept as given, not copied.
    ``output`` is the run's final output when it was collected here (``collect``); it is not
    part of the trace's identity and is not saved. ``origin`` names where the trace came from
    (the dump file it was loaded from), for messages.
    """

    def __init__(self, header: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                 tensors: Sequence[np.ndarray | None] | Mapping[int, np.ndarray] | None = None, *,
                 output: np.ndarray | None = None, origin: str | None = None):
        self.header = _checked_header(header)
        self.records = [_checked_record(i, record) for i, record in enumerate(records)]
        self._tensors = self._checked_tensors(tensors)
        self._dump = None  # a loaded trace reads its tensors from the dump's .npz on demand
        self.output = output
        self.origin = origin

    def _checked_tensors(self, tensors) -> dict[int, np.ndarray]:
        if tensors is not None and not isinstance(tensors, Mapping):
            tensors = list(tensors)
            if len(tensors) != len(self.records):
                raise TraceError(f"{len(tensors)} tensors for {len(self.records)} records "
                                 "(a list must be parallel to the records; use a dict for some)")
        kept = {}
        for position, array in tensor_items(tensors):
            position = _plain_int(position, "tensor position")
            if not 0 <= position < len(self.records):
                raise TraceError(f"tensor for record {position}, but there are {len(self.records)} records")
            array = np.asarray(array)
            record = self.records[position]
            if list(array.shape) != record["shape"]:
                raise TraceError(f"tensor for record {position} ({record['name']!r}) has shape "
                                 f"{tuple(array.shape)}, the record says {tuple(record['shape'])}")
            kept[position] = array
        return kept

    # -- building from tensors, loading and saving --------------------------------------
    @classmethod
    def from_arrays(cls, header: Mapping[str, Any], points, keep_tensors: bool = False, **kwargs) -> Trace:
        """A trace of ``points``, an iterable of ``(name, context, array)`` in forward order.

        The records are made by ``stats.tensor_stats``, as both of our sides make them, so an
        importer that has the tensors of another port needs nothing else.
        """
        records, tensors = [], []
        for name, context, array in points:
            array = np.asarray(array)
            records.append(tensor_stats(name, array, context, index=len(records)))
            tensors.append(array if keep_tensors else None)
        return cls(header, records, tensors if keep_tensors else None, **kwargs)

    @classmethod
    def load(cls, path) -> Trace:
        """The trace saved in the dump ``path``; its tensors are read from the ``.npz`` on demand."""
        from .dumpfile import DumpError, read_dump

        dump = read_dump(path)
        try:
            trace = cls(dump.header, dump.records, origin=str(dump.path))
        except TraceError as error:
            raise DumpError(f"{dump.path}: {error}") from None
        if dump.has_tensors:
            trace._dump = dump
        return trace

    def save(self, path, tensors: bool = True, dump_id: str | None = None) -> Path:
        """Write the trace as a dump (``path``, plus a sibling ``.npz`` when tensors are kept).

        ``dump_id`` is random unless given (a reproducible file passes one of its own)."""
        from .dumpfile import write_dump

        kept = {i: self.tensor(i) for i in range(len(self.records))} if tensors and self.has_tensors else None
        return write_dump(path, self.header, self.records, kept, dump_id=dump_id)

    def close(self) -> None:
        """Release the ``.npz`` a loaded trace reads its tensors from."""
        if self._dump is not None:
            self._dump.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- what is in it ------------------------------------------------------------------
    @property
    def sources(self) -> list[str] | None:
        """The model's stem names in output order (None if the producer did not say)."""
        sources = self.header.get("sources")
        return None if sources is None else list(sources)

    @property
    def dtype(self) -> str | None:
        return self.header.get("dtype")

    @property
    def has_tensors(self) -> bool:
        return bool(self._tensors) or self._dump is not None

    def __len__(self) -> int:
        return len(self.records)

    def tensor(self, position: int) -> np.ndarray | None:
        """The tensor of record ``position``, or None when it was not kept."""
        if self._dump is not None:
            from .dumpfile import DumpError

            array = self._dump.tensor(position)
            record = self.records[int(position)]
            if array is not None and list(array.shape) != record["shape"]:
                raise DumpError(f"{self._dump.path.parent / self._dump.header['tensors']}: the "
                                f"tensor of record {position} ({record['name']!r}) has shape "
                                f"{tuple(array.shape)}, the record says {tuple(record['shape'])}")
            return array
        return self._tensors.get(int(position))

    def positions(self, name: str, context: Mapping | None = None) -> list[int]:
        """Positions of the records of point ``name`` under ``context`` (all contexts if None)."""
        key = None if context is None else context_key(context)
        return [i for i, r in enumerate(self.records)
                if r["name"] == name and (key is None or context_key(r["context"]) == key)]

    def position(self, name: str, context: Mapping | None = None, occurrence: int = 0) -> int:
        """Position of the ``occurrence``-th record of ``name`` under ``context`` ({} if None)."""
        found = self.positions(name, {} if context is None else context)
        if occurrence >= len(found):
            where = f" under context {dict(context or {})}" if context else ""
            raise KeyError(f"trace point {name!r}{where}: {len(found)} record(s), "
                           f"no occurrence {occurrence}")
        return found[occurrence]

    def record(self, name: str, context: Mapping | None = None, occurrence: int = 0) -> dict:
        return self.records[self.position(name, context, occurrence)]

    def tensor_of(self, name: str, context: Mapping | None = None, occurrence: int = 0):
        return self.tensor(self.position(name, context, occurrence))

    def points(self) -> Iterator[tuple[str, dict, np.ndarray | None]]:
        """``(name, context, tensor or None)`` per record, in forward order."""
        for i, record in enumerate(self.records):
            yield record["name"], record["context"], self.tensor(i)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (self.header == other.header and len(self.records) == len(other.records)
                and all(_same_record(a, b) for a, b in zip(self.records, other.records))
                and self.has_tensors == other.has_tensors
                and all(_same_tensor(self.tensor(i), other.tensor(i)) for i in range(len(self.records))))

    __hash__ = None

    def __repr__(self) -> str:
        tensors = ", with tensors" if self.has_tensors else ""
        return (f"Trace({self.header.get('model')!r} by {self.header.get('producer')!r}, "
                f"{len(self.records)} records{tensors})")
