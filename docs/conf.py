"""Sphinx configuration: the docs site built from the code (autodoc), Markdown pages (MyST) and the
notebook tour, executed in the build (myst-nb) so that the site shows its figures.

    python docs/generate.py && sphinx-build -W --keep-going -n -b html docs docs/_build/html
"""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import vgglab  # noqa: E402

project = "vgglab"
author = "the vgglab developers"
copyright = "2026, the vgglab developers"
release = version = vgglab.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.viewcode", "sphinx_copybutton"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "generate.py", "README.md", "jupyter_execute"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# The tour is committed without outputs (tests/test_notebook.py) and run here, top to bottom in a fresh kernel,
# on the digits dataset (offline, about a minute on 2 cores), in a temporary folder with a cache of its own.
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_in_temp = True
nb_execution_raise_on_error = True
os.environ.pop("VGGLAB_CIFAR10", None)  # the tour's CIFAR-10 path would take an hour
os.environ["VGGLAB_CACHE"] = tempfile.mkdtemp(prefix="vgglab-docs-cache-")
atexit.register(shutil.rmtree, os.environ["VGGLAB_CACHE"], ignore_errors=True)  # the build's own, gone with it
copybutton_prompt_text = r"\$ "  # a copied command leaves its prompt behind
copybutton_prompt_is_regexp = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# names in annotations that are not importable from where a function is documented (vgglab.*)
autodoc_type_aliases = {"Preprocess": "vgglab.evaluate.load.Preprocess", "FitResult": "vgglab.train.engine.FitResult"}
# annotations that name types autodoc cannot link (third-party internals, string forward references)
nitpick_ignore_regex = [
    (r"py:class", r"(torch|np|numpy|nn|Path|pathlib|collections\.abc|typing|_io|os)\..*"),
    (r"py:class", r"(Tensor|Module|Path|Callable|Iterable|Iterator|Sequence|Mapping|Any|optional|PathLike)"),
    # dataclass signatures carry string annotations (``from __future__ import annotations``): since
    # AugmentConfig gained its list field (stages), its signature reaches this check as fragments ('tuple[float)
    (r"py:class", r"'.*"),
]

html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["narrow.css"]
html_search_scorer = str(Path(__file__).resolve().parent / "_static" / "search_scorer.js")
html_title = f"vgglab {version}"
