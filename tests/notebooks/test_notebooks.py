"""The notebooks: each paired with its .py script, committed without outputs, and run top to bottom.

Running them needs the ``notebooks`` extra (nbclient, ipykernel, jupytext); without it these
tests skip with a note. CI sets NUMBA_DEMUCS_NOTEBOOKS=required, which turns a missing extra
into a failure, so CI cannot pass by skipping them.
"""
from __future__ import annotations

import importlib
import os
import re
import time
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
SCRIPTS = sorted(NOTEBOOKS_DIR.glob("[0-9]*.py"))
# Generous per cell: numba compiles the kernels on first use in a fresh kernel process.
CELL_TIMEOUT_SECONDS = 600
ANSI_ESCAPE = r"\x1b\[[0-9;]*m"


def _require(module: str):
    if os.environ.get("NUMBA_DEMUCS_NOTEBOOKS") == "required":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} missing: pip install -e '.[notebooks]'")


def _cells(notebook):
    return [(cell.cell_type, cell.source.strip(), cell.metadata.get("tags", []))
            for cell in notebook.cells]


def test_every_script_has_its_notebook():
    assert [p.stem for p in SCRIPTS] == [p.stem for p in NOTEBOOKS]
    assert len(NOTEBOOKS) == 3


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_and_notebook_hold_the_same_cells(script):
    jupytext = _require("jupytext")
    nbformat = _require("nbformat")
    from_script = jupytext.read(script)
    from_notebook = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    assert _cells(from_notebook) == _cells(from_script), (
        f"{script.name} and its .ipynb differ: run `jupytext --sync notebooks/{script.name}`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nbformat = _require("nbformat")
    notebook = nbformat.read(path, as_version=4)
    with_outputs = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
                    and (cell.outputs or cell.execution_count is not None)]
    assert not with_outputs, f"{path.name}: cells {with_outputs} carry outputs; strip them " \
                             "(nbstripout, or `jupytext --to ipynb` from the .py)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_are_the_first_code_cell_and_tagged(path):
    nbformat = _require("nbformat")
    code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path):
    nbformat = _require("nbformat")
    nbclient = _require("nbclient")
    _require("ipykernel")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT_SECONDS,
                                     resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    started = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        # IPython colours its tracebacks; pytest's report is plain text.
        pytest.fail(f"{path.name} raised:\n{re.sub(ANSI_ESCAPE, '', str(error))}", pytrace=False)
    print(f"{path.name}: {time.perf_counter() - started:.1f} s")
