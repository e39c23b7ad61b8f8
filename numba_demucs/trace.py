"""Named trace points on the forward pass.

Every layer ends with ``trace.point(name, array)`` where ``name`` is the PyTorch module
path of the module whose output ``array`` is. With no capture active the call is one
attribute lookup and a branch. Inside ``with trace.capture() as records:`` each point
appends a record; a ``context`` dict (segment, shift and model indices of the current
call) is attached to every record so repeated calls keep one name.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable

import numpy as np

_state = threading.local()


def _active():
    return getattr(_state, "sink", None)


def enabled() -> bool:
    """Whether a capture is active in this thread: layers that fuse several modules into one
    kernel run them one by one while it is, so that every module's output is seen."""
    return _active() is not None


def point(name: str, array):
    """Record ``array`` under ``name`` if a capture is active.

    Returns ``array``, or the replacement a capture's ``replace`` hook supplies (used to feed
    every layer the reference's input, see ``numba_demucs.debug.isolate``).
    """
    sink = _active()
    if sink is not None:
        replacement = sink(name, array)
        if replacement is not None:
            return replacement
    return array


def current_context() -> dict:
    return dict(getattr(_state, "context", {}))


@contextlib.contextmanager
def carried(state):
    """Make a worker thread record where ``state`` (from ``snapshot()``) recorded.

    Capture and call context are per thread; work handed to a pool carries them over so a
    traced ``apply_model(jobs=N)`` records every segment.
    """
    sink, context = state
    previous = (getattr(_state, "sink", None), getattr(_state, "context", {}))
    _state.sink, _state.context = sink, dict(context)
    try:
        yield
    finally:
        _state.sink, _state.context = previous


def snapshot():
    """This thread's capture and call context, for ``carried`` in another thread."""
    return _active(), current_context()


@contextlib.contextmanager
def call_context(**indices):
    """Attach call indices (``segment=3``, ``shift=0``, ``model=1``) to the records made inside."""
    previous = getattr(_state, "context", {})
    _state.context = {**previous, **indices}
    try:
        yield
    finally:
        _state.context = previous


@contextlib.contextmanager
def capture(tensors: bool = True, record: Callable | None = None, replace: Callable | None = None):
    """Collect every trace point reached inside the block.

    By default each entry is ``(name, context, array_copy)``; pass ``record`` to turn
    ``(name, context, array)`` into whatever should be kept instead (e.g. statistics).
    ``replace(name, context, array)`` may return an array that the forward pass continues
    with in place of ``array`` (after it was recorded), or None to keep ``array``.
    """
    records: list = []
    previous = _active()

    def sink(name, array):
        context = current_context()
        if record is not None:
            records.append(record(name, context, array))
        else:
            records.append((name, context, np.array(array, copy=True) if tensors else None))
        return None if replace is None else replace(name, context, array)

    _state.sink = sink
    try:
        yield records
    finally:
        _state.sink = previous
