"""The notebooks in notebooks/ run top to bottom (nbclient, a real kernel, offline models, small indexes)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install nbformat nbclient ipykernel to run the notebooks")
nbclient = pytest.importorskip("nbclient", reason="pip install nbformat nbclient ipykernel to run the notebooks")
pytest.importorskip("ipykernel", reason="pip install ipykernel to run the notebooks")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3, NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, home, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("MEDRAG_PROGRESS", "false")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    executed = tmp_path / path.name
    nbformat.write(notebook, executed)  # the executed copy, to read when a check fails
    assert all(cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")
