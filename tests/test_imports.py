"""The package's own imports: all at module level, and without a cycle between modules.

A function-level import of a vgglab module is how a cycle gets hidden; this reads every module's
source (no importing) and fails on either, so a new one is caught where it is written."""

import ast
from pathlib import Path

import vgglab

ROOT = Path(vgglab.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path):
    """(target module, line, at module level?) of each vgglab import in ``path``, those under
    ``if TYPE_CHECKING:`` too: an import for annotations only ties the modules as any other does."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    modules = {module_name(p) for p in ROOT.rglob("*.py")}

    def visit(node, top):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] == "vgglab":
                    for alias in child.names:  # `from . import x` may name a submodule
                        sub = f"{base}.{alias.name}"
                        yield (sub if sub in modules else base), child.lineno, top
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "vgglab":
                        yield alias.name, child.lineno, top
            nested = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from visit(child, nested)

    yield from visit(tree, True)


def graph() -> dict[str, set[str]]:
    return {module_name(p): {t for t, _, _ in internal_imports(p)} for p in ROOT.rglob("*.py")}


# The one import that must wait: the command installs its signal handlers and catches a Ctrl-C
# before the CLI's libraries (torch: seconds) load, which is the point of vgglab.entry.
LATE_BY_DESIGN = {("entry.py", "vgglab.cli.main")}


def test_every_internal_import_is_at_module_level():
    late = [
        f"{p.relative_to(ROOT)}:{line} imports {t}"
        for p in ROOT.rglob("*.py")
        for t, line, top in internal_imports(p)
        if not top and (str(p.relative_to(ROOT)), t) not in LATE_BY_DESIGN
    ]
    assert late == []


def test_importing_vgglab_or_its_entry_point_loads_no_torch():
    """A Ctrl-C in the command's first seconds is caught only if the entry point is loaded before torch."""
    import subprocess
    import sys

    code = "import sys, vgglab, vgglab.entry; print('torch' in sys.modules, vgglab.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False" and out[1] == vgglab.__version__
    # the public names still load on first use
    assert vgglab.fit.__module__ == "vgglab.train.engine" and callable(vgglab.load_run)


def test_the_modules_import_each_other_without_a_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def walk(node, path):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node, [node])
    assert cycles == []
    assert "vgglab.evaluate.tta" not in {t for m, ts in edges.items() if m.startswith("vgglab.train") for t in ts}


# the layers, bottom up: a module imports only its own layer and those below it
LAYERS = {"data": 1, "models": 1, "run": 2, "speed": 2, "train": 2, "evaluate": 3, "viz": 4}


def test_no_import_runs_up_the_layers():
    up = []
    for module, targets in graph().items():
        here = module.split(".")[1] if module.count(".") >= 2 else None
        for t in targets:
            there = t.split(".")[1] if t.count(".") >= 1 and len(t.split(".")) > 1 else None
            if here in LAYERS and there in LAYERS and LAYERS[there] > LAYERS[here]:
                up.append(f"{module} imports {t}")
    assert up == []
