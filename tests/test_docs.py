"""The docs site's generated pages: current, and complete (every flag, config key, model, recipe
and public name appears), so a change without its docs fails here, not in a reader's hands."""

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import vgglab
from vgglab.cli import build_parser, main
from vgglab.models import list_models
from vgglab.shipped import describe, recipe_files
from vgglab.train.config import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"


def test_regenerating_the_pages_changes_nothing():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_flag_of_every_command_is_in_the_cli_reference():
    page = (REFERENCE / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert f"## vgglab {name}\n" in page, name
        for action in (a for a in parser._actions if a.dest != "help"):  # -h is argparse's own
            for flag in action.option_strings:
                assert f"`{flag}`" in page, f"vgglab {name} {flag}"
    assert "`--version`" in page


def test_every_config_key_is_in_the_config_reference():
    page = (REFERENCE / "config.md").read_text()
    for section, cls in SECTIONS.items():
        for name, info in cls.model_fields.items():
            assert f"`{section}.{name}`" in page, f"{section}.{name}"
            assert info.description and info.description.replace("|", "\\|") in page, (
                f"{section}.{name} has no description in the reference"
            )


def test_every_public_name_model_and_recipe_has_its_entry():
    api = (REFERENCE / "api.md").read_text()
    assert all(f"## `vgglab.{name}`" in api for name in vgglab.__all__)
    models = (REFERENCE / "models.md").read_text()
    assert all(f"| `{name}` |" in models for name in list_models())
    recipes = (REFERENCE / "recipes.md").read_text()
    assert all(f"| `{p.stem}` |" in recipes for p in recipe_files())


def test_the_shipped_recipes_are_the_configs_folder():
    assert sorted(p.name for p in recipe_files()) == sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))


def test_recipes_lists_them_and_train_finds_one_by_name(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines[:-1] if not line.startswith(" ")]  # summaries are indented
    assert names == [p.stem for p in recipe_files()]
    assert all(len(line) <= 80 for line in lines[:-1])  # wrapped to the terminal's width
    monkeypatch.chdir(tmp_path)  # nowhere near configs/
    assert (
        main(
            [
                "train",
                "--config",
                "demo_digits",
                "--set",
                "train.epochs=1",
                "--set",
                "data.train_limit=200",
                "--set",
                "log.progress=none",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    assert (tmp_path / "run" / "results.json").is_file()
    # a path wins over a name; a name that is neither says so, with the nearest
    (tmp_path / "demo_digits").write_text("data: {dataset: nope}\n")
    assert main(["train", "--config", "demo_digits"]) == 2
    assert "data.dataset" in capsys.readouterr().err
    assert main(["train", "--config", "fast_cifar10_muon9ep"]) == 2
    err = capsys.readouterr().err
    assert "no shipped recipe" in err and "fast_cifar10_muon_9ep" in err


def test_version_names_what_a_bug_report_needs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for part in (f"vgglab {vgglab.__version__}", "torch ", "torchvision ", "Python ", "device ", "precision auto -> "):
        assert part in out, part


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("myst_nb") is None,
    reason="the docs extra (pip install -e '.[docs]'; CI installs it and builds the site)",
)
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-n",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_readme_is_a_front_door_whose_links_resolve():
    import re

    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "python -m pip install -e . && vgglab demo" in text and 'python -m pip install -e ".[dev]" && python -m pytest' in text
    links = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if not t.startswith("http")]
    assert links and [t for t in links if not (ROOT / t).exists()] == []


def test_every_recipe_says_in_one_sentence_what_it_trains():
    for path in recipe_files():
        summary = describe(path)["summary"]
        assert summary.endswith(".") and summary.count(". ") == 0 and len(summary) <= 160, path.name
        assert "issue" not in summary.lower() and "shared/" not in path.read_text(), path.name


def test_the_repository_and_the_package_carry_the_licence_and_a_citation():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted" in text
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert citation["version"] == vgglab.__version__
