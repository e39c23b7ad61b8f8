"""``eval musdb`` with several models in one run: each model's estimates kept and reused.

Two small random htdemucs (different seeds, saved by demucs' own ``save_with_checksum``
recipe) on a synthesised MUSDB18-HQ folder of two short tracks. The kept estimates must be
sample for sample what ``numba-demucs separate`` writes for that model (float32, no
clipping), the scores must be BSS Eval of those stems, and a second run must separate
nothing.
"""
from __future__ import annotations

import shutil
from fractions import Fraction

import numpy as np
import pytest
import soundfile

pytest.importorskip("museval")
pytest.importorskip("demucs")

from numba_demucs import cli as package_cli  # noqa: E402
from numba_demucs.eval import bss_eval, cli, musdb, report, runner  # noqa: E402
from numba_demucs.eval.synthetic import write_track  # noqa: E402

TRACKS = {"Alpha - One": 1.6, "Beta - Two": 1.2}
LABELS = ("0123abcd", "4567cdef")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from numba_demucs.debug import reference as torch_reference

    base = tmp_path_factory.mktemp("multi")
    root = base / "musdb18hq"
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for name, seconds in TRACKS.items():
        write_track(root, name, seconds, rng)
    checkpoints = []
    for seed, label in zip((1, 2), LABELS):
        model = torch_reference.build_model(
            "htdemucs", seed=seed, channels=8, dconv_comp=4, segment=Fraction(1, 2),
            t_layers=2, bottom_channels=16)
        checkpoints.append(torch_reference.save_th(model, base, signature=label))
    return root, checkpoints


def _run(root, checkpoints, output):
    argv = ["eval", "musdb", "--root", str(root), "-o", str(output), "--no-progress",
            "--shifts", "0"]
    for checkpoint in checkpoints:
        argv += ["--checkpoint", str(checkpoint)]
    return cli.main(argv)


def _forbid_separation(monkeypatch):
    calls = []

    def separating(*args, **kwargs):
        calls.append(args)
        raise AssertionError("separated again")

    monkeypatch.setattr(runner, "normalised_apply", separating)
    return calls


