"""Turn another port's debug output into a ``Trace``: demucs.cpp's tensor printouts.

demucs.cpp (and the ports that copied its helpers) print, at chosen places of the forward
pass, one block per tensor::

    Debugging tensor!: x_enc_1
    	shape: (1, 96, 128, 336)
    	min: -0.285941
    	max: 0.230387
    	mean: -2.47511e-05
    	stddev: 0.0555647
    	sum: -102.191
    	min idx: (0, 55, 0, 1)
    	max idx: (0, 9, 0, 1)
    FINISHED DEBUG for tensor: x_enc_1

The C++ helpers (src/tensor.hpp) open with ``Debugging tensor!:`` (``matrix!:``,
``vector!:`` for Eigen matrices and vectors), print with ``std::cout``'s default 6
significant digits and close with ``FINISHED DEBUG for tensor: NAME``; complex tensors print
``min real:``, ``min imag:`` ... instead. Its Python comparison script prints Python reprs
(17 digits), ``torch.std`` (unbiased) and closes with ``FINISHED DEBUG FOR TENSOR NAME``;
under NumPy 2 its indices read ``(np.int64(0), ...)``. All of these are read here.

What a block cannot say is filled in as follows: ``l2`` from the population std and the mean
(``sqrt(N (std² + mean²))``), ``count`` from the shape, NaN/Inf counts 0 (the C++ loops let
a NaN propagate into sum, mean and std, which then differ from the reference's anyway), and
leading axes of size 1 are dropped from the shape and the indices as in our records. The
header's ``stat_digits`` records how many significant digits the numbers were printed with,
so the diff allows for the printing (None when printed in full).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from numba_demucs.errors import NumbaDemucsError

from .traces import Trace

_START = re.compile(r"^Debugging (?:tensor|matrix|vector)!: (?P<name>.+?)\s*$")
_END = re.compile(r"^FINISHED DEBUG (?:FOR TENSOR |for tensor: )(?P<name>.+?)\s*$", re.IGNORECASE)
_FIELD = re.compile(r"^\s*(?P<key>shape|min|max|mean|stddev|sum|min idx|max idx)"
                    r"(?: (?P<part>real|imag))?(?P<idx> idx)?:\s*(?P<value>.*?)\s*$")
_STATS = ("min", "max", "mean", "stddev", "sum")
_NUMPY_INT = re.compile(r"np\.u?int\d*\(")
_DIGITS = re.compile(r"^[+-]?(?P<mantissa>[0-9.]+)(?:[eE][+-]?\d+)?$")
# Printed with this many digits or more counts as printed in full (float32 needs 9, a Python
# repr of a float32 value converted to float64 shows up to 17).
_FULL_PRECISION = 9


class PrintoutError(NumbaDemucsError):
    """A printout or a name map cannot be read: a block cut short, a malformed line."""


def read_name_map(path) -> dict:
    """``{port name: PyTorch module path}`` from a map file.

    One mapping per line, the port's name then the module path, separated by whitespace,
    ``=`` or ``->``; ``#`` starts a comment; a module path ``-`` drops the port's blocks
    (temporaries that have no PyTorch counterpart).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PrintoutError(f"{path}: cannot read the name map: {error}") from None
    mapping = {}
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = re.split(r"\s*(?:->|=)\s*|\s+", text)
        if len(parts) != 2 or not all(parts):
            raise PrintoutError(f"{path}:{number}: expected 'PORT_NAME MODULE.PATH', got {line.strip()!r}")
        if parts[0] in mapping:
            raise PrintoutError(f"{path}:{number}: {parts[0]!r} is mapped twice")
        mapping[parts[0]] = parts[1]
    return mapping


def _ints(text):
    return [int(v) for v in re.findall(r"-?\d+", _NUMPY_INT.sub("(", text))]


def _significant_digits(token: str) -> int | None:
    match = _DIGITS.match(token)
    if match is None:
        return None  # nan, inf, -nan
    mantissa = match.group("mantissa").replace(".", "").lstrip("0")
    return max(len(mantissa), 1)


class _Block:
    def __init__(self, name, line):
        self.name, self.line, self.fields = name, line, {}


