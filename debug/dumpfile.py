"""Trace dumps on disk: a versioned JSON-lines file, tensors in an optional sibling ``.npz``.

Layout of ``NAME.jsonl`` (described for users in docs/debugging.md):

* line 1, the header: a JSON object with ``format`` ("numba-demucs-dump"), ``version`` (1),
  ``producer``, ``model``, ``checkpoint_sha256``, ``input_sha256``, ``dtype``, ``std``
  ("population"), ``records`` (how many record lines follow), ``tensors`` (file name of the
  sibling ``.npz`` or null) and ``dump_id``; producers may add any other keys.
* lines 2..N+1: one record per line, the dict made by ``stats.tensor_stats``. Non-finite
  values of the float statistics are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``
  (strict JSON has no literal for them); ``null`` means "undefined" (no finite element).

``NAME.npz`` (same stem) holds the saved tensors, key = the record's position (0-based, as a
string), plus ``__dump_id__`` so a reader can tell a stale ``.npz`` left by an earlier run
from the one written with this ``.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import math
import tokenize
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._files import atomic_write, hash_file
from ..errors import NumbaDemucsError
from .stats import FLOAT_KEYS, RECORD_KEYS

FORMAT = "numba-demucs-dump"
VERSION = 1
STD_CONVENTION = "population"
HEADER_KEYS = ("format", "version", "producer", "model", "checkpoint_sha256", "input_sha256",
               "dtype", "std", "records", "tensors", "dump_id")
# What a producer must say about itself; the rest of HEADER_KEYS is filled in by write_dump.
PRODUCER_KEYS = ("producer", "model", "checkpoint_sha256", "input_sha256", "dtype")
_DUMP_ID_KEY = "__dump_id__"
_ENCODED = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class DumpError(NumbaDemucsError):
    """A dump file cannot be written or read: unknown format or version, truncated, not JSON."""


def tensors_path(path) -> Path:
    """The sibling ``.npz`` of a dump: same folder, same stem."""
    return Path(path).with_suffix(".npz")


def _encode_float(value):
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _decode_float(value):
    if isinstance(value, str):
        if value not in _ENCODED:
            raise ValueError(f"unexpected string {value!r}")
        return _ENCODED[value]
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"expected a number, null or 'nan'/'inf'/'-inf', got {value!r}")


def _normalise_tensors(tensors, n_records: int, path: Path) -> dict[str, np.ndarray]:
    from .traces import tensor_items

    out = {}
    for position, array in tensor_items(tensors):
        position = int(position)
        if not 0 <= position < n_records:
            raise DumpError(f"{path}: tensor for record {position}, but there are {n_records} records")
        out[str(position)] = np.asarray(array)
    return out


def write_dump(path, header: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
               tensors: Mapping[int, np.ndarray] | Sequence[np.ndarray | None] | None = None,
               dump_id: str | None = None) -> Path:
    """Write ``records`` under ``header`` to ``path`` (and tensors to the sibling ``.npz``).

    ``header`` must carry ``PRODUCER_KEYS`` (values may be null, e.g. no checkpoint file);
    ``format``, ``version``, ``std``, ``records``, ``tensors`` and ``dump_id`` are set here.
    ``tensors`` maps record positions to arrays (or is a list parallel to ``records`` with
    None where nothing is saved). Both files are written atomically, the ``.npz`` first so
    that a ``.jsonl`` which names it never precedes it.
    """
    path = Path(path)
    missing = [k for k in PRODUCER_KEYS if k not in header]
    if missing:
        raise DumpError(f"{path}: header lacks {', '.join(missing)}")
    for key, expected in (("format", FORMAT), ("version", VERSION), ("std", STD_CONVENTION)):
        if key in header and header[key] != expected:
            raise DumpError(f"{path}: header {key}={header[key]!r}, this writer only writes {expected!r}")
    records = list(records)
    arrays = _normalise_tensors(tensors, len(records), path)
    # random unless given: a reproducible file (golden traces) passes one derived from its content
    dump_id = uuid.uuid4().hex if dump_id is None else str(dump_id)
    full_header = {"format": FORMAT, "version": VERSION, **dict(header), "std": STD_CONVENTION,
                   "records": len(records),
                   "tensors": tensors_path(path).name if arrays else None, "dump_id": dump_id}

    lines = []
    try:
        lines.append(json.dumps(full_header, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DumpError(f"{path}: header is not JSON-serialisable: {exc}") from None
    for position, record in enumerate(records):
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise DumpError(f"{path}: record {position} ({record.get('name')!r}) lacks {', '.join(missing)}")
        encoded = dict(record)
        for key in FLOAT_KEYS:
            encoded[key] = _encode_float(record[key])
        try:
            lines.append(json.dumps(encoded, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise DumpError(f"{path}: record {position} ({record['name']!r}) is not JSON-serialisable: {exc}") from None

    if arrays:
        def write_npz(f):
            np.savez(f, **arrays, **{_DUMP_ID_KEY: np.array(dump_id)})
        atomic_write(tensors_path(path), write_npz)
    text = ("\n".join(lines) + "\n").encode("utf-8")
    atomic_write(path, text)
    return path


@dataclass
class Dump:
    """A dump read back: ``header`` (dict), ``records`` (list of dicts), lazy ``tensor(i)``."""

    path: Path
    header: dict
    records: list
    _npz: Any = field(default=None, repr=False, compare=False)

    @property
    def has_tensors(self) -> bool:
        return self.header.get("tensors") is not None

    def tensor(self, i: int) -> np.ndarray | None:
        """The tensor saved with record ``i``, or None when it was not saved.

        Every failure of the ``.npz`` (not a zip, a corrupted or truncated member, a pickled
        object array, a header promising more bytes than the member holds) is a DumpError
        naming it; no array is allocated before its header is checked. (``Trace`` checks
        each array's shape against its record.)
        """
        if not self.has_tensors:
            return None
        npz_path = self.path.parent / self.header["tensors"]
        try:
            return self._tensor(npz_path, int(i))
        except DumpError:
            raise
        except (OSError, ValueError, EOFError, KeyError, IndexError, TypeError, MemoryError,
                NotImplementedError, RuntimeError, SyntaxError, tokenize.TokenError,
                zipfile.BadZipFile, zlib.error) as exc:
            # (numpy parses a .npy header's dict with tokenize: a mangled one raises
            # TokenError or SyntaxError, found by tests/unit/test_hostile_property.py)
            raise DumpError(f"{npz_path}: tensors of {self.path} cannot be read "
                            f"({type(exc).__name__}: {str(exc)[:200]})") from None

    def _tensor(self, npz_path: Path, i: int):
        if self._npz is None:
            archive = zipfile.ZipFile(npz_path)
            stored_id = None
            if f"{_DUMP_ID_KEY}.npy" in archive.namelist():
                stored_id = str(self._read_member(archive, f"{_DUMP_ID_KEY}.npy", npz_path))
            if stored_id != self.header.get("dump_id"):
                archive.close()
                raise DumpError(f"{npz_path}: written with another dump than {self.path} "
                                f"(dump_id {stored_id} vs {self.header.get('dump_id')}); rerun the trace")
            self._npz = archive
        member = f"{i}.npy"
        if member not in self._npz.namelist():
            return None
        return self._read_member(self._npz, member, npz_path)

    @staticmethod
    def _read_member(archive, member, npz_path):
        info = archive.getinfo(member)
        with archive.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise DumpError(f"{npz_path}: {member}: .npy version {version} is not written here")
            if dtype.hasobject or dtype.kind not in "biufU":
                raise DumpError(f"{npz_path}: {member}: dtype {dtype} is not a tensor's")
            need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if need > info.file_size:
                # inflate no more than the member declares: a header cannot make us allocate
                raise DumpError(f"{npz_path}: {member}: its header promises {need} bytes, the "
                                f"member holds {info.file_size}; truncated or forged")
            handle.seek(0)
            return np.lib.format.read_array(handle, allow_pickle=False)

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()
            self._npz = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_dump(path) -> Dump:
    """Read a dump; refuse an unknown format or version, a truncated or malformed line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except OSError as exc:
        raise DumpError(f"{path}: cannot read dump: {exc.strerror or exc}") from None
    # A complete file ends with "\n", so split() leaves one empty string after the last line;
    # anything else there is a line the writer never finished.
    tail = raw_lines.pop()
    if not raw_lines and not tail:
        raise DumpError(f"{path}: empty file, not a numba-demucs dump")

    def parse(number: int, raw: bytes) -> dict:
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DumpError(f"{path}:{number}: not a JSON line ({exc}); the dump is truncated or corrupted") from None
        if not isinstance(value, dict):
            raise DumpError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
        return value

    header = parse(1, raw_lines[0] if raw_lines else tail)
    if header.get("format") != FORMAT:
        raise DumpError(f"{path}:1: not a numba-demucs dump (format {header.get('format')!r}, "
                        f"expected {FORMAT!r})")
    if header.get("version") != VERSION:
        raise DumpError(f"{path}:1: dump format version {header.get('version')!r}; this reader "
                        f"understands version {VERSION} only (rerun the trace with this numba-demucs)")
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise DumpError(f"{path}:1: header lacks {', '.join(missing)}")
    records_count = header["records"]
    if isinstance(records_count, bool) or not isinstance(records_count, int) or records_count < 0:
        raise DumpError(f"{path}:1: header records must be a count, got {str(records_count)[:60]}")
    tensors = header["tensors"]
    if tensors is not None and (not isinstance(tensors, str) or Path(tensors).name != tensors
                                or not tensors.endswith(".npz") or tensors.startswith(".")):
        # a file name beside the dump, never a path the dump could send us elsewhere with
        raise DumpError(f"{path}:1: header tensors must be null or the name of an .npz beside "
                        f"the dump, got {str(tensors)[:80]!r}")
    if tail:
        raise DumpError(f"{path}:{len(raw_lines) + 1}: last line has no end of line; the dump is truncated")

    records = []
    for number, raw in enumerate(raw_lines[1:], start=2):
        record = parse(number, raw)
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise DumpError(f"{path}:{number}: record lacks {', '.join(missing)}")
        try:
            for key in FLOAT_KEYS:
                record[key] = _decode_float(record[key])
        except ValueError as exc:
            raise DumpError(f"{path}:{number}: {key}: {exc}") from None
        records.append(record)
    if len(records) != header["records"]:
        raise DumpError(f"{path}:{len(raw_lines) + 1}: header announces {header['records']} records, "
                        f"the file holds {len(records)}; the dump is truncated")
    return Dump(path=path, header=header, records=records)


def sha256_of_file(path) -> str:
    """Hex SHA-256 of a file's bytes (the checkpoint hash of a dump header)."""
    return hash_file(path)


def sha256_of_array(array) -> str:
    """Hex SHA-256 of an array's dtype, shape and values (C order, little-endian).

    dtype and shape are hashed too, so the same bytes read as another dtype or shape (the
    float32 and float64 versions of one signal, say) give different hashes, and byte order
    or memory layout do not change the hash of the same values.
    """
    a = np.asarray(array)
    a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
    digest = hashlib.sha256()
    digest.update(f"{a.dtype.str}|{','.join(map(str, a.shape))}|".encode())
    digest.update(memoryview(a.reshape(-1)).cast("B"))
    return digest.hexdigest()
