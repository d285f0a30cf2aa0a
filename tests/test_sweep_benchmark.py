"""benchmarks/sweep.py: its plans load (every recipe they name exists), a malformed plan fails in one
line, and it reads the accuracy off the line time_to_accuracy.py prints."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sweep():
    spec = importlib.util.spec_from_file_location("sweep", ROOT / "benchmarks" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("plan", sorted((ROOT / "benchmarks" / "plans").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_committed_plans_load(plan):
    screen, variants, confirm, after = _sweep().load_plan(plan)
    assert variants and len(screen) >= len(variants)
    assert len({v.name for v in variants}) == len(variants)


def test_a_plan_with_a_typo_or_a_missing_recipe_fails_in_one_line(tmp_path):
    sweep = _sweep()
    bad = tmp_path / "p.yaml"
    bad.write_text("variant:\n  - {name: a, config: configs/fast_cifar10.yaml}\n")
    with pytest.raises(SystemExit, match="unknown keys \\['variant'\\]"):
        sweep.load_plan(bad)
    bad.write_text("variants:\n  - {name: a, config: configs/nope.yaml}\n")
    with pytest.raises(SystemExit, match="nope.yaml does not exist"):
        sweep.load_plan(bad)


def test_after_runs_of_one_entry_share_one_variant(tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text("variants: []\nafter:\n  - {name: m, config: configs/fast_cifar10.yaml, seeds: [3, 4]}\n")
    _, _, _, after = _sweep().load_plan(plan)
    assert [j.seed for j in after] == [3, 4] and after[0].variant is after[1].variant


def test_the_accuracy_is_read_from_time_to_accuracys_line():
    sweep = _sweep()
    out = (
        "noise\nseed 3: 0.4 min, 0.264 training PFLOPs (+0.0142 for the test with TTA), test top-1 93.23 %, "
        "94.23 % with TTA, 30675 training images/s\n"
    )
    m = sweep.TTA_LINE.search(out)
    assert (m.group(1), m.group(2), m.group(3)) == ("3", "93.23", "94.23")
    m = sweep.TTA_LINE.search(
        "seed 0: 1.0 min, 0.1 training PFLOPs (+0.01 for the test with TTA), test top-1 90.00 %, 12 training images/s"
    )
    assert m.group(3) is None and m.group(2) == "90.00"


def test_the_summary_row_has_the_mean_its_standard_error_and_the_lowest_seed():
    sweep = _sweep()
    v = sweep.Variant("a", "configs/fast_cifar10.yaml", results={0: 94.0, 1: 94.2, 2: 93.9, 3: 94.3})
    assert v.stderr() == pytest.approx(0.18257 / 2, abs=1e-4)  # sample std 0.1826 over sqrt(4) seeds
    assert v.row() == "| a | 4 | 94.10 | 0.091 | 93.90 | 94.00 94.20 93.90 94.30 |"
    one = sweep.Variant("b", "configs/fast_cifar10.yaml", results={5: 93.5})
    assert one.row() == "| b | 1 | 93.50 | nan | 93.50 | 93.50 |"
