"""Sphinx configuration: the docs site built from the code (autodoc), Markdown pages (MyST) and the
notebook tour as CI last ran it (myst-nb, never executed here).

    python docs/generate.py && sphinx-build -W --keep-going -n -b html docs docs/_build/html
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import vgglab  # noqa: E402

project = "vgglab"
author = "the vgglab developers"
copyright = "2026, the vgglab developers"
release = version = vgglab.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.viewcode"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "generate.py", "README.md", "jupyter_execute"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # CI runs the tour in a fresh kernel (tests/test_notebook.py); here it is shown as saved

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
html_title = f"vgglab {version}"
