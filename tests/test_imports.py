"""No import cycles between merc's modules.

The checker parses every module under ``merc/`` with :mod:`ast` (nothing is imported), builds the graph
"module A imports module B" from every ``import`` / ``from ... import`` statement — at module level and
inside functions alike, since a lazy import only postpones a cycle — and fails on any cycle (a strongly
connected component of more than one module, or a module importing itself). Importing a package's submodule
does not count as importing the package's ``__init__``: Python runs it, but an ``__init__`` that re-exports
its submodules is not a dependency in the other direction.

The checker does catch cycles: ``test_checker_finds_a_cycle`` writes a tiny package in which
``a -> b -> c -> a`` (the last import inside a function) and checks that exactly that cycle is reported,
and that removing one edge makes it pass.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """module -> the modules of the same top-level package it imports (anywhere in its body)."""
    top = package_dir.name
    files = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}

    def resolve(name: str) -> str | None:
        """The longest prefix of ``name`` that is one of our modules."""
        parts = name.split(".")
        for k in range(len(parts), 0, -1):
            cand = ".".join(parts[:k])
            if cand in files:
                return cand
        return None

    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # ``from pkg import sub`` imports the submodule ``pkg.sub``; ``from mod import name`` the module
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in files else source for a in node.names]
            for t in targets:
                if t.split(".")[0] != top:
                    continue
                dep = resolve(t)
                if dep is not None and dep != mod and not mod.startswith(dep + "."):
                    graph[mod].add(dep)
                elif dep == mod:
                    graph[mod].add(mod)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan), each sorted; sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_merc_has_no_import_cycles() -> None:
    graph = import_graph(REPO / "merc")
    assert "merc.qc.pipeline" in graph and "merc.metrics" in graph  # the walk found the package
    assert "merc.metrics" in graph["merc.training.trainer"]  # and real edges
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles between merc modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_leaf_modules_import_nothing_upward() -> None:
    graph = import_graph(REPO / "merc")
    assert graph["merc.errors"] == set()
    assert graph["merc.metrics"] <= {"merc.errors"}
    assert graph["merc.encoders.template"] <= {"merc.errors"}
    assert "merc.qc.pipeline" not in graph["merc.qc.report"]
    assert not any(dep.startswith("merc.training") for dep in graph["merc.encoders.finetune"])
    assert graph["merc.optim"] == set()  # the decay rule and the training loop sit below encoders and training
    assert graph["merc.loop"] <= {"merc.errors", "merc.io", "merc.optim"}


def test_checker_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import f\n")
    (pkg / "a.py").write_text("from pkg.sub import b\n\ndef f():\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("import os\nfrom . import c\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from pkg.a import f  # lazy, still a cycle\n    return f\n")
    (pkg / "d.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.b"] == {"pkg.sub.c"}  # relative import resolved; os ignored
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.sub.c"]]
    (pkg / "sub" / "c.py").write_text("def g():\n    return 1\n")
    assert find_cycles(import_graph(pkg)) == []


def test_synthetic_media_tooling_imports_lazily() -> None:
    """merc.testing.synth is installed (benchmarks use it) but importing it must not load the media stack."""
    import subprocess
    import sys
    code = ("import sys, merc.testing.synth; "
            "print(sorted(m for m in ('av', 'soundfile', 'PIL', 'skimage', 'dlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
