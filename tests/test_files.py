"""Writes on a full disk or into a folder that cannot be written: one line naming the path and the
space needed, and the earlier files as they were (issue 19). A real 1 MB tmpfs where this process
may mount one (root on Linux, as in CI), else a write wrapper that raises ENOSPC."""

import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from vgglab.data.normalization import Normalization
from vgglab.errors import VgglabError
from vgglab.files import write_text
from vgglab.models import create_model
from vgglab.run.checkpoint import load_checkpoint, save_checkpoint, save_safetensors
from vgglab.run.files import check_output_file
from vgglab.run.meta import RunMeta


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A folder on a 1 MB filesystem: (folder, how) with how 'tmpfs' or 'wrapper'."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = (
        os.environ.get("VGGLAB_TEST_NO_MOUNT") is None
        and os.geteuid() == 0
        and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode == 0
    )
    if mounted:
        yield mnt, "tmpfs"
        subprocess.run(["umount", str(mnt)], capture_output=True)
        return
    # no mount here: every write into the folder past 1 MB raises ENOSPC, as the kernel would
    real_open = open

    class Limited:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 1_000_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def limited_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return Limited(f) if "w" in mode and str(file).startswith(str(mnt)) else f

    monkeypatch.setattr("builtins.open", limited_open)
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: limited_open(self, "wb").write(data))
    yield mnt, "wrapper"


def test_a_full_disk_is_one_line_and_keeps_the_earlier_checkpoint(small_disk):
    folder, _ = small_disk
    path = folder / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    with pytest.raises(VgglabError) as err:
        save_checkpoint({"epoch": 2, "w": torch.zeros(2_000_000)}, path)  # 8 MB
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "No space left on device" in msg
    assert "it needs about 8.0 MB" in msg and "free there" in msg and "the previous file is kept" in msg
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]  # no temporary file left


def test_a_full_disk_for_safetensors_and_text_is_one_line(small_disk):
    folder, _ = small_disk
    model = create_model("vgg11", num_classes=10, input_size=32, head="cifar")  # 9 M parameters: 37 MB
    meta = RunMeta(tuple("abcdefghij"), 32, 32, model.config.to_dict(), Normalization("standardize", [0.5] * 3, [0.2] * 3))
    with pytest.raises(
        VgglabError, match=r"model.safetensors: No space left on device \(it needs about 3\d\.\d MB.*nothing was written"
    ):
        save_safetensors(model, meta, folder / "model.safetensors")
    with pytest.raises(VgglabError, match=r"report.html: No space left on device .*nothing was written"):
        write_text(folder / "report.html", "x" * 2_000_000)
    assert list(folder.iterdir()) == []


def test_an_unwritable_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(VgglabError, match=r"could not write .*results.json: Not a directory; nothing was written"):
        write_text(blocker / "run" / "results.json", "{}")
    ro = tmp_path / "ro"
    ro.mkdir()
    if (
        os.geteuid() == 0
        and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode == 0
    ):
        try:
            with pytest.raises(
                VgglabError, match=r"Read-only file system; nothing was written. Choose a folder you can write to"
            ):
                write_text(ro / "eval.json", "{}")
        finally:
            subprocess.run(["umount", str(ro)], capture_output=True)


def test_output_paths_never_replace_a_run_or_the_input(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "last.pt", "metrics.csv"):
        (run / name).write_text(name)
    with pytest.raises(VgglabError, match=r"would replace run .*'s own best.pt"):
        check_output_file(run / "best.pt")
    with pytest.raises(VgglabError, match=r"is a folder; give a file path"):
        check_output_file(run)
    other = tmp_path / "weights.pt"
    other.write_text("x")
    with pytest.raises(VgglabError, match=r"is the file being read"):
        check_output_file(other, [other])
    assert check_output_file(run / "export" / "model.onnx", [run]) == run / "export" / "model.onnx"
    assert check_output_file(tmp_path / f"{uuid.uuid4().hex}.npz") is not None