def test_two_models_scored_estimates_kept_and_reused(setup, tmp_path, capsys, monkeypatch):
    root, checkpoints = setup
    output = tmp_path / "out"
    assert _run(root, checkpoints, output) == 0
    err = capsys.readouterr().err
    for label in LABELS:
        assert f"{label}: 2 scored" in err
    assert sorted(p.name for p in output.iterdir()) == sorted([*LABELS, "estimates"])

    # separate's stems for each model, float32 and unclipped, from the same mixtures
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in TRACKS:
        shutil.copy(root / "test" / name / "mixture.wav", inputs / f"{name}.wav")
    separated = tmp_path / "separated"
    for checkpoint in checkpoints:
        assert package_cli.main(["separate", "--checkpoint", str(checkpoint), "--shifts", "0",
                                 "--float32", "--clip-mode", "none", "-q", "-o",
                                 str(separated), *sorted(map(str, inputs.iterdir()))]) == 0

    kept = {}
    for label in LABELS:
        for name in TRACKS:
            folder = root / "test" / name
            references = np.stack([soundfile.read(folder / f"{s}.wav", dtype="float32")[0]
                                   for s in musdb.SOURCES])
            ours_stems = np.stack([soundfile.read(
                output / "estimates" / label / name / f"{s}.wav", dtype="float32")[0]
                for s in musdb.SOURCES])
            theirs_stems = np.stack([soundfile.read(
                separated / label / name / f"{s}.wav", dtype="float32")[0]
                for s in musdb.SOURCES])
            np.testing.assert_array_equal(ours_stems, theirs_stems, err_msg=(label, name))
            kept[label, name] = ours_stems
            expected = dict(zip(("SDR", "ISR", "SIR", "SAR"), bss_eval(references,
                                                                         theirs_stems)))
            scores = report.read_track(output / label / "test" / f"{name}.json")
            assert list(scores) == list(musdb.SOURCES)
            for index, source in enumerate(musdb.SOURCES):
                for metric in ("SDR", "SIR", "ISR", "SAR"):
                    np.testing.assert_allclose(scores[source][metric],
                                               expected[metric][index], rtol=0,
                                               atol=5e-6 + 1e-9, err_msg=(label, name, metric))
    for name in TRACKS:  # the two models differ, so a mix-up of folders would show
        assert np.max(np.abs(kept[LABELS[0], name] - kept[LABELS[1], name])) > 1e-3
    assert not [p for p in output.rglob("*") if p.name.endswith(".tmp")]

    # A second run separates and scores nothing.
    calls = _forbid_separation(monkeypatch)
    assert _run(root, checkpoints, output) == 0
    err = capsys.readouterr().err
    for label in LABELS:
        assert f"{label}: 0 scored, 2 skipped" in err
    assert not calls

    # A lost JSON is scored again from the kept estimates, without separating.
    first = output / LABELS[1] / "test" / "Beta - Two.json"
    before = first.read_text()
    first.unlink()
    assert _run(root, checkpoints, output) == 0
    assert f"{LABELS[1]}: 1 scored, 1 skipped" in capsys.readouterr().err
    assert not calls
    assert first.read_text() == before

    # A track with a stem missing (killed between two renames) is separated again.
    monkeypatch.undo()
    (output / "estimates" / LABELS[0] / "Alpha - One" / "bass.wav").unlink()
    (output / LABELS[0] / "test" / "Alpha - One.json").unlink()
    assert _run(root, checkpoints, output) == 0
    again = np.stack([soundfile.read(output / "estimates" / LABELS[0] / "Alpha - One" /
                                     f"{s}.wav", dtype="float32")[0] for s in musdb.SOURCES])
    np.testing.assert_array_equal(again, kept[LABELS[0], "Alpha - One"])


def test_models_with_the_same_folder_name_are_refused(setup, tmp_path, capsys):
    root, checkpoints = setup
    assert _run(root, [checkpoints[0], checkpoints[0]], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "two models would share the results folder" in err and "Traceback" not in err


def test_models_and_estimates_together_are_refused(setup, tmp_path, capsys):
    root, checkpoints = setup
    assert cli.main(["eval", "musdb", "--root", str(root), "--checkpoint", str(checkpoints[0]),
                     "--estimates", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert "either --estimates or models" in capsys.readouterr().err


def test_two_models_on_a_dask_cluster_equal_a_local_run(setup, tmp_path, capsys):
    """With --dask-scheduler the workers separate and keep the estimates: the same files
    and the same JSON as a run in this process."""
    distributed = pytest.importorskip("distributed")
    root, checkpoints = setup
    local, remote = tmp_path / "local", tmp_path / "dask"
    assert _run(root, checkpoints, local) == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        argv = ["eval", "musdb", "--root", str(root), "-o", str(remote), "--no-progress",
                "--shifts", "0", "--dask-scheduler", cluster.scheduler_address]
        for checkpoint in checkpoints:
            argv += ["--checkpoint", str(checkpoint)]
        assert cli.main(argv) == 0
    assert "4567cdef: 2 scored" in capsys.readouterr().err
    files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    assert len(files) == 2 * 2 + 2 * 2 * 4  # JSONs, then 4 stems per track and model
    assert files == sorted(p.relative_to(remote) for p in remote.rglob("*") if p.is_file())
    for relative in files:
        if relative.suffix == ".wav":  # float WAV headers hold a time stamp (PEAK chunk)
            ours, ours_rate = soundfile.read(remote / relative, dtype="float32")
            theirs, theirs_rate = soundfile.read(local / relative, dtype="float32")
            assert ours_rate == theirs_rate
            np.testing.assert_array_equal(ours, theirs, err_msg=str(relative))
        else:
            assert (local / relative).read_bytes() == (remote / relative).read_bytes(), relative
