"""Check data/slicer_members.txt against the sources that declare its members.

The test suite checks that every Slicer/CTK/SlicerPyTorch member the module uses is listed in
data/slicer_members.txt; it cannot read Slicer's source (no Slicer here or in CI). This script, run by
hand when a row is added or Slicer is updated, checks the other half: that each listed member is
really declared in the named file, at a given commit of a git clone of each project::

    python Testing/extension/verify_slicer_members.py \\
        --repo Slicer=/path/to/Slicer.git@583e9b37 --repo CTK=/path/to/CTK.git@868d56c7 \\
        --repo SlicerPyTorch=/path/to/SlicerPyTorch.git@067a0e9d

A member counts as declared when the file names it as a function or signal (``name(``), an enum value
(``name =``), a Qt property (``Q_PROPERTY(... name``) or a VTK accessor macro (``vtkGetStringMacro(Name)``
declares ``GetName``). Exit status 1 lists the rows that were not found.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

MEMBERS = Path(__file__).resolve().parent / "data" / "slicer_members.txt"


def read_rows(path: Path = MEMBERS) -> list[tuple[str, str, str]]:
    """(class, member, source) rows; comment and blank lines skipped."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            fields = line.split()
            if len(fields) != 3:
                raise ValueError(f"{path.name}:{number}: expected 'class member source', got {line.strip()!r}")
            rows.append((fields[0], fields[1], fields[2]))
    return rows


def is_declared(member: str, text: str) -> bool:
    """Whether a C++ header or Python file declares ``member`` (see the module docstring)."""
    name = member.split("(")[0]
    if "(" in member:  # a signal given with its signature: the signal's name followed by "("
        return re.search(rf"\b{re.escape(name)}\s*\(", text) is not None
    accessor = re.match(r"(Get|Set)(\w+)$", name)
    if accessor and re.search(rf"vtk{accessor.group(1)}\w*Macro\(\s*{re.escape(accessor.group(2))}\s*[,)]", text):
        return True
    patterns = [rf"\b{re.escape(name)}\s*\(", rf"\b{re.escape(name)}\s*=", rf"Q_PROPERTY\([^)]*\b{re.escape(name)}\b",
                rf"\bclass\s+{re.escape(name)}\b"]
    return any(re.search(pattern, text) for pattern in patterns)


def show(git_dir: str, commit: str, path: str) -> str:
    result = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FileNotFoundError(f"{path} at {commit} in {git_dir}: {result.stderr.strip()}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", action="append", default=[], metavar="PROJECT=GIT_DIR@COMMIT",
                        help="where to read a project's files (repeatable; rows of other projects are skipped)")
    args = parser.parse_args(argv)
    repos = {}
    for spec in args.repo:
        project, _, location = spec.partition("=")
        git_dir, at, commit = location.partition("@")
        if not project or not git_dir or (at and not commit):
            parser.error(f"--repo {spec!r}: expected PROJECT=GIT_DIR or PROJECT=GIT_DIR@COMMIT")
        repos[project] = (git_dir, commit or "HEAD")
    if not repos:
        parser.error("give at least one --repo (Slicer, CTK or SlicerPyTorch)")
    missing, checked = [], 0
    for klass, member, source in read_rows():
        project, _, path = source.partition(":")
        if project not in repos:
            continue
        checked += 1
        try:
            declared = is_declared(member, show(*repos[project], path))
        except FileNotFoundError as exc:  # a moved header, a wrong commit or folder: said, and the rest checked
            missing.append(f"{klass}.{member}: {exc}")
            continue
        if not declared:
            missing.append(f"{klass}.{member} not declared in {source}")
    print(f"{checked} rows checked, {len(missing)} not found")
    for line in missing:
        print("  " + line)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
