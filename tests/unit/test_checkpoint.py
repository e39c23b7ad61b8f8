"""Checkpoint reading: both formats, bags, and refusal of unsafe, corrupted or unsupported files."""
import io
import json
import pickle
import sys
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import torch

import numba_demucs
from numba_demucs import (CheckpointError, NumbaDemucsError, UnsafeCheckpointError,
                          UnsupportedModelError)
from numba_demucs.checkpoint import read_package
from numba_demucs.debug import reference

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 4), t_layers=1, bottom_channels=16,
            dconv_mode=3)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model = reference.build_model("htdemucs", seed=3, **TINY)
    return model, reference.save_th(model, folder, "aaaa0001"), \
        reference.save_safetensors(model, folder, "aaaa0001")


def test_th_package_fields(tiny_files):
    model, th, _ = tiny_files
    package = read_package(th)
    assert package.klass == "demucs.htdemucs.HTDemucs"
    assert package.args == (reference.FOUR_SOURCES,)
    assert package.kwargs["segment"] == Fraction(1, 4)
    assert isinstance(package.kwargs["segment"], Fraction)
    expected = {k: v.half().numpy() for k, v in model.state_dict().items()}
    assert package.state.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(package.state[key], value)


def test_safetensors_file_is_what_demucs_reads(tiny_files):
    """Our fixture writer produces files demucs' own loader accepts, with the same weights."""
    from demucs.hf import load_safetensors_model

    model, _, st = tiny_files
    loaded = load_safetensors_model(st)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value.half().float())
    package = read_package(st)
    assert package.kwargs["segment"] == Fraction(1, 4)


def test_formats_load_identically(tiny_files):
    _, th, st = tiny_files
    a, b = numba_demucs.load_model(th), numba_demucs.load_model(st)
    params_b = dict(b.parameters())
    for key, value in a.parameters():
        np.testing.assert_array_equal(value, params_b[key])


