"""The ``vgglab`` command line: parse (:mod:`.parser`, with the shared options of :mod:`.options`), call
the library (:mod:`.commands`), print; every failure one line (:mod:`.main`). No logic of its own."""

from .main import main
from .parser import build_parser

__all__ = ["main", "build_parser"]
