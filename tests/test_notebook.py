"""notebooks/walkthrough.ipynb executes from top to bottom (nbclient, a real Jupyter kernel)
against a small run of the job, so that it cannot rot."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from jobs import curate
from tests.conftest import ROOT, SAMPLE_VIDEOS

pytestmark = pytest.mark.integration

NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory, ray_local) -> Path:
    """The run section 5 of the notebook describes, made here on the session's Ray."""
    out = tmp_path_factory.mktemp("walkthrough") / "out"
    argv = [str(SAMPLE_VIDEOS), str(out), "--fps", "2", "--embedder", "features", "--method", "shots", "--k", "8"]
    assert curate.main(argv) == 0
    return out


def test_walkthrough_notebook_executes(notebook_run, monkeypatch):
    monkeypatch.setenv("FRAMESIFT_WALKTHROUGH_OUTPUT", str(notebook_run))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # raises on any error
    elapsed = time.perf_counter() - t0
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert "the same frames as the 'shots' selection in section 4: True" in text
    assert "one batch: {'image': (4, 3, 224, 224)" in text  # the DataLoader over HF datasets
    assert images >= 6  # the plots and the frames the job wrote
    print(f"walkthrough executed in {elapsed:.1f} s")
