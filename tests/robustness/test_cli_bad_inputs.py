"""Every subcommand's documented bad inputs end in exit status 2 and one stderr line, with
nothing the user has lost (issue 19). Run in-process through ``vgglab.cli.main``; one real
subprocess checks that no traceback reaches the terminal."""

import copy
import subprocess
import sys

import pytest
import yaml

import vgglab
from vgglab.cli import main

from ..conftest import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch digits run (config.yaml, last.pt, best.pt, model.safetensors, metrics.csv)."""
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 1
    out = tmp_path_factory.mktemp("cli") / "run"
    vgglab.fit(cfg, out=out, log=lambda *_: None)
    return out


def cli(args, capsys) -> tuple[int, list[str]]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def bad_inputs(run, tmp):
    image = run / "image.png"
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 1}}))
    (tmp / "dup.yaml").write_text("train: {epochs: 1}\ntrain: {seed: 2}\n")
    (tmp / "empty.yaml").write_text("")
    (tmp / "list.yaml").write_text("- a\n")
    (tmp / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp / "deep.yaml").write_text("[" * 10000 + "]" * 10000)
    (tmp / "alias.yaml").write_text("a: &x [*x]\n")
    (tmp / "outdir").mkdir(exist_ok=True)
    new = ["train", "--config", recipe, "--out", tmp / "new"]
    return {
        "models": [["models", "--bogus"]],
        "recipes": [["recipes", "--bogus"], ["recipes", "fast_cifar10"]],
        "schema": [["schema", "--bogus"], ["schema", "configs/demo_digits.yaml"]],
        "summary": [
            ["summary", "vgg11", "--width", "nan"],
            ["summary", "vgg11", "--width", "1e6"],
            ["summary", "vgg17"],
            ["summary", "vgg11", "--input-size", "8"],
            ["summary", "vgg11", "--num-classes", "0"],
            ["summary", "vgg11", "--input-size", "1000000"],
        ],
        "speed": [["speed", "--bogus"], ["speed", "--cache-dir", recipe]],
        "train": [
            ["train"],
            ["train", "--config", tmp / "missing.yaml"],
            *(["train", "--config", tmp / f"{n}.yaml"] for n in ("dup", "empty", "list", "binary", "deep", "alias")),
            [*new, "--set", "model.options.width=1e6"],
            [*new, "--set", "data.image_size=100000"],
            [*new, "--set", "train.threads=-3"],
            [*new, "--set", "optim.lr=-1"],
            [*new, "--set", "train.epochs=ten"],
            [*new, "--set", "nonsense"],
            [*new, "--set", "augment.mean=[0.5,0.5]"],
            [*new, "--set", "model.options.blocks=5"],
            ["train", "--config", recipe, "--out", run],
            ["train", "--resume", tmp / "nowhere"],
            ["train", "--resume", run, "--set", "optim.lr=0.5"],
            ["train", "--resume", run, "--set", "train.epochs=0"],
        ],
        "eval": [
            ["eval", run, "--scales", "a,b"],
            ["eval", run, "--tta-shift", "-100", "--tta", "flip-translate"],
            ["eval", run, "--topk", "0"],
            ["eval", run, "--tta", "sideways"],
            ["eval", tmp / "nothing"],
            ["eval", run, "--tta", "dense", "--scales", "8"],
            ["eval", run, "--out", recipe],
        ],
        "predict": [
            ["predict", run, image, "--topk", "-1"],
            ["predict", tmp / "nothing", image],
            ["predict", run, image, "--precision", "fp8"],
            ["predict", run, image, "--precision", "fp16", "--device", "cpu"],
        ],
        "inspect": [
            ["inspect", run, "--image", tmp / "nothing.png"],
            ["inspect", run, "--image", image, "--layers", "features.nope"],
            ["inspect", run, "--image", image, "--out", recipe],
        ],
        "data": [
            ["data"],
            ["data", "--dataset", "cifar10", "--data-root", tmp / "nothing"],
            ["data", "--config", tmp / "dup.yaml"],
        ],
        "report": [
            ["report", tmp / "nothing"],
            ["report", run, "--out", run / "config.yaml"],
            ["report", run, "--out", tmp / "outdir"],
        ],
        "features": [
            ["features", run, "--out", tmp / "outdir"],
            ["features", run, "--out", run],
            ["features", run, "--layer", "nope", "--out", tmp / "f.npz"],
        ],
        "export": [
            ["export", run, "--format", "safetensors", "--out", run / "best.pt"],
            ["export", run / "best.pt", "--format", "torchscript", "--out", run / "best.pt"],
            ["export", run, "--format", "onnx", "--out", tmp / "outdir"],
            ["export", run, "--format", "pdf"],
            ["export", run / "model.safetensors", "--format", "safetensors", "--out", run / "model.safetensors"],
        ],
    }


def test_each_subcommands_bad_inputs_are_one_line_and_exit_2(run, tmp_path, capsys):
    from PIL import Image

    Image.new("L", (20, 20), 128).save(run / "image.png")
    before = snapshot(run)
    cases = bad_inputs(run, tmp_path)
    from vgglab.cli import build_parser

    commands = next(a for a in build_parser()._subparsers._group_actions if a.dest == "command").choices
    assert set(cases) >= set(commands) - {"demo"}, "a subcommand without bad-input cases"
    for group in cases.values():
        for args in group:
            code, err = cli(args, capsys)
            shown = " ".join(map(str, args))
            assert code == 2, f"{shown}: exit {code}, stderr {err}"
            assert len(err) == 1 and "error" in err[0] and "Traceback" not in err[0], f"{shown}: {err}"
    assert snapshot(run) == before  # no bad input changed any of the run's files
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


@pytest.mark.slow  # 7 s end to end: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_no_traceback_reaches_the_terminal(run, tmp_path):
    """The same path as a user's shell: a real process, stderr as printed."""
    (tmp_path / "dup.yaml").write_text("train: {epochs: 1}\ntrain: {seed: 2}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "vgglab", "train", "--config", str(tmp_path / "dup.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "appears twice" in proc.stderr
