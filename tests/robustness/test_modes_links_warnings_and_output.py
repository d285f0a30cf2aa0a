"""Files a colleague can read, a path the user named is theirs, library notices are not vgglab's warnings,
and writing the output can fail: each class with a member other than the first one found."""

import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import vgglab
import vgglab.shipped
from vgglab.cli import main
from vgglab.cli.main import _one_line_warnings
from vgglab.files import new_file_mode

from ..conftest import TINY
from .helpers import REPO, cli


@pytest.fixture
def umask():
    """Set the process's umask for one test, then put it back."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("mask, expected", [(0o077, 0o600), (0o002, 0o664)])
def test_every_file_a_run_and_an_export_write_has_the_umasks_mode(tmp_path, umask, mask, expected):
    umask(mask)
    assert new_file_mode() == expected
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 1
    run = tmp_path / "run"
    vgglab.fit(cfg, out=run, log=lambda *_: None)
    written = {p.name: mode(p) for p in run.iterdir() if p.is_file() and p.name != "run.lock"}
    assert {"config.yaml", "last.pt", "best.pt", "model.safetensors", "metrics.csv", "results.json"} <= set(written)
    assert set(written.values()) == {expected}, written
    assert main(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "m.safetensors")]) == 0
    assert mode(tmp_path / "m.safetensors") == expected


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_recipe_path_that_is_a_broken_link_is_the_users_not_a_shipped_recipe(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    link = Path("demo_digits.yaml")
    link.symlink_to("missing.yaml" if kind == "dangling" else "demo_digits.yaml")
    code, err = cli(["train", "--config", link, "--out", tmp_path / "run"], capsys)
    assert code == 2 and len(err) == 1 and "demo_digits.yaml is a symbolic link" in err[0], err
    assert ("does not exist" if kind == "dangling" else "loop") in err[0]
    assert not (tmp_path / "run").exists()  # the shipped demo did not run in its place


def test_a_run_directory_argument_that_is_a_dangling_link_is_named(tmp_path, capsys):
    (tmp_path / "run").symlink_to(tmp_path / "moved-away")
    code, err = cli(["eval", tmp_path / "run"], capsys)
    assert code == 2 and len(err) == 1 and "run is a symbolic link to" in err[0] and "does not exist" in err[0], err


def test_a_librarys_deprecation_goes_to_the_log_and_vgglabs_own_warning_is_one_line(caplog):
    saved = warnings.formatwarning
    try:
        _one_line_warnings("export")
        with caplog.at_level("DEBUG", logger="vgglab"):
            shown = warnings.formatwarning(
                DeprecationWarning("The noload loader strategy is deprecated"), DeprecationWarning, "/x/sqlalchemy/orm.py", 7
            )
        assert shown == "" and "noload" in caplog.text
        ours = str(REPO / "src" / "vgglab" / "export.py")
        assert warnings.formatwarning(FutureWarning("soon"), FutureWarning, ours, 1) == "vgglab export: warning: soon\n"
        assert warnings.formatwarning(UserWarning("a\nb"), UserWarning, "/x/torch/nn.py", 1) == "vgglab export: warning: a b\n"
    finally:
        warnings.formatwarning = saved


def vgglab_output(args, stdout) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vgglab", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=120,
    )


@pytest.mark.slow  # 7 s end to end: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_a_reader_that_has_gone_ends_the_listing_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "vgglab", "recipes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    proc.stdout.close()  # the reader is gone before the listing is written (`| head -0`; `| head -1` once the pipe is full)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("args", [["--version"], *(pytest.param(a, marks=pytest.mark.slow) for a in (["--help"], ["models"]))])
def test_output_onto_a_full_disk_is_one_line(args):
    with open("/dev/full", "w") as full:
        result = vgglab_output(args, full)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "cannot write the output: No space left on device" in lines[0]


def test_an_install_without_its_recipes_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(vgglab.shipped, "recipes_dir", lambda: tmp_path / "recipes")
    code, err = cli(["recipes"], capsys)
    assert code == 2 and len(err) == 1 and "install is incomplete" in err[0] and "pip install --force-reinstall" in err[0], err
