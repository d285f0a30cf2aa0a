from pathlib import Path

import jsonschema
import pytest
import torch
import yaml

from vgglab.shipped import SCHEMA_FILE, SCHEMA_LINE, recipe_files, recipes_dir
from vgglab.train.config import (
    RESUME_KEYS,
    SECTIONS,
    Config,
    ConfigError,
    apply_overrides,
    config_schema,
    load_config,
    save_config,
    schema_text,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "src/vgglab/recipes").glob("*.yaml"))


def test_there_are_shipped_configs():
    names = {p.name for p in SHIPPED}
    assert {
        "vgg16_cifar10_tutorial.yaml",
        "vgg_cifar_i.yaml",
        "vgg_cifar_ii.yaml",
        "vgg_cifar_iii.yaml",
        "vgg16_bn_cifar10.yaml",
        "vgg16_bn_cifar100.yaml",
        "demo_digits.yaml",
        "vgg_a_imagenet.yaml",
        "vgg16_imagenet_s256.yaml",
        "vgg16_imagenet_s384.yaml",
        "vgg16_imagenet_multiscale.yaml",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_builds_its_model(path):
    from vgglab.models import create_model

    cfg = load_config(path)
    assert cfg.name == path.stem
    if cfg.model.name:
        with torch.device("meta"):
            create_model(cfg.model.name, **cfg.model.options)


def test_tutorial_recipe_values():
    cfg = load_config(ROOT / "configs/vgg16_cifar10_tutorial.yaml")
    assert (cfg.model.name, cfg.data.batch_size, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (
        "vgg16_cifar",
        128,
        1e-3,
        0.9,
        5e-4,
    )
    assert (cfg.schedule.name, cfg.schedule.factor, cfg.schedule.patience) == ("plateau", 0.1, 3)
    assert (cfg.augment.crop, cfg.augment.padding, cfg.augment.flip) == ("pad", 4, True)


def test_unknown_keys_are_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim: unknown key 'lrr' \(did you mean 'lr'\?\)"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"unknown section 'optimizer'.*'optim'"):
        load_config({"optimizer": {}})
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'"):
        load_config({}, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"'sgdd' is not one of sgd, adamw"):
        load_config({"optim": {"name": "sgdd"}})
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config({}, ["optim.lr"])


def test_overrides_are_parsed_as_yaml_values():
    cfg = load_config(
        {"optim": {"lr": 0.1}}, ["optim.lr=0.05", "train.ema_decay=0.99", "model.options={width: 0.5}", "data.val_size=0"]
    )
    assert cfg.optim.lr == 0.05 and cfg.train.ema_decay == 0.99 and cfg.model.options == {"width": 0.5}
    assert cfg.data.val_size == 0
    assert apply_overrides({"a": 1}, {"b.c": 2}) == {"a": 1, "b": {"c": 2}}


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(ROOT / "configs/vgg16_bn_cifar10.yaml", ["optim.betas=[0.8, 0.9]"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg and again.sha256() == cfg.sha256()
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["optim"]["betas"] == [0.8, 0.9]


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("nope.yaml")
    assert isinstance(Config.from_dict(None), Config)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=10.0", "train.epochs: expected an integer, got 10.0 (float)"),
        ("train.epochs=ten", "train.epochs: expected an integer, got 'ten' (str)"),
        ("data.batch_size=true", "data.batch_size: expected an integer, got True (bool)"),
        ("augment.flip=1", "augment.flip: expected true or false, got 1 (int)"),
        ("optim.lr=fast", "optim.lr: expected a number, got 'fast' (str)"),
        ("train.grad_clip=[1]", "train.grad_clip: expected a number or null, got [1] (list)"),
    ],
)
def test_values_of_the_wrong_type_are_one_line_naming_key_and_type(override, message):
    with pytest.raises(ConfigError) as err:
        load_config({}, [override])
    assert str(err.value) == f"config: {message}"


def test_numbers_yaml_reads_as_text_are_taken_as_numbers():
    # YAML 1.1 reads 1e-3 (no dot) as a string; for a number-valued key it means the number
    cfg = load_config({}, ["optim.lr=1e-3", "train.grad_clip=null", "data.val_size=0.1", "train.freeze=features"])
    assert cfg.optim.lr == 0.001 and cfg.train.grad_clip is None and cfg.data.val_size == 0.1
    assert cfg.train.freeze == ["features"]


def _cifar100_python(folder: Path, n_train=200, n_test=20):
    """The official CIFAR-100 python layout (pickled train/test/meta) with random pixels."""
    import pickle

    import numpy as np

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": [i % 100 for i in range(n)]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i:02d}" for i in range(100)]}, f)


