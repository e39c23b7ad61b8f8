"""The shared file helpers: atomic writes leave either the old file or the complete new one,
never a half-written file nor a temporary; the hash is hashlib's."""
import hashlib
import os

import pytest

from numba_demucs import _files


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "deep" / "out.json"
    assert _files.atomic_write(target, "first\n") == target
    assert target.read_text() == "first\n"
    _files.atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    _files.atomic_write(target, lambda handle: handle.write(b"third"), fsync=True)
    assert target.read_bytes() == b"third"
    assert _leftovers(target.parent) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.npz"
    target.write_bytes(b"old content")
    seen = []

    def half_then_fail(handle):
        handle.write(b"half of the new")
        handle.flush()
        seen.append(_leftovers(tmp_path))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _files.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old content"
    assert len(seen[0]) == 1 and seen[0][0].startswith(".out.npz.")   # it did exist
    assert _leftovers(tmp_path) == []


def test_a_failing_writer_creates_no_file(tmp_path):
    target = tmp_path / "new.wav"
    with pytest.raises(OSError, match="disk full"):
        with _files.atomic_path(target) as temporary:
            temporary.write_bytes(b"RIFF")
            raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_temporaries_name_their_writer(tmp_path):
    target = tmp_path / "track.json"
    temporary = _files.temporary_beside(target)
    assert temporary.parent == tmp_path and temporary.is_file()
    assert temporary.name.startswith(f".track.json.{os.getpid()}-")
    assert temporary.name.endswith(".tmp")
    assert _files.writer_pid(temporary, target) == os.getpid()
    assert _files.writer_pid(tmp_path / ".track.json.123-abc.tmp", target) == 123
    assert _files.writer_pid(tmp_path / ".other.json.123-abc.tmp", target) is None
    assert _files.writer_pid(tmp_path / ".track.json.x-abc.tmp", target) is None


def test_hash_file_is_hashlib_over_the_bytes(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 * _files.CHUNK // 2)   # more than one block
    path.write_bytes(data)
    assert _files.hash_file(path) == hashlib.sha256(data).hexdigest()
    # the git blob id of a file (what the Hugging Face ETag of a non-LFS file is)
    assert _files.hash_file(path, "sha1", b"blob %d\0" % len(data)) == \
        hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
