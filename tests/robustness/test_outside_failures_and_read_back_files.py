"""Outside failures and what vgglab reads back, each class with more than one member: outside
failures (a tracking store, a writer thread, a signal) never stop or hang a run, files vgglab reads
back are read strictly, odd names and special files are handled, and bounds are one line."""

import copy
import errno
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
import yaml

import vgglab
from vgglab.cli import main
from vgglab.run.files import RUN_FILES
from vgglab.run.lock import RunLock, RunLocked

from ..conftest import TINY
from .helpers import REPO, cli, copy_run, folder_config, tree, vgglab_process

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (installed by the dev extra, so CI runs this)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 1
    out = tmp_path_factory.mktemp("r3") / "run"
    vgglab.fit(cfg, out=out, log=lambda *_: None)
    return out


def tracked(epochs: int = 1) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = epochs
    cfg["log"] = {"progress": "none", "mlflow": True}
    return cfg


# --- 1. a tracking store that is down never holds training ------------------------------------


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers (worse than a closed port: no refusal)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    for c in held:
        c.close()
    sock.close()


@pytest.mark.slow  # 5-8 s: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_a_store_that_never_answers_costs_seconds_and_one_warning(tmp_path, monkeypatch, silent_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", silent_server)
    monkeypatch.chdir(tmp_path)
    t = time.perf_counter()
    with pytest.warns(UserWarning) as caught:
        result = vgglab.fit(tracked(), out=tmp_path / "run", log=lambda *_: None)
    waited = time.perf_counter() - t
    ours = [w for w in caught if "mlflow" in str(w.message)]
    assert len(ours) == 1 and "mlflow tracking" in str(ours[0].message), [str(w.message) for w in ours]
    assert result.metrics["test_top1"] > 0 and (tmp_path / "run" / "results.json").is_file()
    assert not (tmp_path / "run" / "mlflow_run.json").exists()
    assert waited < 60, f"training waited {waited:.0f} s on a store that never answers"


# --- 2. a copied run directory is not the original's MLflow run --------------------------------


def test_a_copied_run_gets_its_own_mlflow_run_and_a_damaged_id_file_is_named(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    original = tmp_path / "run"
    vgglab.fit(tracked(1), out=original, log=lambda *_: None)
    copy = copy_run(original, tmp_path / "copy")
    vgglab.fit(overrides=["train.epochs=2"], resume=copy, log=lambda *_: None)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    first = json.loads((original / "mlflow_run.json").read_text())["run_id"]
    second = json.loads((copy / "mlflow_run.json").read_text())["run_id"]
    assert first != second
    assert [m.step for m in client.get_metric_history(first, "train_loss")] == [1]  # the original's record is its own
    assert [m.step for m in client.get_metric_history(second, "train_loss")] == [1, 2]
    assert client.get_run(second).data.tags["vgglab.copied_from"] == first

    # the id file damaged in another way than garbage: a run id that is not one
    (copy / "mlflow_run.json").write_text(json.dumps({"run_id": "../../etc", "tracking_uri": uri}))
    before = (copy / "mlflow_run.json").read_bytes()
    with pytest.warns(UserWarning, match=r"mlflow_run.json is not the MLflow run record vgglab writes.*delete it"):
        vgglab.fit(overrides=["train.epochs=3"], resume=copy, log=lambda *_: None)
    assert (copy / "mlflow_run.json").read_bytes() == before  # never overwritten by a guess


# --- 3. outside threads and signals: one line, nothing half-written ----------------------------


def test_a_tensorboard_writer_thread_failing_is_one_warning_and_no_traceback(tmp_path, monkeypatch, capfd):
    from tensorboard.summary.writer import record_writer

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", os.fsencode(tmp_path / "run" / "tensorboard" / "events"))

    monkeypatch.setattr(record_writer.RecordWriter, "write", full_disk)
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 3
    cfg["log"] = {"progress": "none", "tensorboard": True}
    with pytest.warns(UserWarning, match="tensorboard logging stopped: could not write .*No space left on device") as caught:
        vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)
    assert len([w for w in caught if "tensorboard" in str(w.message)]) == 1
    assert "b'" not in str(caught[0].message)  # the path as text, not a bytes repr
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in thread" not in err
    assert (tmp_path / "run" / "results.json").is_file()