def _records_of(block: _Block, where: str, std: str, digits: list) -> list:
    """One record per real part (two for a complex block: ``NAME.real``, ``NAME.imag``)."""
    fields = block.fields
    if "shape" not in fields:
        raise PrintoutError(f"{where}:{block.line}: block {block.name!r} has no shape line")
    shape = fields["shape"]
    found = {key[1] for key in fields if isinstance(key, tuple) and key[1] is not None}
    parts = [part for part in ("real", "imag") if part in found]
    parts = parts or [None]
    records = []
    for part in parts:
        def get(key):
            if (key, part) not in fields:
                label = key if part is None else f"{key} {part}"
                raise PrintoutError(f"{where}:{block.line}: block {block.name!r} lacks its "
                                    f"'{label}' line")
            return fields[(key, part)]

        stats = {}
        for key in _STATS:
            token = get(key)
            try:
                stats[key] = float(token)
            except ValueError:
                raise PrintoutError(f"{where}:{block.line}: block {block.name!r}: {key} {token!r} "
                                    "is not a number") from None
            d = _significant_digits(token)
            if d is not None:
                digits.append(d)
        count = int(np.prod(shape)) if shape else 1
        squeezed = list(shape)
        drop = 0
        while len(squeezed) > 1 and squeezed[0] == 1:
            squeezed.pop(0)
            drop += 1
        mean, sd = stats["mean"], stats["stddev"]
        if std == "unbiased" and count > 1:
            sd = sd * math.sqrt((count - 1) / count)
        l2 = math.sqrt(count * (sd * sd + mean * mean)) if math.isfinite(sd) and math.isfinite(mean) else math.nan
        record = {
            "name": block.name if part is None else f"{block.name}.{part}",
            "context": {}, "index": None, "shape": squeezed, "dtype": "float32", "count": count,
            "min": stats["min"], "max": stats["max"], "mean": mean, "std": sd, "sum": stats["sum"],
            "l2": l2, "argmin": None, "argmax": None, "argmin_index": None, "argmax_index": None,
            "nan": 0, "inf": 0,
        }
        for key, which in (("min idx", "argmin"), ("max idx", "argmax")):
            index = get(key)
            if len(index) != len(shape):
                raise PrintoutError(f"{where}:{block.line}: block {block.name!r}: {key} {tuple(index)} "
                                    f"does not fit shape {tuple(shape)}")
            index = index[drop:]
            if all(0 <= i < n for i, n in zip(index, squeezed)):  # -1: never set (no element)
                record[which + "_index"] = index
                record[which] = int(np.ravel_multi_index(index, squeezed))
        records.append(record)
    return records


def read_demucs_cpp(path, names: dict | None = None, std: str = "population",
                    dtype: str = "float32", digits: int | None = None) -> Trace:
    """The ``Trace`` of a demucs.cpp printout ``path`` (any other output lines are skipped).

    ``names`` maps the port's names to PyTorch module paths (``read_name_map``; names not in
    it are kept, ``-`` drops a block). ``std`` says how the printout's ``stddev`` was
    computed: "population" (the C++ helpers) or "unbiased" (demucs.cpp's Python script, which
    prints ``torch.std``). ``digits`` overrides the significant digits detected from the numbers.
    A block cut short (a new block or the end of the file before its FINISHED line, a
    FINISHED line naming another tensor) raises ``PrintoutError`` naming the line.
    """
    if std not in ("population", "unbiased"):
        raise ValueError(f"std must be 'population' or 'unbiased', got {std!r}")
    path = Path(path)
    where = str(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise PrintoutError(f"{path}: cannot read the printout: {error.strerror or error}") from None
    names = names or {}
    records, printed_digits = [], []
    block = None
    for number, line in enumerate(lines, start=1):
        start = _START.match(line)
        if start:
            if block is not None:
                raise PrintoutError(f"{where}:{number}: a new block starts, but block {block.name!r} "
                                    f"(line {block.line}) has no FINISHED line: the printout is cut")
            block = _Block(start.group("name"), number)
            continue
        end = _END.match(line)
        if end:
            if block is None:
                raise PrintoutError(f"{where}:{number}: FINISHED line for {end.group('name')!r} "
                                    "outside any block: its start is missing")
            if end.group("name") != block.name:
                raise PrintoutError(f"{where}:{number}: FINISHED line names {end.group('name')!r}, "
                                    f"the block (line {block.line}) is {block.name!r}")
            target = names.get(block.name, block.name)
            if target != "-":
                for record in _records_of(block, where, std, printed_digits):
                    if record["name"].startswith(block.name):
                        record["name"] = target + record["name"][len(block.name):]
                    records.append(record)
            block = None
            continue
        if block is None:
            continue  # the program's other output
        if not line.strip():
            continue
        field = _FIELD.match(line)
        if field is None:
            raise PrintoutError(f"{where}:{number}: unexpected line inside block {block.name!r} "
                                f"(line {block.line}): {line.strip()!r}")
        key = field.group("key")
        if field.group("idx"):
            key += " idx"
        if key == "shape":
            block.fields["shape"] = _ints(field.group("value"))
        elif key.endswith("idx"):
            block.fields[(key, field.group("part"))] = _ints(field.group("value"))
        else:
            block.fields[(key, field.group("part"))] = field.group("value")
    if block is not None:
        raise PrintoutError(f"{where}:{len(lines)}: the printout ends inside block {block.name!r} "
                            f"(line {block.line}): it is cut")
    if not records:
        raise PrintoutError(f"{where}: no 'Debugging tensor!:' block found")
    for position, record in enumerate(records):
        record["index"] = position
        record["dtype"] = dtype
    if digits is None:
        found = max(printed_digits, default=None)
        digits = None if found is None or found >= _FULL_PRECISION else found
    header = {"producer": f"demucs.cpp-format printout ({path.name})", "model": None,
              "checkpoint_sha256": None, "input_sha256": None, "dtype": dtype,
              "stat_digits": digits, "imported_from": path.name, "std_printed": std}
    return Trace(header, records, origin=where)
