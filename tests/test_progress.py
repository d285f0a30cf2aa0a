"""Progress of long commands: plain lines with an ETA at a fixed interval where no one watches
a terminal, a bar where one does, nothing under --quiet; the interval from VGGLAB_PROGRESS_S."""

import copy
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

import vgglab
from vgglab import progress
from vgglab.cli import main
from vgglab.progress import Progress, format_duration

from .conftest import TINY
from .data.test_sources import make_tree
from .robustness.helpers import default_signals

REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_plain_lines_come_at_the_interval_with_done_total_rate_and_eta():
    clock, lines = Clock(), []
    p = Progress(1000, "eval test", mode="line", interval=30, emit=lines.append, clock=clock)
    for _ in range(10):  # 100 images every 10 s
        clock.t += 10
        p.advance(100, lambda: "loss 0.5")
    assert lines == [
        "eval test: 300/1,000 images (30%), 10.0 images/s, 30s elapsed, ETA 1m10s, loss 0.5",
        "eval test: 600/1,000 images (60%), 10.0 images/s, 1m00s elapsed, ETA 40s, loss 0.5",
        "eval test: 900/1,000 images (90%), 10.0 images/s, 1m30s elapsed, ETA 10s, loss 0.5",
    ]


def test_extra_text_is_computed_only_when_a_line_is_shown():
    clock, calls = Clock(), []
    p = Progress(10, "x", mode="line", interval=30, emit=lambda _: None, clock=clock)
    for _ in range(10):
        clock.t += 1
        p.advance(1, lambda: calls.append(1) or "")
    assert calls == []  # 10 s in all: no line, so no device read behind the extra text


def test_the_interval_comes_from_the_environment_and_a_bad_value_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV_INTERVAL, "2.5")
    assert progress.interval_s() == 2.5 and progress.interval_s(7) == 7.0
    monkeypatch.delenv(progress.ENV_INTERVAL)
    assert progress.interval_s() == progress.DEFAULT_INTERVAL == 30.0
    for bad in ("soon", "0", "-3", "nan"):
        monkeypatch.setenv(progress.ENV_INTERVAL, bad)
        assert main(["models"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "VGGLAB_PROGRESS_S" in err[0] and "positive number of seconds" in err[0]


def test_quiet_silences_every_setting_and_auto_follows_the_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress.resolve_mode("auto") == "line"
    with progress.default_mode("none"):
        assert progress.resolve_mode("auto") == progress.resolve_mode("line") == progress.resolve_mode("bar") == "none"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress.resolve_mode("auto") == "bar"


def test_durations_read_like_a_clock():
    assert [format_duration(s) for s in (0, 12.4, 185, 7620)] == ["0s", "12s", "3m05s", "2h07m"]


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory):
    """A run trained on an ImageFolder tree, read from the files (data.storage: stream)."""
    tmp = tmp_path_factory.mktemp("progress")
    tree = make_tree(tmp / "tree", per_class=12, size=48)
    cfg = copy.deepcopy(TINY)
    cfg["data"] = {
        "dataset": "imagefolder",
        "root": str(tree),
        "image_size": 32,
        "storage": "stream",
        "batch_size": 8,
        "val_size": 4,
        "cache_dir": str(tmp / "cache"),
        "workers": 0,
    }
    cfg["augment"] = {"crop": "scale", "scale_min": 32, "scale_max": 48, "flip": True}
    cfg["train"]["epochs"] = 1
    return vgglab.fit(cfg, out=tmp / "run", log=lambda *_: None).run_dir


def vgglab_cmd(args, env=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "vgglab", *map(str, args)], env=env, text=True, timeout=300, **kw)


# end to end (tens of seconds): the slow suite, which CI runs (issue 36's 4-minute fast suite)
@pytest.mark.slow
def test_dense_evaluation_logged_to_a_file_shows_lines_with_an_eta_before_its_result(streamed_run, tmp_path):
    log = tmp_path / "eval.log"
    with open(log, "w") as f:
        done = vgglab_cmd(
            ["eval", streamed_run, "--tta", "dense", "--device", "cpu", "--out", tmp_path / "ev"],
            env={"VGGLAB_PROGRESS_S": "0.001"},
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    shown = [i for i, line in enumerate(lines) if line.startswith("eval test (tta dense):") and "ETA" in line]
    result = next(i for i, line in enumerate(lines) if "top-1" in line)
    assert shown and shown[0] < result, text
    assert "/24 images" in lines[shown[0]] and "images/s" in lines[shown[0]]
    quiet = vgglab_cmd(
        ["eval", streamed_run, "--tta", "dense", "--device", "cpu", "--out", tmp_path / "ev2", "--quiet"],
        env={"VGGLAB_PROGRESS_S": "0.001"},
        capture_output=True,
    )
    assert quiet.returncode == 0 and "ETA" not in quiet.stdout + quiet.stderr


@pytest.mark.slow  # 5-8 s: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_on_a_terminal_the_same_evaluation_draws_a_bar(streamed_run, tmp_path):
    """stderr on a pseudo-terminal: tqdm's bar (its percentage and rate), and no plain lines."""
    main_fd, worker_fd = pty.openpty()
    fcntl.ioctl(worker_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vgglab",
            "eval",
            str(streamed_run),
            "--tta",
            "dense",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "ev"),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "VGGLAB_PROGRESS_S": "0.001"},
        stdout=subprocess.PIPE,
        stderr=worker_fd,
        text=True,
    )
    os.close(worker_fd)
    seen = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 0
    os.close(main_fd)
    bar = seen.decode(errors="replace")
    assert "eval test (tta dense)" in bar and "%|" in bar and "image/s" in bar, bar
    assert "ETA" not in out and "top-1" in out


def test_training_prints_lines_with_loss_where_no_terminal_watches(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["log"] = {"progress": "line", "progress_s": 0.001}
    lines = []
    vgglab.fit(cfg, out=tmp_path / "run", log=lines.append)
    steps = [line for line in lines if line.startswith("epoch 1/2:")]
    assert steps and all("ETA" in line and "loss" in line and "top-1" in line for line in steps)
    assert any(line.startswith("validation 1/2:") for line in lines) and any(line.startswith("test:") for line in lines)


@pytest.mark.slow  # 11 s end to end: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_ctrl_c_stops_a_long_command_with_one_line_and_nothing_half_written(streamed_run, tmp_path):
    import signal

    out = tmp_path / "ev"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vgglab",
            "eval",
            str(streamed_run),
            "--tta",
            "dense",
            "--scales",
            "32,256,384,512",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "VGGLAB_PROGRESS_S": "0.001"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,  # as a terminal's Ctrl-C finds it, however the suite was started
    )
    first = proc.stdout.readline()  # the first progress line: the evaluation is under way
    assert "ETA" in first, first + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["vgglab eval: interrupted; nothing was half-written"]
    assert "top-1" not in rest
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], left  # no eval.json, no temporary file
