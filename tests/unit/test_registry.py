"""The model registry: checkpoint classes -> our classes, the one load path, and the house rule
that no module of the package imports the package root."""
import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import numba_demucs
from numba_demucs import registry
from numba_demucs.errors import UnsafeCheckpointError, UnsupportedModelError
from numba_demucs.models.config import HTDemucsConfig
from numba_demucs.models.htdemucs import HTDemucs

ROOT = Path(__file__).resolve().parents[2]


def test_htdemucs_is_registered_under_its_pickled_names():
    for name in ("HTDemucs", "demucs.htdemucs.HTDemucs"):
        family = registry.lookup(name, "x.th")
        assert family.model is HTDemucs
        assert family.read_config == HTDemucsConfig.from_arguments
    assert "demucs.htdemucs.HTDemucs" in registry.qualified_names()


def test_hdemucs_and_demucs_are_registered_under_their_pickled_names():
    from numba_demucs.models.config import DemucsConfig, HDemucsConfig
    from numba_demucs.models.demucs import Demucs
    from numba_demucs.models.hdemucs import HDemucs
    for name, model, read in (("demucs.hdemucs.HDemucs", HDemucs, HDemucsConfig.from_arguments),
                              ("demucs.demucs.Demucs", Demucs, DemucsConfig.from_arguments)):
        family = registry.lookup(name, "x.th")
        assert (family.model, family.read_config) == (model, read)
        assert registry.lookup(name.rsplit(".", 1)[1], "x.th") is family
    # demucs.wdemucs.Demucs is a different class under the same short name
    with pytest.raises(UnsupportedModelError, match="demucs.wdemucs.Demucs is not supported"):
        registry.lookup("demucs.wdemucs.Demucs", "x.th")


@pytest.mark.parametrize("read, refused", [
    ("hdemucs", {"hybrid": False}), ("hdemucs", {"wiener_iters": 1, "end_iters": 0}),
    ("hdemucs", {"cac": False, "wiener_iters": 1, "end_iters": 1}),
    ("demucs", {"lstm_layers": 2}), ("demucs", {"glu": False}), ("demucs", {"gelu": False})])
def test_unsupported_hdemucs_and_demucs_arguments_are_refused_by_name(read, refused):
    family = registry.lookup({"hdemucs": "demucs.hdemucs.HDemucs",
                              "demucs": "demucs.demucs.Demucs"}[read], "m/x.th")
    with pytest.raises(UnsupportedModelError) as caught:
        family.read_config((["a", "b"],), refused, "m/x.th")
    message = str(caught.value)
    assert message.startswith("m/x.th: ") and "is not supported" in message
    assert next(iter(refused)) in message


