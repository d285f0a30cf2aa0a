"""vgglab.load_run: a run as an object whose figures come back as matplotlib figures."""

import pytest
import torch
from matplotlib.figure import Figure

import vgglab
from vgglab.errors import VgglabError


def test_a_run_exposes_its_config_metrics_results_and_model(trained_run):
    run = vgglab.load_run(trained_run, device="cpu")
    assert run.config.train.epochs == 3 and [r["epoch"] for r in run.metrics] == [1, 2, 3]
    assert isinstance(run.metrics[0]["val_top1"], float) and run.results["test_n"] == 360
    assert run.model.meta.classes == tuple(str(i) for i in range(10)) and not run.model.training
    assert repr(run).startswith(f"TrainedRun('{trained_run}': tiny, 3/3 epochs, test top-1 ")


def test_figures_are_returned_not_written(trained_run, tmp_path):
    run = vgglab.load_run(trained_run, device="cpu")
    before = set(trained_run.rglob("*.png"))
    m = run.evaluate(tta="flip", topk=3)
    assert set(m) >= {"top1", "top3", "confusion_matrix"} and run.last_eval is m
    images, labels = run.images(2)
    assert images.dtype == torch.uint8 and images.shape[0] == 2 and labels.shape == (2,)
    for fig in (run.plot_curves(), run.plot_confusion(), run.plot_predictions(8), run.gradcam(images[0])):
        assert isinstance(fig, Figure) and fig.axes
    assert set(trained_run.rglob("*.png")) == before  # nothing written: the CLI passes paths, the API does not


def test_not_a_run_directory_is_one_line(tmp_path):
    with pytest.raises(VgglabError, match="is not a vgglab run directory"):
        vgglab.load_run(tmp_path)
