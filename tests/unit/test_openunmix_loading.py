"""Open-Unmix's per-target ``TARGET-HASH8.pth`` files, read without torch."""
import hashlib
import io

import numpy as np
import pytest
import torch

from numba_demucs import pretrained_umx
from numba_demucs.checkpoint import read_state_dict
from numba_demucs.errors import (CheckpointError, ChecksumError, UnknownModelError,
                                 UnsafeCheckpointError)
from numba_demucs.debug import reference_umx


@pytest.fixture(scope="module")
def separator():
    return reference_umx.build_separator("umxhq", seed=1, hidden_size=8)


@pytest.fixture
def repo(separator, tmp_path):
    reference_umx.save_targets(separator, tmp_path)
    return tmp_path


def _save(state, folder, target):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    path = folder / f"{target}-{digest}.pth"
    path.write_bytes(buffer.getvalue())
    return path


def test_state_dict_equals_pytorch(separator, repo):
    (path,) = repo.glob("vocals-*.pth")
    state = read_state_dict(path)
    expected = separator.target_models["vocals"].state_dict()
    assert list(state) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value.numpy())


def test_repo_loads_all_targets_in_order(repo):
    files = pretrained_umx.files_in_repo("umxhq", repo)
    assert list(files) == ["vocals", "drums", "bass", "other"]
    with pytest.raises(CheckpointError, match="fc1.weight has 8 hidden units, but umxhq has 512"):
        pretrained_umx.load("umxhq", repo)
    model = pretrained_umx.load_files(files, 8, dtype=np.float64, label="umxhq")
    assert model.sources == ["vocals", "drums", "bass", "other"] and model.dtype == np.float64


def test_hash_prefix_is_checked(repo):
    (path,) = repo.glob("drums-*.pth")
    path.rename(repo / "drums-00000000.pth")
    with pytest.raises(ChecksumError, match="drums-00000000.pth: checksum mismatch"):
        pretrained_umx.files_in_repo("umxl", repo)


def test_missing_target_is_named(repo):
    for path in repo.glob("bass-*.pth"):
        path.unlink()
    with pytest.raises(UnknownModelError, match="no bass-HASH8.pth"):
        pretrained_umx.files_in_repo("umxl", repo)


def test_extra_entry_refused_window_accepted(separator, tmp_path):
    state = dict(separator.target_models["vocals"].state_dict())
    files = {}
    for target in reference_umx.TARGETS:
        files[target] = _save({**state, "stft.window": torch.hann_window(16)}, tmp_path, target)
    pretrained_umx.load_files(files, 8)  # openunmix < 1.1 kept its window in the model
    files["other"].unlink()
    files["other"] = _save({**state, "fc4.weight": torch.zeros(3)}, tmp_path, "other")
    with pytest.raises(CheckpointError, match=r"other-[0-9a-f]{8}\.pth: 1 weights do not belong.*fc4"):
        pretrained_umx.load_files(files, 8)


def test_unsafe_pickle_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buffer = io.BytesIO()
    torch.save({"fc1.weight": torch.zeros(2), "x": Evil()}, buffer)
    path = tmp_path / "vocals-12345678.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="print, which is not allowed"):
        read_state_dict(path)


def test_catalog_holds_the_official_names():
    assert pretrained_umx.CATALOG["umxl"].files["vocals"] == "vocals-bccbd9aa.pth"
    assert pretrained_umx.CATALOG["umxhq"].files["bass"] == "bass-8d85a5bd.pth"
    assert pretrained_umx.CATALOG["umx"].files["other"] == "other-f8e132cc.pth"
    assert [pretrained_umx.CATALOG[n].hidden_size for n in ("umxl", "umxhq", "umx")] == [1024, 512, 512]
