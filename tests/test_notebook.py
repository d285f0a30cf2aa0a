"""examples/vgg_tour.ipynb: committed clean, and runs top to bottom in a fresh kernel."""

import os
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "vgg_tour.ipynb"
FIGURE_CELLS = (
    "run.plot_curves()",
    "run.plot_confusion()",
    "run.plot_predictions(16)",
    "run.gradcam(images[0])",
    "run.plot_filters()",
)


def test_the_committed_notebook_carries_no_outputs():
    nbformat = pytest.importorskip("nbformat", reason="the notebook extra: pip install -e '.[notebook]'")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert dirty == [], f"cells {dirty} carry outputs or execution counts: clear them before committing"


@pytest.mark.slow
def test_the_tour_runs_top_to_bottom_on_digits(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    monkeypatch.delenv("VGGLAB_CIFAR10", raising=False)  # the digits path: offline and quick
    monkeypatch.setenv("VGGLAB_CACHE", str(tmp_path / "cache"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.monotonic()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.monotonic() - start
    assert seconds < 180, f"the tour took {seconds:.0f} s"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not any(o.get("output_type") == "error" for o in c.outputs) for c in code)
    for source in FIGURE_CELLS:
        cell = next(c for c in code if c.source.strip().endswith(source))
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), f"{source} showed no figure"
    assert os.environ.get("VGGLAB_CIFAR10") is None
