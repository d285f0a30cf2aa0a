"""benchmarks/time_to_accuracy.py: its ablation presets switch off exactly one technique, and
its table summarises the records the README quotes."""

import importlib.util
from pathlib import Path

import pytest
import torch

from vgglab.models import create_model
from vgglab.train.config import load_config
from vgglab.train.optim import param_groups

ROOT = Path(__file__).resolve().parents[1]
SHORT = ROOT / "configs" / "fast_cifar10_short.yaml"


def _bench():
    spec = importlib.util.spec_from_file_location("time_to_accuracy", ROOT / "benchmarks" / "time_to_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("name", ["no-whitening", "no-bn-bias-lr", "no-dirac", "no-label-smoothing"])
def test_each_ablation_changes_one_setting_and_still_builds_a_working_recipe(name):
    bench = _bench()
    base, ablated = load_config(SHORT), load_config(SHORT, bench.ABLATIONS[name])
    a, b = _flat(base.to_dict()), _flat(ablated.to_dict())
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert len(changed) == 1 and base.sha256() != ablated.sha256()
    torch.manual_seed(0)
    model = create_model(ablated.model.name, num_classes=10, **ablated.model.options)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    if name == "no-whitening":
        assert not model.config.whiten and model.features.block1.conv1.in_channels == 3
    elif name == "no-bn-bias-lr":
        assert len({g["lr"] for g in param_groups(model, ablated.optim, ablated.data.batch_size)}) == 1
    elif name == "no-dirac":
        conv = model.features.block2.conv2  # dirac would make this the identity on its input
        x = torch.randn(1, conv.in_channels, 5, 5)
        assert not torch.allclose(conv(x), x, atol=1e-2)
        assert ablated.model.options["init"] == "kaiming"
    else:
        assert base.train.label_smoothing > 0 and ablated.train.label_smoothing == 0


def test_table_reports_mean_sample_std_and_worst_time_per_recipe_and_ablation():
    bench = _bench()
    records = [
        {"recipe": "r", "ablation": None, "top1": 0.90, "top1_tta": 0.91, "minutes": 9.0, "images_per_s": 400, **AVX2},
        {"recipe": "r", "ablation": None, "top1": 0.92, "top1_tta": 0.93, "minutes": 11.0, "images_per_s": 300, **AVX2},
        {"recipe": "r", "ablation": "no-dirac", "top1": 0.80, "top1_tta": None, "minutes": 5.0, "images_per_s": 500, **AVX2},
        {
            "recipe": "r",
            "ablation": None,
            "top1": 0.94,
            "top1_tta": 0.95,
            "minutes": 1.0,
            "images_per_s": 9000,
            **AVX2,
            "gpu": "NVIDIA H100",
        },  # another machine: another row
    ]
    rows = bench.table(records).splitlines()
    assert rows[2] == "| AMD EPYC, AVX2 | r | - | 2 | 92.00 ± 1.41 | 91.00 ± 1.41 | 10.0 (11.0) | 350 |"
    assert rows[3] == "| AMD EPYC, AVX2 | r | no-dirac | 1 | - | 80.00 | 5.0 (5.0) | 500 |"
    assert rows[4] == "| NVIDIA H100 | r | - | 1 | 95.00 | 94.00 | 1.0 (1.0) | 9000 |"


AVX2 = {"cpu": "AMD EPYC (2 cores)", "cpu_capability": "AVX2", "native_bf16": False, "gpu": None}


def test_the_curve_has_one_row_per_variant_and_machine_with_the_issues_columns(tmp_path):
    bench = _bench()
    base = {
        "recipe": "fast_cifar10",
        "ablation": None,
        "overrides": [],
        "cpu": "AMD EPYC (2 cores)",
        "cpu_capability": "AVX2",
        "native_bf16": False,
        "gpu": None,
        "train_pflops": 0.3833,
        "minutes": 60.0,
    }
    records = [
        {**base, "top1_tta": 0.9412},
        {**base, "top1_tta": 0.9402, "minutes": 58.0},
        {**base, "recipe": "fast_cifar10_lowres", "train_pflops": 0.1954, "top1_tta": 0.931, "minutes": 20.0},
        {**base, "overrides": ["train.epochs=9"], "train_pflops": 0.31, "top1_tta": 0.936},
    ]
    rows = bench.curve_rows(records)
    assert [r["variant"] for r in rows] == ["fast_cifar10_lowres", "fast_cifar10 train.epochs=9", "fast_cifar10"]  # by compute
    assert rows[2] == {
        "variant": "fast_cifar10",
        "config": "configs/fast_cifar10.yaml",
        "pflops": 0.3833,
        "seeds": 2,
        "mean_tta_top1": 94.07,
        "min_tta_top1": 94.02,
        "machine": "AMD EPYC, AVX2",
        "minutes": 59.0,
    }
    path = bench.write_curve(rows, tmp_path / "cifar10_compute.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "variant,config,pflops,seeds,mean_tta_top1,min_tta_top1,machine,minutes" and len(lines) == 4
    assert path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_records_made_before_compute_was_counted_get_their_recipes_count():
    bench = _bench()
    old = {"recipe": "fast_cifar10_short", "overrides": ["model.options.whiten=0"], "top1_tta": 0.87}
    counted = bench.record_compute(old)
    assert counted["images_seen"] == 4 * 48 * 1024
    assert counted["train_pflops"] > bench.record_compute({**old, "overrides": []})["train_pflops"]  # no whitening: 32 px convs


def test_the_table_keeps_a_recipe_run_with_other_overrides_apart():
    bench = _bench()
    base = {
        "recipe": "fast_cifar10_lowres",
        "ablation": None,
        "overrides": [],
        "cpu": "Intel Xeon (2 cores)",
        "cpu_capability": "AVX512",
        "native_bf16": False,
        "gpu": None,
        "minutes": 15.0,
        "top1": 0.92,
        "top1_tta": 0.93,
        "images_per_s": 400.0,
    }
    rows = bench.table([base, {**base, "overrides": ["train.epochs=10"], "top1_tta": 0.94}]).splitlines()[2:]
    assert len(rows) == 2 and "| fast_cifar10_lowres train.epochs=10 |" in rows[1] and "| 94.00 |" in rows[1]


def test_runs_that_shared_the_machine_give_accuracy_but_no_time():
    bench = _bench()
    base = {"recipe": "r", "ablation": None, "overrides": [], **AVX2, "train_pflops": 0.2, "top1": 0.93, "images_per_s": 300.0}
    alone = {**base, "top1_tta": 0.94, "minutes": 20.0}
    shared = {**base, "top1_tta": 0.92, "minutes": 35.0, "images_per_s": 150.0, "concurrent_runs": 2}
    assert bench.table([alone, shared]).splitlines()[2].endswith("| 2 | 93.00 ± 1.41 | 93.00 ± 0.00 | 20.0 (20.0) | 300 |")
    assert bench.table([shared]).splitlines()[2].endswith("| - (cores shared) | - |")
    assert bench.curve_rows([alone, shared])[0]["minutes"] == 20.0 and bench.curve_rows([alone, shared])[0]["seeds"] == 2
    assert bench.curve_rows([shared])[0]["minutes"] == ""


def test_kept_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    bench = _bench()
    a, b = bench.keep_dir(tmp_path / "keep", "r-seed0"), bench.keep_dir(tmp_path / "keep", "r-seed0")
    assert a != b and a.is_dir() and b.is_dir() and a.name.startswith("r-seed0-")


def test_records_of_the_same_recipe_and_seed_ending_in_the_same_second_are_all_kept(tmp_path):
    bench = _bench()
    paths = [bench.write_record(tmp_path, "r-seed0-20261130-120000", {"n": n}) for n in range(3)]
    assert [p.name for p in paths] == [
        "r-seed0-20261130-120000.json",
        "r-seed0-20261130-120000-2.json",
        "r-seed0-20261130-120000-3.json",
    ]
    assert sorted(r["n"] for r in bench.load_records(tmp_path)) == [0, 1, 2]


@pytest.mark.parametrize("pair", sorted(_bench().SAME_AS.items()), ids=lambda kv: kv[1])
def test_runs_made_under_a_parent_recipe_with_overrides_are_exactly_the_shipped_recipe(pair):
    """SAME_AS files some records (a GPU sweep's, say) under a recipe shipped after they ran: only
    true when the parent with those overrides loads to every setting of the shipped file."""
    (parent, overrides), shipped = pair
    ran = load_config(ROOT / "configs" / f"{parent}.yaml", list(overrides)).to_dict()
    ships = load_config(ROOT / "configs" / f"{shipped}.yaml").to_dict()
    for d in (ran, ships):
        d.pop("name"), d.pop("changes"), d.pop("resolved")
    assert ran == ships


def test_the_curve_files_such_runs_under_the_shipped_recipe(tmp_path):
    bench = _bench()
    base = {
        "recipe": "fast_cifar10_muon1024",
        "ablation": None,
        "cpu": "x (2 cores)",
        "gpu": "NVIDIA H200",
        "train_pflops": 0.2636,
        "minutes": 0.372,
        "concurrent_runs": 1,
    }
    rows = bench.curve_rows(
        [
            {**base, "overrides": ["train.epochs=9"], "top1_tta": 0.9423},
            {**base, "recipe": "fast_cifar10_muon_9ep", "overrides": [], "top1_tta": 0.9401},
            {**base, "overrides": ["train.epochs=10"], "top1_tta": 0.94},
        ]
    )
    assert [(r["variant"], r["config"], r["seeds"]) for r in rows] == [
        ("fast_cifar10_muon1024 train.epochs=10", "configs/fast_cifar10_muon1024.yaml", 1),
        ("fast_cifar10_muon_9ep", "configs/fast_cifar10_muon_9ep.yaml", 2),
    ]
    assert rows[1]["minutes"] == 0.37  # a GPU's fraction of a minute keeps two decimals
    bench.write_curve(rows, tmp_path / "c.csv")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_an_explicit_commit_wins_over_a_copied_trees_git(monkeypatch):
    """On a GPU machine the tree's .git was the session's first HEAD: its records named the wrong commit."""
    bench = _bench()
    monkeypatch.delenv("VGGLAB_COMMIT", raising=False)
    assert bench.git_commit() != "abc1234"
    monkeypatch.setenv("VGGLAB_COMMIT", "abc1234")
    assert bench.git_commit() == "abc1234"
