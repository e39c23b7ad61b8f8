"""Hostile museval JSON for `eval report`: written by museval's own TrackStore, then edited.
Each bad file is one EvaluationError naming it; a good one reads as museval wrote it."""
import json
import math
import re

import museval
import numpy as np
import pytest

from numba_demucs.errors import EvaluationError
from numba_demucs.eval import report


def _store(targets=("vocals", "drums")):
    store = museval.TrackStore(win=1.0, hop=1.0, track_name="song")
    for k, name in enumerate(targets):
        store.add_target(target_name=name, values={"SDR": [1.5 + k, np.nan], "SIR": [2.0, 3.0],
                                                   "ISR": [1.0, 1.0], "SAR": [4.0, 5.0]})
    return store.json


def test_museval_output_reads(tmp_path):
    path = tmp_path / "song.json"
    path.write_text(_store())
    scores = report.read_track(path)
    assert list(scores) == ["vocals", "drums"]
    assert scores["drums"]["SDR"][0] == 2.5 and math.isnan(scores["vocals"]["SDR"][1])


@pytest.mark.parametrize("edit,message", [
    (lambda text: re.sub(r"2\.50*", "1e400", text, 1), "not a readable results file .the number 1e400 overflows"),
    (lambda text: text.replace('"drums"', '"vocals"'), "target 'vocals' appears twice"),
    (lambda text: re.sub(r"2\.50*", '"2.5"', text, 1), "metric value '2.5' is not a number"),
    (lambda text: re.sub(r"2\.50*", "true", text, 1), "metric value 'True' is not a number"),
    (lambda text: re.sub(r"2\.50*", "[" * 100_000 + "]" * 100_000, text, 1),
     "not a readable results file .RecursionError"),
    (lambda text: re.sub(r"2\.50*", "9" * 5000, text, 1), "not a readable results file .ValueError"),
    (lambda text: text.replace('"name": "drums"', '"name": ["drums"]'), "not museval-format results"),
    (lambda text: json.dumps({"targets": {"vocals": 1}}), "not museval-format results"),
    (lambda text: "[1, 2]", "not museval-format results"),
    (lambda text: text[: len(text) // 2], "not a readable results file"),
])
def test_bad_results_are_one_clean_error(tmp_path, edit, message):
    path = tmp_path / "song.json"
    path.write_text(edit(_store()))
    with pytest.raises(EvaluationError, match=f"^{path}: {message}"):
        report.read_results(tmp_path)
