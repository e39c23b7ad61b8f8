"""Hostile bag yamls: members named by a path out of the bag's folder, weights and segment
of the wrong type or value. Each is refused with a CheckpointError naming the yaml."""
from fractions import Fraction

import pytest
import yaml

from numba_demucs import load_model
from numba_demucs.checkpoint import parse_bag
from numba_demucs.debug import reference
from numba_demucs.errors import CheckpointError

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 4), t_layers=1, bottom_channels=16,
            dconv_mode=3)


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A loadable model in a folder next to the bag's folder."""
    folder = tmp_path_factory.mktemp("outside")
    return reference.save_th(reference.build_model("htdemucs", seed=3, **TINY), folder, "cccc0001")


def _bag(tmp_path, content, name="bag.yaml"):
    folder = tmp_path / "bag"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


@pytest.mark.parametrize("member", ["../{parent}/cccc0001", "{absolute}/cccc0001", "sub/cccc0001",
                                    "..", ".hidden", "a\\b", "x" * 200])
def test_member_out_of_the_folder_refused(tmp_path, outside, member):
    member = member.format(parent=outside.parent.name, absolute=outside.parent)
    # the bag's folder and the model's share a parent: "../<folder>/cccc0001" would resolve
    (tmp_path / outside.parent.name).symlink_to(outside.parent)
    path = _bag(tmp_path, {"models": [member]})
    with pytest.raises(CheckpointError, match=f"^{path}: bag member .* is not a model name"):
        load_model(path)


def test_member_of_the_wrong_type_refused(tmp_path):
    for member, kind in [({"a": 1}, "dict"), ([1], "list"), (None, "NoneType"), (1.5, "float"),
                         (True, "bool")]:
        path = _bag(tmp_path, {"models": [member]})
        with pytest.raises(CheckpointError, match=f"^{path}: bag member .* is a {kind}, not a model name"):
            parse_bag(path)
    # an all-digit signature is read by yaml as an int, and is a name (demucs str()s it)
    assert parse_bag(_bag(tmp_path, "models: [12345678]\n")).signatures == ["12345678"]


ROW = "row 0 must be a non-empty list of finite numbers"


@pytest.mark.parametrize("weights,message", [
    ("yes", "must have one row per model"),
    ("[[1, 1], [1, 1]]", "must have one row per model"),
    ("['1, 1']", ROW),
    ("[[]]", ROW),
    ("[['1', 1]]", ROW),
    ("[[true, 1]]", ROW),
    ("[[1, null]]", ROW),
    ("[[1, .inf]]", ROW),
    ("[[1, .nan]]", ROW),
    ("[[1.0e+400, 1]]", ROW),
])
def test_weights_of_the_wrong_type_refused(tmp_path, weights, message):
    path = _bag(tmp_path, f"models: [aaaa0001]\nweights: {weights}\n")
    with pytest.raises(CheckpointError, match=f"^{path}: 'weights' {message}"):
        parse_bag(path)


def test_weights_that_divide_by_zero_refused(tmp_path):
    ragged = _bag(tmp_path, {"models": ["a1", "a2"], "weights": [[1, 1], [1]]}, "ragged.yaml")
    with pytest.raises(CheckpointError, match=f"^{ragged}: 'weights' rows have different lengths"):
        parse_bag(ragged)
    for weights in ([[0, 0, 0, 0], [0, 0, 0, 0]], [[1, 0, 1, 1], [0, 0, 1, 1]],
                    [[1, -1, 1, 1], [1, 1, 1, 1]]):
        path = _bag(tmp_path, {"models": ["a1", "a2"], "weights": weights}, "zero.yaml")
        source = 0 if weights[0][0] == 0 else 1
        with pytest.raises(CheckpointError,
                           match=f"^{path}: 'weights' of source #{source} sum to zero"):
            load_model(path)


@pytest.mark.parametrize("segment", ["0", "-1", "'5'", "true", "[5]", ".inf", ".nan", "{a: 1}"])
def test_segment_of_the_wrong_type_or_value_refused(tmp_path, segment):
    path = _bag(tmp_path, f"models: [a1]\nsegment: {segment}\n")
    with pytest.raises(CheckpointError, match=f"^{path}: 'segment' must be a positive number of seconds"):
        load_model(path)


def test_a_good_bag_still_loads(tmp_path, outside):
    folder = tmp_path / "bag"
    folder.mkdir()
    (folder / outside.name).write_bytes(outside.read_bytes())
    path = _bag(tmp_path, "models: [cccc0001, cccc0001]\nweights: [[1, 0, 1, 1], [1, 1, 0, 1]]\n"
                          "segment: 0.2\n")
    bag = load_model(path)
    assert bag.weights == [[1, 0, 1, 1], [1, 1, 0, 1]] and bag.segment == 0.2
