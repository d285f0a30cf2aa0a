"""The docs site's generated pages: current, and complete (every flag, config key, model, recipe
and public name appears), so a change without its docs fails here, not in a reader's hands."""

import argparse
import importlib.util
import os
import re
import shutil
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


def test_the_readme_is_a_front_door_whose_links_resolve():
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


def test_the_model_zoo_names_compute_and_accuracy_for_every_model():
    page = (ROOT / "docs" / "reference" / "models.md").read_text()
    header = next(line for line in page.splitlines() if line.startswith("| model |"))
    for column in ("parameters", "GFLOPs", "ImageNet top-1 / top-5", "CIFAR-10"):
        assert column in header, column
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert {r.split("`")[1] for r in rows} == set(list_models())


HAS_DOCS = importlib.util.find_spec("sphinx") is not None and importlib.util.find_spec("myst_nb") is not None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built strictly once for the tests below (it runs the tour: a minute or two)."""
    if not HAS_DOCS:
        pytest.skip("the docs extra (pip install -e '.[docs]'; CI installs it and builds the site)")
    out = tmp_path_factory.mktemp("site") / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
    )
    return out, result


@pytest.mark.slow
def test_the_site_builds_strictly(site):
    _, result = site
    assert result.returncode == 0, result.stderr[-3000:]


# Markup that reached the reader as text (an emphasis left as *resume*), or Python's own docstring of a
# built-in type standing where a description belongs (tuple's, dict's)
UNRENDERED = re.compile(r"<td>(?:(?!</td>).)*(\*[A-Za-z_][\w ,.-]*\*|Built-in immutable sequence|Create a new dictionary)", re.S)


@pytest.mark.slow
def test_generated_pages_hold_no_unrendered_markup(site):
    html, result = site
    assert result.returncode == 0, result.stderr[-3000:]
    pages = [*(html / "reference").glob("*.html"), *(html / "results").glob("*.html")]
    assert len(pages) >= 8
    assert [(p.name, m.group(1)) for p in pages for m in UNRENDERED.finditer(p.read_text())] == []


def _browser():
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        assert not os.environ.get("VGGLAB_REQUIRE_CHROMIUM"), "CI must install Chromium (.ci/run)"
        pytest.skip("no Chromium on this machine (CI installs Debian's chromium; apt-get install chromium)")
    return browser


def _dom(url: str, width: int, height: int, profile: Path) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    return subprocess.run(
        [
            _browser(),
            *flags,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


# Appended to a copy of a page beside it: after load, what a reader would see, written into the page for --dump-dom
LAYOUT_PROBE = """<script>window.addEventListener('load', () => {
  const bad = Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length;
  const demo = Array.from(document.querySelectorAll('div.highlight')).find(d => d.textContent.includes('vgglab demo'));
  const bottom = demo ? demo.getBoundingClientRect().bottom : -1;
  const wide = document.documentElement.scrollWidth - window.innerWidth;
  const shown = Array.from(document.images).map(i => Math.round(100 * i.clientWidth / Math.max(1, i.naturalWidth)));
  document.body.insertAdjacentHTML('beforeend',
    `<p id="probe">images=${document.images.length} broken=${bad} demo_bottom=${Math.round(bottom)} height=${window.innerHeight} wide=${wide} scale=${Math.min(100, ...shown)}</p>`);
});</script>"""


def _probe(page: Path, width: int, height: int, tmp_path: Path) -> dict:
    copy = page.with_name(f"probe-{width}-{page.name}")
    copy.write_text(page.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = _dom(copy.as_uri(), width, height, tmp_path / "profile")
    found = re.search(r'<p id="probe">(images=\d+[^<]*)<', dom)  # the element, not the script's own text
    assert found, dom[-500:]
    return {k: int(v) for k, v in (part.split("=") for part in found.group(1).split())}


@pytest.mark.slow
@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)])
def test_the_home_and_results_pages_start_a_reader_on_a_desktop_and_a_phone(site, tmp_path, width, height):
    html, result = site
    assert result.returncode == 0, result.stderr[-3000:]
    home = _probe(html / "index.html", width, height, tmp_path)
    assert 0 < home["demo_bottom"] <= home["height"], home  # install and demo on the first screen
    for probe in (home, _probe(html / "results" / "index.html", width, height, tmp_path)):
        assert probe["broken"] == 0 and probe["wide"] <= 0, probe  # a wide table scrolls in its own box
    compute = _probe(html / "results" / "compute.html", width, height, tmp_path)
    # the compute plot's 8-point labels (13 px at its 120 dpi) stay at 9 px or more: shown at >= 70 % of its size
    assert compute["images"] == 1 and compute["broken"] == 0 and compute["wide"] <= 0 and compute["scale"] >= 70, compute


@pytest.mark.slow
def test_the_tour_page_shows_its_figures(site, tmp_path):
    html, result = site
    assert result.returncode == 0, result.stderr[-3000:]
    for width, height in ((1280, 800), (390, 844)):
        tour = _probe(html / "tour.html", width, height, tmp_path)
        assert tour["images"] >= 5 and tour["broken"] == 0 and tour["wide"] <= 0, tour
    assert tour["scale"] == 100, tour  # on a phone each figure keeps its size and scrolls in its own box


@pytest.mark.slow
@pytest.mark.parametrize(
    "query, guide", [("onnx", "guides/transfer.html"), ("resume", "guides/runs.html"), ("fine-tune", "guides/transfer.html")]
)
def test_search_puts_the_guide_named_by_the_query_first(site, tmp_path, query, guide):
    html, result = site
    assert result.returncode == 0, result.stderr[-3000:]
    dom = _dom(f"{(html / 'search.html').as_uri()}?q={query}", 1280, 800, tmp_path / "profile")
    found = re.search(r'<ul[^>]*class="search"[^>]*>', dom)
    results = dom[found.start() :] if found else ""
    links = re.findall(r'<a href="([^"#?]+)', results)
    assert links and links[0] == guide, links[:5]