def _th_with_pickle(path, payload: bytes):
    """A zip laid out like torch.save's, with our own data.pkl."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_th_naming_os_system_is_refused_before_running(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"klass": _Exploit(marker), "args": (), "kwargs": {}, "state": {}},
                           protocol=2)
    path = _th_with_pickle(tmp_path / "evil.th", payload)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.th.*(os|posix)\.system"):
        numba_demucs.load_model(path)
    assert not marker.exists()


def test_th_naming_builtins_eval_is_refused(tmp_path):
    payload = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R."
    path = _th_with_pickle(tmp_path / "eval.th", payload)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        read_package(path)


def test_safetensors_naming_a_function_is_refused(tmp_path, tiny_files):
    from safetensors.numpy import save_file

    path = tmp_path / "evil.safetensors"
    metadata = {"klass": "os.system", "args": json.dumps(["touch x"]), "kwargs": "{}"}
    save_file({"w": np.zeros(2, np.float16)}, str(path), metadata=metadata)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.safetensors.*os\.system"):
        numba_demucs.load_model(path)


def test_safetensors_structure_naming_a_class_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "structure.safetensors"
    structure = {"_dict": [["x", {"_class": "subprocess.Popen"}]]}
    metadata = {"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": "{}",
                "structure": json.dumps(structure)}
    save_file({"w": np.zeros(2, np.float16)}, str(path), metadata=metadata)
    with pytest.raises(UnsafeCheckpointError, match="subprocess.Popen"):
        read_package(path)


@pytest.mark.parametrize("suffix", [".th", ".safetensors"])
def test_truncated_checkpoint(tmp_path, tiny_files, suffix):
    source = tiny_files[1] if suffix == ".th" else tiny_files[2]
    data = source.read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"cut\\{suffix}"):
        numba_demucs.load_model(path)


@pytest.mark.parametrize("suffix", [".th", ".safetensors"])
def test_garbage_checkpoint(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError, match=f"noise\\{suffix}"):
        numba_demucs.load_model(path)


def test_th_with_corrupted_tensor_data(tmp_path, tiny_files):
    source = zipfile.ZipFile(tiny_files[1])
    path = tmp_path / "corrupt.th"
    with zipfile.ZipFile(path, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("data/0"):
                data = data[:3]
            out.writestr(item, data)
    with pytest.raises(CheckpointError, match=r"corrupt\.th.*truncated"):
        numba_demucs.load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothere\.th: no such checkpoint"):
        numba_demucs.load_model(tmp_path / "nothere.th")


def test_unsupported_class(tmp_path, monkeypatch):
    """A class the registry does not know (every demucs class is registered now, so one is
    taken out for the test) is refused naming the file and the class."""
    from demucs.hdemucs import HDemucs

    from numba_demucs import registry

    monkeypatch.delitem(registry._FAMILIES, "HDemucs")
    model = HDemucs(["a", "b"], channels=4, depth=2)
    path = reference.save_th(model, tmp_path, "bbbb0002")
    with pytest.raises(UnsupportedModelError, match=r"bbbb0002.*demucs\.hdemucs\.HDemucs"):
        numba_demucs.load_model(path)


@pytest.mark.parametrize("kwargs,message", [
    (dict(cac=False), "cac=False"),
    (dict(multi_freqs=[0.5]), "multi_freqs"),
    (dict(t_emb="scaled"), "t_emb='scaled'"),
])
def test_unsupported_arguments_are_named(tmp_path, kwargs, message):
    model = reference.build_model("htdemucs", perturb=False, **{**TINY, **kwargs})
    path = reference.save_safetensors(model, tmp_path, "cccc0003")
    with pytest.raises(UnsupportedModelError, match=rf"HTDemucs\(.*{message}.*\) is not supported"):
        numba_demucs.load_model(path)


def test_state_that_does_not_fit_the_architecture(tiny_files):
    from numba_demucs.models.config import HTDemucsConfig
    from numba_demucs.models.htdemucs import HTDemucs

    package = read_package(tiny_files[2])
    config = HTDemucsConfig.from_arguments(package.args, package.kwargs)
    state = dict(package.state)
    state["encoder.0.conv.weight"] = state["encoder.0.conv.weight"][:1]
    with pytest.raises(CheckpointError, match=r"edited: weight encoder.0.conv.bias has shape \(8,\), expected \(1,\)"):
        HTDemucs(config, state, origin="edited")
    state = dict(package.state)
    state["encoder.0.dconv.layers.0.0.weight"] = state["encoder.0.dconv.layers.0.0.weight"][:, :3]
    model = HTDemucs(config, state, origin="edited")
    with pytest.raises(CheckpointError, match="edited: weights do not fit.*encoder.0.dconv.layers.0.0 takes 3 channels"):
        model.forward(np.zeros((2, 1000), np.float32))
    del state["encoder.0.conv.weight"]
    with pytest.raises(CheckpointError, match="missing weight encoder.0.conv.weight"):
        HTDemucs(config, state, origin="edited")
    state = dict(package.state, **{"encoder.9.conv.weight": np.zeros(1)})
    with pytest.raises(CheckpointError, match="1 weights do not belong to this architecture: encoder.9"):
        HTDemucs(config, state, origin="edited")


def test_bag_yaml(tmp_path, tiny_files):
    _, th, st = tiny_files
    (tmp_path / th.name).write_bytes(th.read_bytes())
    (tmp_path / "bag.yaml").write_text(
        "models: ['aaaa0001', 'aaaa0001']\nweights: [[1., 0., 1., 1.], [0., 1., 1., 0.]]\nsegment: 0.2\n")
    bag = numba_demucs.load_model(tmp_path / "bag.yaml")
    assert isinstance(bag, numba_demucs.BagOfModels)
    assert bag.weights == [[1, 0, 1, 1], [0, 1, 1, 0]]
    assert all(m.segment == 0.2 for m in bag.models)
    # .origin: the file each came from (error messages); .sources: the stem names
    assert bag.origin == str(tmp_path / "bag.yaml")
    assert [m.origin for m in bag.models] == [str(tmp_path / th.name)] * 2
    assert bag.sources == reference.FOUR_SOURCES
    (tmp_path / "broken.yaml").write_text("models: ['ffff9999']\n")
    with pytest.raises(CheckpointError, match="broken.yaml: bag member ffff9999 not found"):
        numba_demucs.load_model(tmp_path / "broken.yaml")


def test_no_torch_import_in_a_separation(tmp_path, tiny_files):
    """A fresh interpreter loads both formats and separates without importing torch."""
    import subprocess

    code = f"""
import sys, numpy as np
import numba_demucs
for path in [{str(tiny_files[1])!r}, {str(tiny_files[2])!r}]:
    model = numba_demucs.load_model(path)
    out = numba_demucs.apply_model(model, np.zeros((1, 2, 20000), np.float32) + 0.1, shifts=1, seed=0)
    assert out.shape == (1, 4, 2, 20000)
assert 'torch' not in sys.modules, 'torch was imported'
assert 'demucs' not in sys.modules, 'demucs was imported'
print('ok')
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_errors_share_one_base():
    for error in (CheckpointError, UnsafeCheckpointError, UnsupportedModelError):
        assert issubclass(error, NumbaDemucsError)
