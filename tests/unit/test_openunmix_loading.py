"""Open-Unmix's per-target ``TARGET-HASH8.pth`` files, read without torch."""
import hashlib
import io

import numpy as np
import pytest
import torch

from numba_demucs import load_model, registry
from numba_demucs.pretrained import openunmix as umx_files
from numba_demucs.checkpoint import read_state_dict
from numba_demucs.errors import (CheckpointError, ChecksumError, UnknownModelError,
                                 UnsafeCheckpointError, UnsupportedModelError)
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
    files = umx_files.files_in_repo("umxhq", repo)
    assert list(files) == ["vocals", "drums", "bass", "other"]
    with pytest.raises(CheckpointError, match="fc1.weight has 8 hidden units, but umxhq has 512"):
        load_model("umxhq", repo=repo)
    model = load_model(repo, dtype=np.float64)  # a folder as a path: its files' hidden size
    assert model.sources == ["vocals", "drums", "bass", "other"] and model.dtype == np.float64
    assert model.name == repo.name and model.targets[0].hidden_size == 8


def test_hash_prefix_is_checked(repo):
    (path,) = repo.glob("drums-*.pth")
    path.rename(repo / "drums-00000000.pth")
    with pytest.raises(ChecksumError, match="drums-00000000.pth: checksum mismatch"):
        umx_files.files_in_repo("umxl", repo)


def test_missing_target_is_named(repo):
    for path in repo.glob("bass-*.pth"):
        path.unlink()
    with pytest.raises(UnknownModelError, match="no bass-HASH8.pth"):
        umx_files.files_in_repo("umxl", repo)


def test_extra_entry_refused_window_accepted(separator, tmp_path):
    state = dict(separator.target_models["vocals"].state_dict())
    files = {}
    for target in reference_umx.TARGETS:
        files[target] = _save({**state, "stft.window": torch.hann_window(16)}, tmp_path, target)
    load_model(tmp_path)  # openunmix < 1.1 kept its window in the model
    files["other"].unlink()
    files["other"] = _save({**state, "fc4.weight": torch.zeros(3)}, tmp_path, "other")
    with pytest.raises(CheckpointError, match=r"other-[0-9a-f]{8}\.pth: 1 weights do not belong.*fc4"):
        load_model(tmp_path)


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
    assert umx_files.CATALOG["umxl"].files["vocals"] == "vocals-bccbd9aa.pth"
    assert umx_files.CATALOG["umxhq"].files["bass"] == "bass-8d85a5bd.pth"
    assert umx_files.CATALOG["umx"].files["other"] == "other-f8e132cc.pth"
    assert [umx_files.CATALOG[n].hidden_size for n in ("umxl", "umxhq", "umx")] == [1024, 512, 512]


def test_one_registry_entry_no_checkpoint_may_name_it():
    from numba_demucs.models.openunmix import OpenUnmixConfig, OpenUnmixSeparator

    family = registry.lookup("OpenUnmix", "x")
    assert family.model is OpenUnmixSeparator and family.read_config == OpenUnmixConfig.from_arguments
    assert family.options == ("niter", "softmask", "residual", "wiener_win_len")
    # its files are bare state dicts: a .th pickle naming openunmix's class stays refused
    assert not any("openunmix" in name.lower() for name in registry.qualified_names())
    with pytest.raises(UnsupportedModelError, match="x.th: model class openunmix.model.OpenUnmix"):
        registry.lookup("openunmix.model.OpenUnmix", "x.th")


def test_options_reach_the_config_checked(repo):
    model = load_model(
        repo, options={"niter": 2, "residual": True, "softmask": True, "wiener_win_len": 0})
    config = model.config
    assert (config.niter, config.residual, config.softmask, config.wiener_win_len) == (2, True, True, 0)
    assert model.sources == ["vocals", "drums", "bass", "other", "residual"]
    for bad, message in [({"niter": "2"}, "niter must be an integer >= 0, got '2'"),
                         ({"niter": -1}, "niter must be an integer >= 0"),
                         ({"softmask": 1}, "softmask must be True or False"),
                         ({"wiener_win_len": 2.5}, "wiener_win_len must be an integer"),
                         ({"shifts": 2}, "OpenUnmix has no option shifts")]:
        with pytest.raises(UnsupportedModelError, match=f"^{repo}: .*{message}"):
            load_model(repo, options=bad)


def test_demucs_models_refuse_the_options(tmp_path):
    from fractions import Fraction

    from numba_demucs.debug import reference

    tiny = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), t_layers=2, bottom_channels=16,
                dconv_mode=3)
    path = reference.save_safetensors(reference.build_model("htdemucs", seed=2, **tiny), tmp_path)
    with pytest.raises(UnsupportedModelError,
                       match=f"^{path}: niter, residual: only Open-Unmix models take these "
                             "options, not HTDemucs"):
        load_model(path, options={"niter": 2, "residual": True})
