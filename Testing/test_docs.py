"""The documentation stays honest where that is cheap to check: the README stays an entry point, every
command docs/cli.md names exists, every benchmark script the benchmarks README names exists, and every
relative link in the README and docs/ leads to a file."""

from __future__ import annotations

import re
from pathlib import Path

from toothseg.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md", REPO / "Testing" / "benchmarks" / "README.md",
                                                 REPO / "CHANGELOG.md"]


def _subcommands() -> set[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(actions[0].choices) if actions else set()


def test_the_readme_is_an_entry_point():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move details into docs/"


def test_every_command_docs_cli_names_exists():
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^toothseg ([a-z][a-z-]*)", text, flags=re.M))
    known = _subcommands()
    assert named, "docs/cli.md names no command"
    assert named <= known, f"docs/cli.md names commands that do not exist: {sorted(named - known)}"
    assert known - {"version"} <= named, f"commands missing from docs/cli.md: {sorted(known - named)}"


def test_every_benchmark_script_named_exists():
    text = (REPO / "Testing" / "benchmarks" / "README.md").read_text(encoding="utf-8")
    scripts = set(re.findall(r"\b((?:bench|smoke)_[a-z0-9_]+\.py)\b", text))
    assert len(scripts) >= 10
    missing = sorted(s for s in scripts if not (REPO / "Testing" / "benchmarks" / s).exists())
    assert not missing, f"the benchmarks README names scripts that do not exist: {missing}"
    results = set(re.findall(r"results/([A-Za-z0-9_.\-]+\.(?:json|png))", text))
    missing = sorted(r for r in results if not (REPO / "Testing" / "benchmarks" / "results" / r).exists()
                     and not list((REPO / "Testing" / "benchmarks" / "results").rglob(r)))
    assert not missing, f"the benchmarks README names result files that do not exist: {missing}"


def test_relative_links_lead_to_files():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken, broken