@pytest.mark.parametrize(
    "stop, status, says",
    [(signal.SIGTERM, 143, "stopped by SIGTERM"), pytest.param(signal.SIGHUP, 129, "stopped by SIGHUP", marks=pytest.mark.slow)],
)
def test_a_stopping_signal_to_the_process_group_of_a_streamed_run_is_one_line_and_leaves_nothing(tmp_path, stop, status, says):
    root = tree(tmp_path / "t", per_class=60, side=40)
    cfg = folder_config(root, storage="stream", workers=2, batch_size=8, cache_dir=str(tmp_path / "cache"))
    cfg["train"]["epochs"] = 50
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "tmp").mkdir()
    proc = vgglab_process(
        ["train", "--config", tmp_path / "r.yaml", "--out", tmp_path / "run"],
        tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"TMPDIR": str(tmp_path / "tmp")},
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run" / "last.pt").exists():
        time.sleep(0.2)
    assert (tmp_path / "run" / "last.pt").exists(), "the run never finished an epoch"
    os.killpg(proc.pid, stop)  # what docker stop, systemd and batch schedulers (SIGTERM) or a closed terminal (SIGHUP) do
    _, err = proc.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    # the whole of stderr on failure: a traceback after the line once showed DataLoader's _shutdown_workers
    assert proc.returncode == status and len(lines) == 1 and f"{says}; nothing was half-written" in lines[0], err.decode()
    # no folder left behind (multiprocessing's pymp-* of the loader workers); a file a library writes on import
    # and never removes, however the process ends, is not ours (onnxruntime 1.32's .ses, imported by torch 2.4's torch.onnx)
    assert [p.name for p in (tmp_path / "tmp").iterdir() if p.is_dir() or p.name.startswith("pymp-")] == []
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert not (tmp_path / "run" / "run.lock").exists()


def test_ctrl_c_while_the_command_is_still_loading_is_one_line(tmp_path):
    proc = vgglab_process(["models"], tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)  # torch takes seconds to import
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], lines


def test_temp_files_a_killed_write_left_are_removed_when_the_run_is_next_locked(run, tmp_path):
    r = copy_run(run, tmp_path / "r")
    stale = [r / ".last.pt.k1l2.tmp", r / ".model.safetensors.x9.tmp", r / ".splits.json.gz.a.tmp"]
    for p in stale:
        p.write_bytes(b"")  # what SIGKILL during a write leaves
    mine = r / ".my-notes.tmp"  # not a run file's: not ours to remove
    mine.write_text("keep")
    notes = []
    lock = RunLock(notes.append)
    lock.acquire(r)
    lock.release()
    assert not any(p.exists() for p in stale) and mine.exists()
    assert any("removed 3 temporary files" in n for n in notes)


# --- 4. files vgglab reads back are read strictly ----------------------------------------------


