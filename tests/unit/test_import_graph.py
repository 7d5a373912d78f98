"""The runtime never imports training code, and no module-level import circle runs through the packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("modelcache_svc", "modelcache_train")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (imports inside functions are lazy by intent)."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "_gen" not in p.parts}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def test_no_module_level_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif not state.get(nxt):
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])
    # A package importing its own submodules in __init__ and a submodule importing a sibling through the
    # package is not a circle of code; the rest is.
    real = [c for c in circles if not all(c[0].startswith(m) or m.startswith(c[0]) for m in c)]
    assert not real, real


def test_the_service_never_loads_the_training_package() -> None:
    code = ("import sys; import modelcache_svc.app, modelcache_svc.verifier, modelcache_svc.verifier.model, "
            "modelcache_svc.cache.service, modelcache_svc.tools.evaluation; "
            "bad = sorted(m for m in sys.modules if m.startswith('modelcache_train')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in (ROOT / "modelcache_svc").rglob("*.py"):
        if path.name == "cli.py" and path.parent.name == "modelcache_svc":
            continue  # the `train` verb hands off to the training package
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n.startswith("modelcache_train") for n in names), f"{path} imports training code"
