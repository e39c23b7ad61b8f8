"""debug trace --onnx: demucs' HTDemucs core (STFT-free, as demucs-onnx exports it) exported
with torch.onnx and run in ONNX Runtime conforms to PyTorch point by point; the same export
with one initializer scaled by 1.01 is named at the module that owns it.

The golden folder's toy-width weights (reference.TINY) keep the export to seconds.
"""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from numba_demucs.cli import main
from numba_demucs.debug import reference
from numba_demucs.debug.golden import make_golden, read_golden
from numba_demucs.debug.onnx_trace import export_core, module_outputs, module_path


def test_module_path_from_exporter_scopes():
    assert module_path("/encoder.0/conv/Conv") == "encoder.0.conv"
    # a Sequential's items are named relative to the module that called the Sequential
    assert module_path("/encoder.0/dconv/layers.0/layers.0.6/Mul") == "encoder.0.dconv.layers.0.6"
    assert module_path("/crosstransformer/layers_t.4/norm_out/Add") == "crosstransformer.layers_t.4.norm_out"
    assert module_path("/Constant") == ""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    make_golden("htdemucs", folder / "golden", seed=1, seconds=0.3, tiny=True)
    golden = read_golden(folder / "golden")
    path = export_core(reference.load_reference(golden.checkpoint), folder / "core.onnx")
    return golden, path


def _trace_and_conform(golden, model_path, tmp_path):
    theirs = tmp_path / "theirs.jsonl"
    assert main(["debug", "trace", "--onnx", str(model_path), "--input", str(golden.input),
                 "-o", str(theirs)]) == 0
    code = main(["debug", "conform", str(theirs), "--golden", str(golden.folder),
                 "--json", str(tmp_path / "d.json")])
    return code, json.loads((tmp_path / "d.json").read_text())


def test_a_clean_export_conforms(exported, tmp_path):
    golden, path = exported
    code, result = _trace_and_conform(golden, path, tmp_path)
    assert code == 0
    compared = {p["name"] for p in result["points"]}
    # every encoder, transformer and decoder layer is found from the scopes alone
    for name in ("input.freq", "input.time", "encoder.0", "tencoder.3.dconv.layers.1.6",
                 "crosstransformer.layers.1.cross_attn", "crosstransformer.layers_t.4",
                 "decoder.3", "tdecoder.3"):
        assert name in compared, name
    assert len(compared) > 400
    # the cross-transformer returns two tensors: left out, not guessed
    assert "crosstransformer" in {p["name"] for p in result["only_reference"]}


@pytest.mark.parametrize("initializer,module", [
    ("encoder.1.dconv.layers.0.3.weight", "encoder.1.dconv.layers.0.3"),
    ("tdecoder.2.conv_tr.weight", "tdecoder.2.conv_tr"),
])
def test_a_scaled_initializer_is_named_at_its_module(exported, tmp_path, initializer, module):
    golden, path = exported
    model = onnx.load(str(path))
    (tensor,) = [t for t in model.graph.initializer if t.name == initializer]
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(1.01), initializer))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    code, result = _trace_and_conform(golden, broken, tmp_path)
    assert code == 1
    assert result["first_divergence"] == module


def test_module_outputs_are_in_graph_order(exported):
    _, path = exported
    names = [name for name, _ in module_outputs(onnx.load(str(path)))]
    assert names.index("encoder.0") < names.index("crosstransformer.layers.0") < names.index("tdecoder.3")
