"""``eval report`` on result files of known values: the SiSEC and MDX aggregates, the mean of
sources over vocals, drums, bass and other only, the CSV and the tables' protocol titles."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from numba_demucs.eval import cli, report, runner

NAN = float("nan")
# Per track, per target: (SDR of each frame, uSDR). SIR, ISR, SAR are SDR + 1, + 2, + 3 and
# SI-SDR is uSDR - 0.5, so a metric read as another would show.
TRACKS = {
    "A": {"vocals": ([1, 2, 3, NAN], 1.0), "drums": ([4], 4.0), "bass": ([0], 0.0),
          "other": ([2], 2.0), "accompaniment": ([20], 20.0)},
    "B": {"vocals": ([5, 7], 2.0), "drums": ([4], 4.0), "bass": ([0], 1.0),
          "other": ([2], 2.0), "accompaniment": ([20], 20.0)},
    "C": {"vocals": ([13], 6.0), "drums": ([4], 4.0), "bass": ([0], 2.0),
          "other": ([2], 2.0), "accompaniment": ([20], 20.0)},
}
# By hand. SiSEC: vocals per-track medians 2, 6, 13 -> 6; drums 4; bass 0; other 2; the
# mean of the four is 3 (with accompaniment it would be 6.4).
SISEC_SDR = {"vocals": 6.0, "drums": 4.0, "bass": 0.0, "other": 2.0, "accompaniment": 20.0}
SISEC_MEAN = 3.0
# MDX: means over tracks: vocals (1 + 2 + 6) / 3 = 3 (the median would be 2), drums 4,
# bass 1, other 2; the mean of the four is 2.5.
MDX_USDR = {"vocals": 3.0, "drums": 4.0, "bass": 1.0, "other": 2.0, "accompaniment": 20.0}
MDX_MEAN = 2.5


def document(track, with_track_metrics=True):
    targets = []
    for name, (frames, usdr) in TRACKS[track].items():
        target = {"name": name, "frames": [
            {"time": float(i), "duration": 1.0,
             "metrics": {"SDR": v, "SIR": v + 1, "ISR": v + 2, "SAR": v + 3}}
            for i, v in enumerate(frames)]}
        if with_track_metrics:
            target["track"] = {"uSDR": usdr, "SI-SDR": usdr - 0.5}
        targets.append(target)
    return {"targets": targets}


@pytest.fixture
def folders(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "frames_only"
    for folder, with_track in ((ours, True), (theirs, False)):
        (folder / "test").mkdir(parents=True)
        for track in TRACKS:
            (folder / "test" / f"{track}.json").write_text(
                json.dumps(document(track, with_track)))
    return ours, theirs


def test_sisec_and_mdx_aggregates(folders):
    ours, theirs = folders
    results = report.read_results(ours)
    sisec, mdx = report.aggregate(results), report.mdx_aggregate(results)
    for target in SISEC_SDR:
        assert sisec[target]["SDR"] == SISEC_SDR[target]
        assert sisec[target]["SAR"] == SISEC_SDR[target] + 3
        assert mdx[target]["uSDR"] == pytest.approx(MDX_USDR[target])
        assert mdx[target]["SI-SDR"] == pytest.approx(MDX_USDR[target] - 0.5)
    assert report.mean_of_sources(sisec)["SDR"] == SISEC_MEAN
    assert report.mean_of_sources(sisec)["ISR"] == SISEC_MEAN + 2
    assert report.mean_of_sources(mdx)["uSDR"] == pytest.approx(MDX_MEAN)
    # A folder of museval's own files has no whole-track metrics: NaN, not a partial mean.
    assert all(math.isnan(v["uSDR"]) for v in report.mdx_aggregate(
        report.read_results(theirs)).values())
    # Without one of the four sources there is no mean of sources.
    del sisec["bass"]
    assert math.isnan(report.mean_of_sources(sisec)["SDR"])


def test_sisec_aggregate_equals_museval_methodstore(folders):
    museval = pytest.importorskip("museval")
    ours, _ = folders
    store = museval.MethodStore()
    store.add_eval_dir(str(ours))
    theirs = store.agg_frames_tracks_scores()
    mine = report.aggregate(report.read_results(ours))
    assert len(theirs) == 5 * 4
    for (_, target, metric), value in theirs.items():
        assert mine[target][metric] == value


def test_report_command_tables_and_csv(folders, tmp_path, capsys):
    ours, theirs = folders
    table = tmp_path / "scores.csv"
    assert cli.main(["eval", "report", str(ours), "--compare", str(theirs),
                     "--csv", str(table)]) == 0
    printed = capsys.readouterr().out
    # (titles wrap to the table's width: check their first words)
    assert "SiSEC 2018 aggregate" in printed and "MDX 2021 aggregate" in printed
    mean_rows = [line for line in printed.splitlines()
                 if "mean of vocals, drums, bass, other" in line]
    assert len(mean_rows) == 2  # one per aggregate
    assert "3.000" in mean_rows[0] and "2.500" in mean_rows[1]
    rows = list(csv.DictReader(table.open()))
    by_key = {(r["method"], r["track"], r["target"], r["statistic"]): r for r in rows}
    sisec = by_key[("ours", "*", report.MEAN_LABEL, report.SISEC_STATISTIC)]
    assert float(sisec["SDR"]) == SISEC_MEAN and sisec["uSDR"] == ""
    mdx = by_key[("ours", "*", report.MEAN_LABEL, report.MDX_STATISTIC)]
    assert float(mdx["uSDR"]) == pytest.approx(MDX_MEAN) and mdx["SDR"] == ""
    assert float(mdx["SI-SDR"]) == pytest.approx(MDX_MEAN - 0.5)
    track = by_key[("ours", "A", "vocals", "track")]
    assert float(track["SDR"]) == 2.0 and float(track["uSDR"]) == 1.0
    assert by_key[("frames_only", "A", "vocals", "track")]["uSDR"] == ""


def test_runner_documents_say_which_protocol(tmp_path):
    """Every file we write names the protocol of each number; museval's schema accepts it."""
    museval = pytest.importorskip("museval")
    sdr = np.array([[1.0, 2.0]])
    whole = {"uSDR": np.array([3.25]), "SI-SDR": np.array([np.inf])}
    document = runner.scores_document(["vocals"], sdr, sdr, sdr, sdr, whole=whole)
    assert set(document["protocols"]) == {"frames", "uSDR", "SI-SDR"}
    assert "1e-7" in document["protocols"]["uSDR"]
    # an infinite value is written as NaN, museval's rule for every number of the file
    assert document["targets"][0]["track"]["uSDR"] == 3.25
    assert math.isnan(document["targets"][0]["track"]["SI-SDR"])
    store = museval.TrackStore(track_name="x")
    store.scores = json.loads(json.dumps(document))
    store.validate()
    path = tmp_path / "x.json"
    runner.write_json_atomically(path, document)
    scores = report.read_track(path)
    assert scores["vocals"]["uSDR"] == 3.25 and math.isnan(scores["vocals"]["SI-SDR"])