def test_model_modules_do_not_import_the_load_path():
    """Model and layer modules get a config and a state dict; reading files, choosing the
    class and loading belong to checkpoint, registry and loading."""
    banned = {"checkpoint", "loading", "registry", "pretrained"}
    offenders = []
    for folder in ("models", "layers", "kernels"):
        for path in sorted((ROOT / "numba_demucs" / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [a.name for a in node.names]
                    if node.level == 2 and (set(n.split(".")[0] for n in names) & banned):
                        offenders.append((path.name, node.lineno))
                    if node.level == 0 and node.module and any(
                            node.module == f"numba_demucs.{b}" or
                            node.module.startswith(f"numba_demucs.{b}.") for b in banned):
                        offenders.append((path.name, node.lineno))
    assert offenders == []


@pytest.mark.parametrize("name", ["demucs.tasnet.ConvTasNet", "ConvTasNet", "elsewhere.HTDemucs"])
def test_an_unregistered_class_is_refused_naming_class_and_file(name):
    with pytest.raises(UnsupportedModelError) as caught:
        registry.lookup(name, "models/bbbb0002.th")
    message = str(caught.value)
    assert message.startswith(f"models/bbbb0002.th: model class {name} is not supported")
    assert "demucs.htdemucs.HTDemucs" in message   # what is implemented


@dataclasses.dataclass
class _ToyConfig:
    sources: list
    gain: float = 1.0
    squash: bool = False

    @classmethod
    def read(cls, args, kwargs, origin):
        config = cls(*args, **kwargs)
        if config.squash:
            raise UnsupportedModelError(f"{origin}: Toy(squash=True) is not supported")
        return config


class _Toy:
    """Stands for a new model family: stems = gain * weight[stem] * mix."""

    def __init__(self, config, state, dtype, origin):
        self.config, self.origin, self.dtype = config, origin, np.dtype(dtype)
        self.weight = np.asarray(state["weight"], dtype=dtype)
        self.sources = list(config.sources)


@pytest.fixture
def toy_family():
    family = registry.register(registry.ModelFamily("Toy", _Toy, _ToyConfig.read, ("toys.toy",)))
    yield family
    registry.unregister("Toy")


def _save_toy(path, kwargs):
    weight = np.array([0.5, -2.0, 3.25], dtype=np.float16)
    save_file({"weight": weight}, str(path), metadata={
        "klass": "toys.toy.Toy", "args": json.dumps([["a", "b", "c"]]),
        "kwargs": json.dumps(kwargs)})
    return weight


def test_a_registered_class_loads_from_safetensors(tmp_path, toy_family):
    path = tmp_path / "toy.safetensors"
    weight = _save_toy(path, {"gain": 0.25})
    model = numba_demucs.load_model(path, dtype=np.float64)
    assert isinstance(model, _Toy)
    assert model.config == _ToyConfig(["a", "b", "c"], gain=0.25)
    assert model.origin == str(path)
    assert model.weight.dtype == np.float64
    np.testing.assert_array_equal(model.weight, [0.5, -2.0, 3.25])
    assert weight.dtype == np.float16
    _save_toy(path, {"squash": True})
    with pytest.raises(UnsupportedModelError, match=r"toy\.safetensors: Toy\(squash=True\)"):
        numba_demucs.load_model(path)


def test_an_unregistered_safetensors_class_is_refused(tmp_path):
    path = tmp_path / "toy.safetensors"
    _save_toy(path, {})
    with pytest.raises(UnsafeCheckpointError, match=r"toy\.safetensors: metadata names 'toys\.toy\.Toy'"):
        numba_demucs.load_model(path)


def _depth(path: Path) -> int:
    """How many packages deep ``path`` sits in the installed package (``numba_demucs/x.py``:
    1, ``numba_demucs/models/x.py`` and ``debug/x.py``, installed as numba_demucs.debug: 2)."""
    parts = path.relative_to(ROOT).parts
    return 2 if parts[0] in ("debug", "eval") else len(parts) - 1


def _imports_of_the_root(source: str, depth: int):
    """(line, statement) of every import of the package root itself: ``import numba_demucs``,
    or ``from numba_demucs import X`` / ``from .. import X`` where X is not a submodule."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name == "numba_demucs"]
        elif isinstance(node, ast.ImportFrom):
            absolute = node.level == 0 and node.module == "numba_demucs"
            relative = node.level == depth and node.module is None
            if absolute or relative:
                for alias in node.names:
                    submodule = ROOT / "numba_demucs" / alias.name
                    if not (submodule.with_suffix(".py").is_file() or submodule.is_dir()
                            or alias.name in ("debug", "eval")):
                        found.append((node.lineno, alias.name))
    return found


def test_no_module_of_the_package_imports_the_package_root():
    files = [p for folder in ("numba_demucs", "debug", "eval")
             for p in sorted((ROOT / folder).rglob("*.py"))
             if p != ROOT / "numba_demucs" / "__init__.py"]
    assert len(files) > 20
    offenders = {str(p.relative_to(ROOT)): found for p in files
                 if (found := _imports_of_the_root(p.read_text(), _depth(p)))}
    assert offenders == {}
    # the check sees such imports
    probe = "from .. import load_model\nfrom .. import trace\nimport numba_demucs\n" \
            "from numba_demucs import Separator\nfrom numba_demucs.loading import load_model\n"
    assert _imports_of_the_root(probe, 2) == [(1, "load_model"), (3, "import numba_demucs"),
                                              (4, "Separator")]
    assert _imports_of_the_root("from . import pretrained, load_model\n", 1) == \
        [(1, "load_model")]
