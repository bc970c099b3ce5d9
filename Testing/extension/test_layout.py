"""Layout contracts: the import boundary of toothseg.core and the Slicer extension's CMake files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "ToothSegTraining"


def modules_loaded_by(*modules: str) -> set[str]:
    """Every module a fresh interpreter has loaded after importing ``modules``."""
    code = f"import sys, {', '.join(modules)}; print(','.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.strip().split(","))


def test_core_imports_no_slicer_qt_training_or_heavy_libraries():
    loaded = modules_loaded_by("toothseg.core", "toothseg.core.io", "toothseg.core.export")
    heavy = ("slicer", "qt", "ctk", "vtk", "vtkmodules", "torch", "mamba_ssm", "PySide6")
    assert [m for m in loaded if m.split(".")[0] in heavy or m.startswith("toothseg.train")] == []


def test_the_case_pool_the_gui_imports_needs_no_torch():
    """Slicer's "Save as corrected case" and "Load next case" import the pool and the ranking in the GUI
    process, where torch may be absent; they are core data, so no training code comes with them."""
    loaded = modules_loaded_by("toothseg.core.pool.store", "toothseg.core.pool.ranking")
    assert [m for m in loaded
            if m.split(".")[0] in ("torch", "monai", "PySide6") or m.startswith("toothseg.train")] == []


def test_the_slicer_module_never_imports_training_code():
    """ARCHITECTURE: the GUI launches training as a separate process; it never imports toothseg.train."""
    pattern = re.compile(r"^\s*(import|from)\s+toothseg\.train\b", re.MULTILINE)
    offenders = [str(p) for p in (REPO / "ToothSegExtension").rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_core_sources_never_import_slicer_or_training_code():
    pattern = re.compile(r"^\s*(import|from)\s+(slicer|qt|ctk|toothseg\.train)\b", re.MULTILINE)
    offenders = [str(p) for p in (PACKAGE / "toothseg" / "core").rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_top_level_layout():
    """What the repository holds at its top (git's view: ignored run folders do not count)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        names = {line.split("/")[0] for line in listed.stdout.splitlines() if not line.startswith(".")}
    else:  # not a git checkout (e.g. an unpacked archive)
        names = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}
    required = {"ToothSegExtension", "ToothSegTraining", "Resources", "Testing", "CMakeLists.txt", "README.md"}
    assert required <= names
    assert names - required <= {"Makefile", "pytest.ini", "ruff.toml", "docs", "CHANGELOG.md", "demo-output",
                                "toothseg-demo"}


def test_extension_cmake_has_slicer_metadata():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for field in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                  "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({field} "[^"]+"\)', text), field
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    for call in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert call in text
    for sub in re.findall(r"add_subdirectory\(([^)]+)\)", text):
        assert (REPO / sub / "CMakeLists.txt").exists(), sub


def _cmake_list(text: str, name: str) -> list[str]:
    block = re.search(rf"set\({name}(.*?)\)", text, re.DOTALL).group(1)
    return sorted(line.strip() for line in block.splitlines() if line.strip())


def test_package_file_lists_in_cmake_match_the_files():
    text = (REPO / "ToothSegExtension" / "ToothSegCore" / "CMakeLists.txt").read_text(encoding="utf-8")
    package = PACKAGE / "toothseg"
    assert _cmake_list(text, "TOOTHSEG_PACKAGE_FILES") == sorted(
        p.relative_to(PACKAGE).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    assert _cmake_list(text, "TOOTHSEG_PACKAGE_DATA") == sorted(
        p.relative_to(PACKAGE).as_posix() for p in package.rglob("*") if p.suffix in (".yaml", ".json"))
    resources = REPO / "Resources"
    assert _cmake_list(text, "TOOTHSEG_RESOURCE_FILES") == sorted(
        p.relative_to(resources).as_posix() for folder in ("SampleData", "Models")
        for p in (resources / folder).rglob("*") if p.is_file())
    assert "slicerMacroBuildScriptedModule(" in text


def test_training_package_never_imports_qt_or_slicer():
    """train.py must run inside Slicer's Python without touching its GUI."""
    code = ("import sys, toothseg.train.engine.pipeline, toothseg.train.methods, toothseg.train.synth, "
            "toothseg.cli.train; from toothseg.train.methods import method_names; method_names(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('slicer', 'qt', 'ctk', 'PySide6', 'PyQt5')]; "
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