@pytest.mark.parametrize(
    "recipe",
    ["vgg_cifar_i", *(pytest.param(r, marks=pytest.mark.slow) for r in ("vgg_cifar_ii", "vgg16_bn_cifar100"))],  # 12-26 s each
)
def test_the_results_table_recipes_train_a_step(recipe, tmp_path, monkeypatch):
    """Each recipe as shipped (model, optimiser, augmentation, dataset kind), on a tiny stand-in
    of its dataset in the official python format, for one step."""
    import torchvision.datasets.cifar as tv_cifar

    import vgglab

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())  # fake files, no checksums
    cfg = load_config(ROOT / "configs" / f"{recipe}.yaml")
    root = tmp_path / "data"
    if cfg.data.dataset == "cifar100":
        _cifar100_python(root / "cifar-100-python")
    else:
        from ..data.test_sources import _write_cifar_python

        _write_cifar_python(root / "cifar-10-batches-py", n_train=40)
    overrides = [
        f"data.root={root}",
        "data.download=false",
        "data.val_size=0",
        "data.batch_size=40",
        f"data.cache_dir={tmp_path / 'c'}",
        "data.eval_batch_size=20",
        "train.epochs=1",
        "log.progress=none",
    ]
    if cfg.data.dataset == "cifar100":
        overrides[3] = "data.batch_size=200"
    res = vgglab.fit(ROOT / "configs" / f"{recipe}.yaml", overrides, out=tmp_path / "run", log=lambda *_: None)
    ckpt = torch.load(res.run_dir / "last.pt", weights_only=True)
    assert ckpt["step"] == 1 and ckpt["model_config"]["num_classes"] == (100 if cfg.data.dataset == "cifar100" else 10)
    assert 0.0 <= res.metrics["test_top1"] <= 1.0


# --- one declaration per key: descriptions, the JSON Schema, resume -------------------------------


def test_every_key_is_declared_with_a_description():
    missing = [f"{s}.{k}" for s, cls in SECTIONS.items() for k, info in cls.model_fields.items() if not info.description]
    assert missing == []


def test_the_shipped_schema_is_the_declared_one_and_every_recipe_names_it():
    assert (recipes_dir() / SCHEMA_FILE).read_text() == schema_text()
    assert all(p.read_text().splitlines()[0] == SCHEMA_LINE for p in recipe_files())


def test_every_shipped_recipe_validates_against_the_schema_and_a_misspelt_key_does_not():
    validator = jsonschema.Draft202012Validator(config_schema())
    for path in recipe_files():
        recipe = yaml.safe_load(path.read_text())
        assert list(validator.iter_errors(recipe)) == [], path.name
    recipe = yaml.safe_load(recipe_files()[0].read_text())
    recipe["optim"] = {**(recipe.get("optim") or {}), "lrr": 0.1}
    assert ["'lrr' was unexpected" in e.message for e in validator.iter_errors(recipe)] == [True]
    recipe["optim"] = {"name": "sgdd"}
    assert [e.validator for e in validator.iter_errors(recipe)] == ["enum"]


def test_resume_keys_are_the_keys_declared_resumable():
    assert "train.epochs" in RESUME_KEYS and "optim.lr" not in RESUME_KEYS
    for key in RESUME_KEYS:
        section, name = key.split(".")
        assert SECTIONS[section].model_fields[name].json_schema_extra == {"resume": True}
