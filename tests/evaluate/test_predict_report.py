import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from vgglab.cli import main
from vgglab.errors import VgglabError
from vgglab.viz.inspect import inspect_checkpoint
from vgglab.viz.plots import plot_curves


def assert_real_png(path: Path):
    """A valid PNG with non-trivial content (not one flat colour)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert min(a.shape[:2]) >= 50 and a.std() > 5, path


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    files = {}
    Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8), "L").save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 255, (700, 1000, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg", quality=90)
    full = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    for name in ["gray.png", "rgba.png", "cmyk.jpg", "photo.jpg", "truncated.jpg", "notes.jpg"]:
        files[name] = tmp_path / name
    return files


def test_predict_any_mode_and_clear_errors(trained_run, image_files, capsys):
    paths = [str(p) for p in image_files.values()]
    assert main(["predict", str(trained_run), *paths, "--topk", "3", "--json", "--device", "cpu"]) == 0
    lines = [json.loads(row) for row in capsys.readouterr().out.strip().splitlines()]
    ok = {Path(row["file"]).name: row for row in lines if "top" in row}
    bad = {Path(row["file"]).name: row["error"] for row in lines if "error" in row}
    assert set(ok) == {"gray.png", "rgba.png", "cmyk.jpg", "photo.jpg"}
    assert set(bad) == {"truncated.jpg", "notes.jpg"} and all("not a readable image" in e for e in bad.values())
    for row in ok.values():
        assert len(row["top"]) == 3 and sum(t["probability"] for t in row["top"]) <= 1 + 1e-6
    # plain output: errors on stderr, one line each; all inputs failing is exit status 1
    assert (
        main(["predict", str(trained_run), str(image_files["notes.jpg"]), str(image_files["truncated.jpg"]), "--device", "cpu"])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    # first what the figures were computed in, then one line per unreadable file
    # (what auto chose for the run here: bf16 on a CPU where the probe measured it faster, else fp32)
    chosen = yaml.safe_load((trained_run / "config.yaml").read_text())["resolved"]["precision"]
    assert len(err) == 3 and err[0] == f"precision {chosen}: the run's own choice on this machine" and "notes.jpg" in err[1]


def test_inspect_writes_pictures_and_refuses_unknown_layers(trained_run, image_files, tmp_path, capsys):
    written = inspect_checkpoint(
        trained_run, image_files["photo.jpg"], ["features.block1.conv1", "features.block3.relu2"], tmp_path / "ins", "cpu"
    )
    for p in written.values():
        assert_real_png(p)
    with pytest.raises(VgglabError, match=r"unknown layer 'features.block1.cnv1'.*did you mean 'features.block1.conv1'"):
        inspect_checkpoint(trained_run, image_files["photo.jpg"], ["features.block1.cnv1"], tmp_path / "x", "cpu")
    assert main(["inspect", str(trained_run), "--image", str(image_files["notes.jpg"]), "--out", str(tmp_path / "y")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_data_command_describes_the_dataset(tmp_path, capsys):
    assert main(["data", "--dataset", "digits", "--out", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.splitlines()[0])
    assert info["splits"] == {"train": 1293, "val": 144, "test": 360} and len(info["pca_eigenvalues"]) == 1
    assert abs(info["normalized_mean_sample"][0]) < 0.1 and abs(info["normalized_std_sample"][0] - 1) < 0.1
    assert sum(info["counts"]["test"]) == 360
    for name in ("samples.png", "samples_augmented.png"):
        assert_real_png(tmp_path / name)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Appended to a test copy of the report only (the report itself has no scripts): after load,
# count images that failed to decode and write the count into the page for --dump-dom.
BROKEN_IMAGE_PROBE = """<script>window.addEventListener('load', () => {
  const bad = Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.insertAdjacentHTML('beforeend', `<p id="probe">images=${document.images.length} broken=${bad}</p>`);
});</script>"""


@pytest.mark.slow  # 5-8 s: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_report_is_self_contained_and_renders(trained_run, tmp_path):
    from vgglab.viz.report import build_report

    out = build_report(trained_run, tmp_path / "report.html", device="cpu")
    page = out.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") == 7
    assert "Most confused" in page and "t-SNE" in page
    # the tiny recipe trains without flips: no flip-TTA figure unless asked for, and then marked
    assert "flip TTA" not in page and "trained without flips" not in page
    for png in (tmp_path / "report_files").glob("*.png"):
        assert_real_png(png)
    assert_real_png(plot_curves(trained_run / "metrics.csv", tmp_path / "curves_again.png"))

    browser = _chromium()
    if browser is None:
        assert not os.environ.get("VGGLAB_REQUIRE_CHROMIUM"), "CI must install Chromium (.ci/run)"
        pytest.skip("no Chromium on this machine (CI installs Debian's chromium; apt-get install chromium)")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", BROKEN_IMAGE_PROBE + "</body>"))
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'id="probe">images=7 broken=0<' in dom, dom[-500:]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,3000", f"--screenshot={shot}", out.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert_real_png(shot)
    with Image.open(shot) as im:
        a = np.asarray(im.convert("L"), dtype=np.float32)
    assert (a < 128).mean() > 0.01  # text and plots drawn, not a blank page


def test_flip_tta_of_a_model_trained_without_flips_is_marked(trained_run, tmp_path):
    from vgglab.evaluate.checkpoint_eval import evaluate_checkpoint
    from vgglab.evaluate.metrics import format_metrics

    m = evaluate_checkpoint(trained_run, tta="flip", out=tmp_path, device="cpu", pictures=False)
    assert "trained without horizontal flips" in m["note"] and m["note"] in format_metrics(m)
    plain = evaluate_checkpoint(trained_run, tta="none", out=tmp_path, device="cpu", pictures=False)
    assert "note" not in plain
