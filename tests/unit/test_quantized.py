"""DiffQ-quantized checkpoints (mdx_q, mdx_extra_q) read without torch.

Each fixture is made as demucs' training stack makes one: a ``DiffQuantizer`` over a
perturbed model of one of mdx's architectures (small widths; ``min_size`` lowered so that
most weights are quantized at these widths), its ``get_quantized_state()`` saved in demucs'
``serialize_model`` package. Our dequantized weights must equal what diffq's
``restore_quantized_state`` puts in a model, bit for bit.
"""
import io
import zipfile

import numpy as np
import pytest

from numba_demucs import checkpoint, registry
from numba_demucs.debug import reference
from numba_demucs.errors import CheckpointError, UnsafeCheckpointError, UnsupportedModelError
from numba_demucs.loading import load_model, model_from_package

torch = pytest.importorskip("torch")
diffq = pytest.importorskip("diffq")

MIN_SIZE = 0.002  # 524 values: every conv/LSTM weight of these small models is quantized
# id -> (architecture, small overrides)
SMALL = {
    "demucs_0d19c1c6": ("demucs_0d19c1c6", dict(channels=8)),
    "demucs_0d19c1c6_depth4": ("demucs_0d19c1c6", dict(channels=8, depth=4)),
    "demucs_9a6b4851": ("demucs_9a6b4851", dict(channels=8, dconv_mode=3, norm_starts=2)),
    "hdemucs_mmi": ("hdemucs_mmi", dict(channels=8)),
    "hdemucs_c511e2ab": ("hdemucs_c511e2ab", dict(channels=8)),
    "hdemucs_7d865c68": ("hdemucs_7d865c68", dict(channels=8)),
    "hdemucs_5d2d6c55": ("hdemucs_5d2d6c55", dict(channels=8, context_enc=1, dconv_mode=3)),
    "hdemucs_channels_time": ("hdemucs_mmi", dict(channels=8, channels_time=16, depth=5,
                                                  freq_emb=0.0)),
}


def _build(key, seed, perturb=True):
    architecture, overrides = SMALL[key]
    return reference.build_model(architecture, seed=seed, perturb=perturb, **overrides)


def _config(model):
    args, kwargs = model._init_args_kwargs
    family = registry.lookup(model.__class__.__name__, "test")
    return family, family.read_config(args, kwargs, "test")


