"""The layers of kdviz, enforced by reading every import (top-level or inside a function) in
``kdviz/``, ``pages/`` and ``app.py`` with ``ast``:

- a module imports its own package or a lower layer, never a higher one;
- the packages import one another without cycles;
- only the dashboard (``kdviz/ui/``, ``pages/``, ``app.py``) imports Streamlit;
- nothing imports the compatibility modules at the top of ``kdviz/`` (old paths kept for users).

The checker is plain functions over a folder, so the tests at the bottom run it on small made-up
trees and show that each rule does fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Each package's layer: a module may import from its own package and from packages of a lower layer.
#: The benchmark tools sit below the studies because an ablation study times its models with them.
LAYERS = {
    "core": 0,
    "data": 1,
    "models": 2,
    "attribution": 3,
    "training": 4,
    "bench": 5,
    "experiments": 6,
    "teaching": 6,
    "cli": 7,
    "ui": 7,
}
#: The old import paths kept for one release (``CHANGELOG.md``): top-level modules that re-export.
COMPAT = {"augment", "distill", "igcache", "overlay", "samples", "train"}
#: ``kdviz/__init__.py``, ``kdviz/__main__.py``, the old paths, ``pages/`` and ``app.py``.
TOP = max(LAYERS.values()) + 1
STREAMLIT_ALLOWED = ("kdviz/ui/", "pages/", "app.py")


@dataclass(frozen=True)
class Import:
    file: str  # relative to the project root, with forward slashes
    line: int
    source: str  # the importing module's dotted name ("pages.models" for a page)
    target: str  # the imported module's dotted name


def sources(root: Path) -> list[Path]:
    """Every Python file the rules apply to."""
    files = sorted((root / "kdviz").rglob("*.py")) + sorted((root / "pages").glob("*.py"))
    return files + ([root / "app.py"] if (root / "app.py").is_file() else [])


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path, modules: set[str]) -> list[Import]:
    """The kdviz modules ``path`` imports, relative imports resolved, imports in functions included.

    ``from package import name`` counts as importing ``package.name`` when that is a module, else
    ``package`` (a name defined in its ``__init__``).
    """
    rel = path.relative_to(root).as_posix()
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found += [Import(rel, node.lineno, name, t) for t in targets]
    return found


def all_imports(root: Path) -> list[Import]:
    files = sources(root)
    modules = {module_name(root, f) for f in files}
    return [imp for f in files for imp in imports_of(root, f, modules)]


def package_of(module: str) -> str | None:
    """``kdviz.training.loop`` -> ``training``; None for the top (pages, app, kdviz's root, the old paths)."""
    parts = module.split(".")
    if parts[0] != "kdviz" or len(parts) < 2 or parts[1] in COMPAT or parts[1] == "__main__":
        return None
    return parts[1]


def layer_of(module: str) -> int:
    package = package_of(module)
    return TOP if package is None else LAYERS.get(package, TOP)


def is_compat(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "kdviz" and len(parts) > 1 and parts[1] in COMPAT


def layer_violations(imports: list[Import], root: Path) -> list[str]:
    problems, unplaced = [], set()
    for f in sources(root):
        package = package_of(module_name(root, f))
        if package is not None and package not in LAYERS and package not in unplaced:
            unplaced.add(package)
            problems.append(f"{f.relative_to(root).as_posix()}: package {package!r} has no layer in LAYERS")
    for imp in imports:
        if imp.target != "kdviz" and not imp.target.startswith("kdviz."):
            continue
        src_pkg, dst_pkg = package_of(imp.source), package_of(imp.target)
        if is_compat(imp.target) and not is_compat(imp.source):
            problems.append(f"{imp.file}:{imp.line}: imports {imp.target}, an old path kept only for users")
        elif src_pkg is not None and src_pkg != dst_pkg and layer_of(imp.target) >= layer_of(imp.source):
            problems.append(
                f"{imp.file}:{imp.line}: {src_pkg} (layer {layer_of(imp.source)}) imports {imp.target} "
                f"({dst_pkg or 'the top'}, layer {layer_of(imp.target)}): imports must point down"
            )
    return problems


def package_cycles(imports: list[Import]) -> list[list[str]]:
    """Groups of packages that import one another in a circle (strongly connected, more than one)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        a, b = package_of(imp.source), package_of(imp.target)
        if a is not None and b is not None and a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def streamlit_violations(imports: list[Import]) -> list[str]:
    return [
        f"{imp.file}:{imp.line}: imports {imp.target} outside the dashboard"
        for imp in imports
        if imp.target.split(".")[0] == "streamlit" and not imp.file.startswith(STREAMLIT_ALLOWED)
    ]


def check(root: Path) -> list[str]:
    imports = all_imports(root)
    cycles = [f"import cycle between packages: {' <-> '.join(c)}" for c in package_cycles(imports)]
    return layer_violations(imports, root) + cycles + streamlit_violations(imports)


# ---------------------------------------------------------------------------------- the project


def test_the_project_keeps_its_layers():
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def test_every_kdviz_package_has_a_layer():
    packages = {p.name for p in (ROOT / "kdviz").iterdir() if (p / "__init__.py").is_file()}
    assert packages - set(LAYERS) <= COMPAT, (
        f"packages without a layer: {sorted(packages - set(LAYERS) - COMPAT)}"
    )
    assert set(LAYERS) <= packages, f"LAYERS names missing packages: {sorted(set(LAYERS) - packages)}"


def test_the_checker_sees_the_real_imports():
    """Guards the guard: the walk finds lazy imports and resolves relative ones."""
    imports = all_imports(ROOT)
    targets = {(i.source, i.target) for i in imports}
    assert ("kdviz.training.loop", "kdviz.core.atomic") in targets  # from ..core import atomic
    assert ("kdviz.cli.runs", "kdviz.training.workflows") in targets  # inside cmd_train
    assert any(i.target == "streamlit" and i.file == "app.py" for i in imports)


# ---------------------------------------------------------------------------------- the checker


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in {"kdviz/__init__.py": "", **files}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for parent in path.relative_to(tmp_path).parents:
            if parent.parts and parent.parts[0] == "kdviz":
                (tmp_path / parent / "__init__.py").touch()
    return tmp_path


def test_checker_accepts_imports_that_point_down(tmp_path):
    root = _tree(
        tmp_path,
        {
            "kdviz/core/atomic.py": "import os\n",
            "kdviz/data/folder.py": "from ..core import atomic\nfrom . import base\n",
            "kdviz/data/base.py": "",
            "kdviz/ui/page.py": "import streamlit as st\nfrom kdviz.data import folder\n",
            "pages/p.py": "import streamlit\nfrom kdviz.ui import page\n",
        },
    )
    assert check(root) == []


def test_checker_refuses_an_upward_import(tmp_path):
    root = _tree(
        tmp_path, {"kdviz/core/settings.py": "from ..training import loop\n", "kdviz/training/loop.py": ""}
    )
    (problem,) = check(root)
    assert problem.startswith("kdviz/core/settings.py:1: core (layer 0) imports kdviz.training.loop")


def test_checker_refuses_a_lazy_upward_import(tmp_path):
    root = _tree(
        tmp_path,
        {
            "kdviz/models/evaluate.py": (
                "def predict():\n    from kdviz.ui.cache import loaded\n    return loaded\n"
            ),
            "kdviz/ui/cache.py": "loaded = 1\n",
        },
    )
    (problem,) = check(root)
    assert "kdviz/models/evaluate.py:2: models" in problem and "kdviz.ui.cache" in problem


def test_checker_refuses_a_sideways_import_and_names_the_cycle(tmp_path):
    root = _tree(
        tmp_path,
        {
            "kdviz/experiments/ablation.py": "from ..teaching import lesson\n",
            "kdviz/teaching/lesson.py": "from kdviz.experiments import ablation\n",
        },
    )
    problems = check(root)
    assert "import cycle between packages: experiments <-> teaching" in problems
    assert sum("imports must point down" in p for p in problems) == 2


def test_checker_finds_a_cycle_on_its_own():
    imports = [
        Import("a.py", 1, "kdviz.data.a", "kdviz.models.b"),
        Import("b.py", 1, "kdviz.models.b", "kdviz.core.c"),
        Import("c.py", 1, "kdviz.core.c", "kdviz.data.a"),
    ]
    assert package_cycles(imports) == [["core", "data", "models"]]
    assert package_cycles(imports[:2]) == []


def test_checker_refuses_streamlit_in_the_library(tmp_path):
    root = _tree(
        tmp_path,
        {
            "kdviz/data/images.py": "def show():\n    import streamlit.components.v1 as c\n    return c\n",
            "kdviz/ui/ok.py": "import streamlit\n",
        },
    )
    (problem,) = check(root)
    assert problem == "kdviz/data/images.py:2: imports streamlit.components.v1 outside the dashboard"


def test_checker_refuses_the_root_package_and_the_old_paths(tmp_path):
    root = _tree(
        tmp_path,
        {
            "kdviz/overlay.py": "from .attribution.render import *  # the old path, kept for users\n",
            "kdviz/attribution/render.py": "from kdviz import __version__\n",
            "pages/p.py": "from kdviz import overlay\n",
        },
    )
    problems = check(root)
    assert any(
        p.startswith("kdviz/attribution/render.py:1: attribution (layer 3) imports kdviz ") for p in problems
    )
    assert "pages/p.py:1: imports kdviz.overlay, an old path kept only for users" in problems
    assert len(problems) == 2  # the compatibility module itself may import the new path


def test_checker_refuses_a_package_without_a_layer(tmp_path):
    root = _tree(
        tmp_path, {"kdviz/plugins/extra.py": "from ..core import atomic\n", "kdviz/core/atomic.py": ""}
    )
    assert "kdviz/plugins/__init__.py: package 'plugins' has no layer in LAYERS" in check(root)