def test_a_lock_file_edited_to_other_types_still_names_its_holder(tmp_path):
    import fcntl

    (tmp_path / "run.lock").write_text(json.dumps({"pid": "many", "host": 7, "started": [1], "command": None}))
    fd = os.open(tmp_path / "run.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held: a second taker must describe it, whatever the file says
    try:
        with pytest.raises(RunLocked, match=r"in use by process \? on \? \(`\?`, started at an unknown time\)"):
            RunLock(lambda *_: None).acquire(tmp_path)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "edit",
    [
        ("resolved", "machine", "threads", "2"),
        ("resolved", "provisional", None, "yes"),
        ("changes", None, None, [5]),
    ],
)
def test_hand_edited_parts_of_config_yaml_are_one_line_on_resume(run, tmp_path, capsys, edit):
    r = copy_run(run, tmp_path / "r")
    cfg = yaml.safe_load((r / "config.yaml").read_text())
    section, key, sub, value = edit
    if key is None:
        cfg[section] = value
    elif sub is None:
        cfg[section][key] = value
    else:
        cfg[section][key][sub] = value
    (r / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = {p.name: p.read_bytes() for p in r.iterdir()}
    code, err = cli(["train", "--resume", r, "--set", "train.epochs=2"], capsys)
    assert code == 2 and len(err) == 1 and "config.yaml" in err[0] and ("delete it" in err[0] or "restore it" in err[0]), err
    assert {p.name: p.read_bytes() for p in r.iterdir()} == before


def test_a_checkpoint_whose_recorded_augment_section_is_edited_is_one_line(run, tmp_path, capsys):
    import torch

    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["config"]["augment"]["flip"] = "sometimes"
    torch.save(ckpt, tmp_path / "edited.pt")
    code, err = cli(["eval", tmp_path / "edited.pt", "--out", tmp_path / "ev"], capsys)
    assert code == 2 and len(err) == 1 and "edited.pt" in err[0] and "augment.flip" in err[0], err


def test_a_split_record_with_no_validation_files_is_refused_not_trained_on(tmp_path, capsys):
    root = tree(tmp_path / "t", per_class=12)
    cfg = folder_config(root, val_size=4, cache_dir=str(tmp_path / "cache"))
    out = tmp_path / "run"
    vgglab.fit(cfg, out=out, log=lambda *_: None)
    record = json.loads(gzip.decompress((out / "splits.json.gz").read_bytes()))
    record["val"] = []
    (out / "splits.json.gz").write_bytes(gzip.compress(json.dumps(record).encode()))
    code, err = cli(["train", "--resume", out, "--set", "train.epochs=2"], capsys)
    assert code == 2 and len(err) == 1 and "lists no validation images" in err[0] and "splits.json.gz" in err[0], err


# --- 5. names that are not UTF-8 -----------------------------------------------------------------


def test_latin1_class_and_file_names_train_report_and_print(tmp_path, capsys):
    root = tree(tmp_path / "t", per_class=8)
    for split in ("train", "test"):
        os.rename(root / split / "bee", os.fsdecode(os.fsencode(root / split) + b"/abeill\xe9"))
    os.rename(root / "train" / "ant" / "000.png", os.fsdecode(os.fsencode(root / "train" / "ant") + b"/gr\xfcn.png"))
    for storage in ("memory", "stream"):
        cfg = folder_config(root, val_size=2, storage=storage, cache_dir=str(tmp_path / "cache"))
        out = tmp_path / f"run-{storage}"
        vgglab.fit(cfg, out=out, log=lambda *_: None)
        assert (out / "results.json").is_file()
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(folder_config(root, val_size=2, cache_dir=str(tmp_path / "cache"))))
    assert main(["data", "--config", str(tmp_path / "r.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert os.fsdecode(b"abeill\xe9") in info["classes"]
    assert main(["report", str(tmp_path / "run-memory"), "--out", str(tmp_path / "report.html")]) == 0
    assert main(["predict", str(tmp_path / "run-memory"), os.fsdecode(os.fsencode(root / "test") + b"/abeill\xe9/000.png")]) == 0
    assert "abeill\\udce9" in capsys.readouterr().out  # printed with the byte escaped, never a UnicodeEncodeError


# --- 6. outputs never replace what the user has ---------------------------------------------------


@pytest.mark.parametrize("target", ["splits", "mlflow id", "symlink to a fifo", "socket"])
def test_outputs_never_replace_run_files_or_special_files(run, tmp_path, capsys, target):
    r = copy_run(run, tmp_path / "r")
    if target == "splits":  # a digits run records none: the name alone is guarded
        out = r / "splits.json.gz"
        code, err = cli(["export", r, "--format", "safetensors", "--out", out], capsys)
        assert code == 2 and len(err) == 1 and "own splits.json.gz" in err[0] and not out.exists(), err
        return
    if target == "mlflow id":
        out = r / "mlflow_run.json"
        out.write_text("{}")
    elif target == "symlink to a fifo":
        os.mkfifo(tmp_path / "pipe")
        out = tmp_path / "link"
        out.symlink_to(tmp_path / "pipe")
    else:
        out = tmp_path / "sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(out))
    before = os.lstat(out)
    code, err = cli(["export", r, "--format", "safetensors", "--out", out], capsys)
    assert code == 2 and len(err) == 1 and ("own" in err[0] or "regular file" in err[0]), err
    after = os.lstat(out)
    assert (after.st_ino, after.st_mode, after.st_size) == (before.st_ino, before.st_mode, before.st_size)


def test_every_run_file_is_guarded():
    assert {"splits.json.gz", "mlflow_run.json", "run.lock", "last.pt", "tensorboard"} <= set(RUN_FILES)


# --- 7. bounds are one line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting, says",
    [
        ("optim.lr=.inf", "optim.lr: expected a finite number"),
        ("schedule.warmup_start=.nan", "schedule.warmup_start: expected a finite number"),
        ("optim.betas=[0.9, .nan]", "optim.betas[1]: expected a finite number, got nan"),
        ("data.eval_batch_size=x", "--set data.eval_batch_size"),
    ],
)
def test_values_that_would_pass_a_comparison_are_refused_naming_the_set(tmp_path, capsys, setting, says):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(TINY))
    code, err = cli(["train", "--config", tmp_path / "r.yaml", "--set", setting, "--out", tmp_path / "run"], capsys)
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert str(tmp_path / "r.yaml") not in err[0]  # the override is at fault, not the file
    assert not (tmp_path / "run").exists()


def test_a_train_limit_that_cannot_be_stratified_names_the_class(tmp_path, capsys):
    root = tree(tmp_path / "t", per_class=6)
    for p in sorted((root / "train" / "bee").iterdir())[1:]:
        p.unlink()  # one bee left
    cfg = folder_config(root, val_size=0, train_limit=4, cache_dir=str(tmp_path / "cache"))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    code, err = cli(["train", "--config", tmp_path / "r.yaml", "--out", tmp_path / "run"], capsys)
    assert code == 2 and len(err) == 1 and "'bee'" in err[0] and "single training image" in err[0], err


def test_early_epochs_covering_the_whole_run_is_said_not_silent(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["data"]["image_size"] = 48  # vgg11_bn takes at least 32 pixels
    cfg["augment"].update(early_crop=32, early_epochs=2)
    cfg["train"]["epochs"] = 1
    lines = []
    vgglab.fit(cfg, out=tmp_path / "run", log=lines.append)
    assert any("augment.early_epochs 2 covers all 1 of train.epochs" in str(line) for line in lines), lines


TORCH_CPU_OOM = RuntimeError(
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 205520896000 bytes."
)


@pytest.mark.parametrize("failure", [TORCH_CPU_OOM, MemoryError()], ids=["torch", "python"])
def test_an_allocator_failure_anywhere_is_one_line(tmp_path, capsys, monkeypatch, failure):
    import vgglab.cli.commands as cli_module

    def fails(*_a, **_k):
        raise failure

    monkeypatch.setattr(cli_module, "describe_data", fails)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(TINY))
    code, err = cli(["data", "--config", tmp_path / "r.yaml"], capsys)
    assert code == 2 and len(err) == 1 and "out of memory" in err[0] and "lower the batch size" in err[0], err
    assert "()" not in err[0]  # an exception without text adds no empty brackets


def test_the_speed_listing_does_not_say_it_probes(tmp_path, capsys):
    (tmp_path / "speed_probe.json").write_text(json.dumps({"k": {"rates": "fast"}}))
    code = main(["speed", "--cache-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0 and "0 cached speed verdicts" in captured.out
    assert "probing again" not in captured.out + captured.err


def test_no_stray_process_or_thread_left(run):
    """The module's tracking threads are daemons: nothing keeps a finished process alive."""
    assert all(t.daemon for t in threading.enumerate() if t.name == "vgglab-mlflow")
    assert psutil.Process().children() == []


@pytest.mark.slow
def test_three_runs_starting_on_one_new_sqlite_store_are_all_tracked(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**tracked(1), "log": {"progress": "none", "mlflow": True}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vgglab", "train", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path / f"r{i}")],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "MLFLOW_TRACKING_URI": uri},
        )
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert not [err for _, err in outputs if "warning" in err], outputs
    runs = mlflow.tracking.MlflowClient(tracking_uri=uri).search_runs(experiment_ids=["0"])
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
