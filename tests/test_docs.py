"""The docs point inside the repository: relative links resolve, named results files exist, nothing cites the
design notes or model recipes that once lived outside it."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = re.compile(r"benchmarks/results/[\w/+-]*?[\w.+-]+?\.(?:md|json)(?![\w/])")
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_relative_links_resolve():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_named_results_files_exist():
    missing, named = [], 0
    for doc in [*DOCS, *sorted((ROOT / "merc").rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]:
        for path in RESULTS_PATH.findall(doc.read_text(encoding="utf-8")):
            named += 1
            if not (ROOT / path).exists():
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
    assert named > 10 and not missing, missing


def test_no_pointer_outside_the_repository():
    pattern = re.compile(r"shared/(DESIGN|OFFLINE_MODELS)\.md|outside this repository")
    files = [*DOCS, *sorted((ROOT / "merc").rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py")),
             *sorted((ROOT / "tests").glob("*.py"))]
    hits = [str(f.relative_to(ROOT)) for f in files if f != Path(__file__) and pattern.search(f.read_text("utf-8"))]
    assert not hits, hits