@pytest.mark.parametrize("architecture", list(SMALL))
def test_layout_is_named_parameters_order(architecture):
    """The partition of a quantized state is positional: our layout must list PyTorch's
    parameters in the same order with the same shapes."""
    model = _build(architecture, seed=1, perturb=False)
    family, config = _config(model)
    assert family.layout(config) == [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def _restored(architecture, path):
    """diffq's own reading of the file: torch.load + restore_quantized_state on a fresh model."""
    package = torch.load(path, "cpu", weights_only=False)
    model = _build(architecture, seed=99, perturb=False)
    diffq.restore_quantized_state(model, package["state"])
    return {name: p.detach().numpy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("architecture,options", [
    ("demucs_0d19c1c6", {}),
    ("demucs_0d19c1c6_depth4", {"torch_pack": True}),  # diffq's torch_pack is slow: small
    ("demucs_9a6b4851", {"packed": False}),
    ("hdemucs_mmi", {}),
    ("hdemucs_c511e2ab", {}),
    ("hdemucs_7d865c68", {}),
    ("hdemucs_5d2d6c55", {}),
])
def test_dequantized_state_equals_diffq_restore(tmp_path, architecture, options):
    model = _build(architecture, seed=3)
    quantizer, state = reference.quantize(model, min_size=MIN_SIZE, seed=3, **options)
    bits = torch.cat([quantizer._get_bits(q.logit).round() for q in quantizer._qparams])
    assert set(bits.unique().tolist()) == set(range(2, 15))  # every width occurs
    assert len(state["quantized"]) >= 10 and state["others"]
    path = reference.save_quantized_th(model, tmp_path, state=state)
    package = checkpoint.read_th(path)
    assert package.quantized is not None and package.state == {}
    family, config = _config(model)
    from numba_demucs.quantized import dequantize
    ours = dequantize(package.quantized, family.layout(config), str(path))
    theirs = _restored(architecture, path)
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].dtype == np.float32
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    # and the model builds from it
    assert model_from_package(package) is not None


@pytest.fixture
def small_demucs():  # fresh: a model takes one DiffQuantizer only
    return _build("demucs_0d19c1c6", seed=5)


def _save_altered(small_demucs, folder, alter, **options):
    _, state = reference.quantize(small_demucs, min_size=MIN_SIZE, seed=5, **options)
    alter(state)
    return reference.save_quantized_th(small_demucs, folder, state=state)


def _largest(state):
    """Index of the quantized entry with the most groups."""
    return max(range(len(state["quantized"])),
               key=lambda i: state["quantized"][i][2].numel())


def _truncate_levels(state):
    entry = state["quantized"][_largest(state)]
    levels = entry[0]
    width = max(i for i, v in enumerate(levels) if v is not None)
    assert levels[width].shape[0] > 1
    levels[width] = levels[width][:1].clone()  # lines cut: values missing


def _shrink_bit_buffer(state):
    i = _largest(state)
    levels, scales, bits = state["quantized"][i]
    state["quantized"][i] = (levels, scales, bits[:, :2].clone())  # 2 bits: widths 2..5


def _bits_to_fifteen(state):
    i = _largest(state)
    levels, scales, bits = state["quantized"][i]
    assert bits.shape[1] == 4  # stored widths 0..12
    words = bits.clone()
    words[:, [0, 2, 3]] = -1  # every stored width 0b1101 = 13 (+ min_bits 2 = 15),
    words[:, 1] = 0           # a width diffq never packs
    state["quantized"][i] = (levels, scales, words)


def _drop_entry(state):
    state["quantized"].pop()


def _oversized_bits(state):
    i = _largest(state)
    levels, scales, bits = state["quantized"][i]
    state["quantized"][i] = (levels, scales, bits[:, :1].clone() * 0 + 1)  # all width 3


@pytest.mark.parametrize("alter,message", [
    (_truncate_levels, r"needs \d+ values, the packed buffer holds"),
    (_shrink_bit_buffer, r"(no packed levels|does not fit|needs)"),
    (_bits_to_fifteen, r"bit width 15 outside 1\.\.14"),
    (_drop_entry, r"holds \d+ quantized and \d+ plain parameters; this architecture has"),
    (_oversized_bits, r"(no packed levels|needs \d+ values)"),
])
def test_corrupted_quantized_state_is_refused(tmp_path, small_demucs, alter, message):
    path = _save_altered(small_demucs, tmp_path, alter)
    with pytest.raises(CheckpointError, match=message) as raised:
        load_model(path)
    assert str(raised.value).startswith(str(path))
    assert "corrupted quantized (DiffQ) state" in str(raised.value)


def test_corrupted_torch_pack_buffer_is_refused(tmp_path, small_demucs):
    def alter(state):
        i = _largest(state)
        levels, scales, bits = state["quantized"][i]
        state["quantized"][i] = (levels, scales, bits[:, :1].clone())
    path = _save_altered(small_demucs, tmp_path, alter, torch_pack=True)
    with pytest.raises(CheckpointError, match=r"needs \d+ values, the packed buffer holds"):
        load_model(path)


@pytest.mark.parametrize("alter,what", [
    (lambda s: s.pop("meta"), r"without 'meta'"),
    (lambda s: s["meta"]["init_kwargs"].update(exclude=["*.bias"]), r"with excluded parameters"),
    (lambda s: s["meta"]["init_kwargs"].update(penalty=3), r"with quantizer arguments"),
    (lambda s: s["meta"].update(klass=type(s)), r"of quantizer 'builtins.dict'|refus"),
])
def test_unknown_diffq_layouts_are_refused_by_name(tmp_path, small_demucs, alter, what):
    path = _save_altered(small_demucs, tmp_path, alter)
    with pytest.raises((UnsupportedModelError, UnsafeCheckpointError), match=what) as raised:
        load_model(path)
    assert str(raised.value).startswith(str(path))
    if raised.type is UnsupportedModelError:
        assert "diffq layout" in str(raised.value) and "is not supported" in str(raised.value)


def test_quantizer_class_from_another_module_is_refused(tmp_path, small_demucs):
    """Only diffq.diffq.DiffQuantizer is an allowed pickle global (an inert reference);
    UniformQuantizer's module is not allowed at all."""
    from diffq import UniformQuantizer

    path = _save_altered(small_demucs, tmp_path,
                         lambda s: s["meta"].update(klass=UniformQuantizer))
    with pytest.raises(UnsafeCheckpointError, match="diffq.uniform.UniformQuantizer"):
        load_model(path)


def test_quantizer_class_is_not_a_model_class(tmp_path, small_demucs):
    _, state = reference.quantize(small_demucs, min_size=MIN_SIZE, seed=5)
    buffer = io.BytesIO()
    torch.save({"klass": diffq.DiffQuantizer, "args": (), "kwargs": {}, "state": state},
               buffer)
    path = tmp_path / "q.th"
    path.write_bytes(buffer.getvalue())
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="klass entry is not a model class"):
        load_model(path)


def _flatten(node, tensors):
    """demucs' Hugging Face export of a nested state (tools/export_hf.py's layout, as
    demucs.hf._unflatten_state reads it): tensors by key, the rest as a JSON structure."""
    if isinstance(node, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = node.contiguous()
        return {"_tensor": key}
    if isinstance(node, dict):
        return {"_dict": [[k, _flatten(v, tensors)] for k, v in node.items()]}
    if isinstance(node, list):
        return {"_list": [_flatten(v, tensors) for v in node]}
    if isinstance(node, tuple):
        return {"_tuple": [_flatten(v, tensors) for v in node]}
    if isinstance(node, type):
        return {"_class": f"{node.__module__}.{node.__name__}"}
    return node


def test_quantized_safetensors_as_demucs_hf_reads_it(tmp_path):
    """The Hugging Face form of a quantized member: demucs.hf.load_safetensors_model and our
    reader give the same weights, bit for bit."""
    import json

    from demucs import hf
    from safetensors.torch import save_file

    model = _build("hdemucs_c511e2ab", seed=4)
    _, state = reference.quantize(model, min_size=MIN_SIZE, seed=4)
    tensors = {}
    structure = _flatten(state, tensors)
    args, kwargs = model._init_args_kwargs
    path = tmp_path / "f0000001.safetensors"
    save_file(tensors, str(path), metadata={
        "klass": "demucs.hdemucs.HDemucs", "args": json.dumps(list(args)),
        "kwargs": json.dumps(reference._encode_json(kwargs)), "structure": json.dumps(structure)})
    theirs = {n: p.detach().numpy() for n, p in hf.load_safetensors_model(path).named_parameters()}
    package = checkpoint.read_safetensors(path)
    family, config = _config(model)
    from numba_demucs.quantized import dequantize
    ours = dequantize(package.quantized, family.layout(config), str(path))
    assert list(ours) == list(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
