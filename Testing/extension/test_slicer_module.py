"""The Slicer module without Slicer: files compile, the .ui loads (PySide6, offscreen), every widget
and parameter the code uses exists, every slicer.util function it calls exists in Slicer, and the
RAS/LPS/IJK adapters agree with the core."""

from __future__ import annotations

import ast
import py_compile
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "ToothSegExtension" / "ToothSeg"
SOURCES = [MODULE / "ToothSeg.py", *sorted((MODULE / "ToothSegLib").glob("*.py"))]
UI = MODULE / "Resources" / "UI" / "ToothSeg.ui"


def ui_tree():
    return ET.parse(UI).getroot()


def ui_names() -> set[str]:
    return {w.get("name") for w in ui_tree().iter("widget")}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_module_files_compile(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)


def test_every_ui_widget_the_code_uses_exists():
    code = (MODULE / "ToothSeg.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", code))
    assert used, "the widget uses no ui elements?"
    assert used <= ui_names(), sorted(used - ui_names())


def test_parameter_bindings_match_the_parameter_node():
    tree = ast.parse((MODULE / "ToothSeg.py").read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ToothSegParameterNode")
    fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    bound = {p.find("string").text for p in ui_tree().iter("property") if p.get("name") == "SlicerParameterName"}
    assert bound <= fields, sorted(bound - fields)
    assert {"inputVolume", "device", "exportFolder", "poolFolder"} <= bound


def test_every_logic_member_the_widget_uses_exists():
    """The widget only calls what ToothSegLogic defines (or inherits from Slicer's
    ScriptedLoadableModuleLogic: getParameterNode, Base/Python/slicer/ScriptedLoadableModule.py)."""
    widget_code = (MODULE / "ToothSeg.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.logic\.([A-Za-z_][A-Za-z0-9_]*)", widget_code))
    tree = ast.parse((MODULE / "ToothSegLib" / "Logic.py").read_text(encoding="utf-8"))
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ToothSegLogic")
    defined = {n.name for n in logic.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {t.attr for n in ast.walk(logic) if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    assert {"startSegmentation", "cancel", "lastTaskCancelled"} <= used
    assert used <= defined | {"getParameterNode"}, sorted(used - defined)


def test_slicer_util_calls_exist_in_slicer():
    names_file = REPO / "Testing" / "extension" / "data" / "slicer_util_functions.txt"
    known = {line.strip() for line in names_file.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")}
    used = set()
    for path in SOURCES:
        used |= set(re.findall(r"slicer\.util\.([A-Za-z_][A-Za-z0-9_]*)\(", path.read_text(encoding="utf-8")))
    assert used, "no slicer.util calls found"
    assert used <= known, sorted(used - known)


def module_member_uses() -> set[tuple[str, str]]:
    """(class or "", member) for every Slicer/MRML/CTK/VTK/Qt member the module's code names: CamelCase
    calls (our own code is snake_case or lowerCamelCase), ``qt.`` and ``vtk.`` names, the QProcess's and
    the embedded Segment Editor's members, the scene's, and the signals connected by signature."""
    uses: set[tuple[str, str]] = set()
    for path in SOURCES:
        code = path.read_text(encoding="utf-8")
        uses |= {("", m) for m in re.findall(r"\.([A-Z][A-Za-z0-9]*)\(", code)}
        uses |= {("", m) for m in re.findall(r"slicer\.mrmlScene\.([A-Za-z]+)", code)}
        uses |= {("", m) for m in re.findall(r"self\.ui\.segmentEditorWidget\.([A-Za-z]+)\(", code)}
        uses |= {("", m) for m in re.findall(r'\.connect\("([A-Za-z]+\([^"]*\))"', code)}
        if path.name == "ProcessRunner.py":  # there self.process is the QProcess
            uses |= {("QProcess", m) for m in re.findall(r"self\.process\.([A-Za-z]+)", code)}
        uses |= {(k, m or k) for k, m in re.findall(r"\bqt\.(Q[A-Za-z]+)(?:\.([A-Za-z]+))?", code)}
        uses |= set(re.findall(r"\bvtk\.(vtk[A-Za-z]+)\.([A-Za-z]+)", code))
    return uses


def test_every_slicer_member_the_module_uses_is_pinned():
    """A member the module calls must be listed in data/slicer_members.txt, where each row names the
    file that declares it (checked by verify_slicer_members.py against Slicer's and CTK's sources)."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from verify_slicer_members import read_rows
    finally:
        sys.path.remove(str(Path(__file__).parent))
    rows = read_rows()
    by_member = {member for _, member, _ in rows}
    by_class = {(klass, member) for klass, member, _ in rows}
    uses = module_member_uses()
    assert {("", "SetReferenceImageGeometryParameterFromVolumeNode"), ("", "currentNodeChanged(vtkMRMLNode*)"),
            ("QProcess", "terminate"), ("vtkCommand", "ModifiedEvent")} <= uses  # the extraction finds them
    unpinned = sorted(f"{k}.{m}" if k else m for k, m in uses
                      if (k, m) not in by_class and not (k == "" and m in by_member))
    assert not unpinned, f"look these up in Slicer/CTK/Qt and add them to data/slicer_members.txt: {unpinned}"


def test_pinned_vtk_qt_and_python_members_exist_in_the_installed_libraries():
    """The rows the verifier script does not check (no Slicer source needed): VTK from the vtk wheel,
    Qt from PySide6 (Slicer's PythonQt wraps the same Qt classes), Python from the standard library."""
    import importlib
    import importlib.util

    import vtk

    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from verify_slicer_members import is_declared, read_rows
    finally:
        sys.path.remove(str(Path(__file__).parent))
    qt_modules = {}
    checked = 0
    for klass, member, source in read_rows():
        kind, _, where = source.partition(":")
        if kind == "vtk":
            owner = getattr(vtk, klass)
        elif kind == "Qt":
            if where not in qt_modules:
                qt_modules[where] = importlib.import_module(f"PySide6.{where}") if importlib.util.find_spec(
                    "PySide6") else None
            if qt_modules[where] is None:
                continue
            owner = getattr(qt_modules[where], klass)
        elif kind == "python":
            owner = importlib.import_module(klass)
        else:
            assert kind in {"Slicer", "CTK", "SlicerPyTorch"} and where, (klass, member, source)
            continue
        checked += 1
        assert member == klass or hasattr(owner, member.split("(")[0]), f"{klass}.{member} ({source})"
    assert checked >= 3
    # the verifier's own rule, on snippets: macro accessors, signals, enum values, and a miss
    header = "vtkGetStringMacro(Name);\nvtkSetVector3Macro(Color, double);\nvoid currentPathChanged(const QString&);"
    assert is_declared("GetName", header) and is_declared("SetColor", header)
    assert is_declared("currentPathChanged(QString)", header) and is_declared("StartCloseEvent", "StartCloseEvent = 1,")
    assert not is_declared("SetMasterVolumeNode", header) and not is_declared("GetColor2", header)


def test_the_member_verifier_refuses_a_malformed_repo_or_row(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from verify_slicer_members import main, read_rows
    finally:
        sys.path.remove(str(Path(__file__).parent))
    for argv in ([], ["--repo", "Slicer"], ["--repo", "Slicer=/x@"], ["--repo", "=/x@HEAD"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "--repo" in capsys.readouterr().err
    bad = tmp_path / "members.txt"
    bad.write_text("# comment\nvtkSegment SetTag\n")
    with pytest.raises(ValueError, match="members.txt:2: expected 'class member source'"):
        read_rows(bad)


def test_user_strings_are_translatable():
    code = (MODULE / "ToothSeg.py").read_text(encoding="utf-8")
    assert "from slicer.i18n import tr as _" in code
    for message in re.findall(r"tryWithErrorDisplay\(([^,)]*)", code):
        assert message.startswith("_("), message


def test_ui_loads_offscreen_and_shows_every_section():
    pytest.importorskip("PySide6")
    from .uiloader import load_panel

    app, panel = load_panel()
    from PySide6 import QtWidgets

    titles = [box.title() for box in panel.findChildren(QtWidgets.QGroupBox)]
    assert titles == ["Input", "Model", "Segment", "Correct", "Export", "Fine-tune"]
    assert panel.findChild(QtWidgets.QPushButton, "finetuneButton").text() == "Fine-tune model"
    assert panel.findChild(QtWidgets.QProgressBar, "finetuneProgressBar") is not None
    assert panel.findChild(QtWidgets.QPushButton, "applyButton").text() == "Segment teeth"
    assert panel.findChild(QtWidgets.QProgressBar, "progressBar") is not None


def test_progress_protocol_and_python_executable():
    sys.path.insert(0, str(MODULE))
    try:
        from ToothSegLib.Commands import parseProgressLine, pythonSlicerExecutable
    finally:
        sys.path.remove(str(MODULE))
    assert parseProgressLine("progress 0.4200 segmenting teeth: window 3/20") == (0.42, "segmenting teeth: window 3/20")
    assert parseProgressLine("progress 1.0000") == (1.0, "")
    assert parseProgressLine("wrote out.seg.nrrd") is None and parseProgressLine("progress x") is None
    assert Path(pythonSlicerExecutable()).exists()


def test_the_writer_of_progress_lines_speaks_the_modules_protocol(capsys):
    """Every ``--progress-lines`` command prints through print_progress_line; the module parses it back."""
    from toothseg.core.progress import print_progress_line

    sys.path.insert(0, str(MODULE))
    try:
        from ToothSegLib.Commands import parseProgressLine
    finally:
        sys.path.remove(str(MODULE))
    print_progress_line(0.25, "fine model: window 2/8")
    print_progress_line(1.0, "")
    lines = capsys.readouterr().out.splitlines()
    assert [parseProgressLine(line) for line in lines] == [(0.25, "fine model: window 2/8"), (1.0, "")]


def test_module_cmake_lists_every_file():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    for path in SOURCES:
        relative = path.relative_to(MODULE).as_posix().replace("ToothSegLib", "${MODULE_NAME}Lib")
        relative = relative.replace("ToothSeg.py", "${MODULE_NAME}.py")
        assert relative in text, relative
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "add_subdirectory(ToothSegExtension/ToothSeg)" in top


def test_a_mirrored_result_is_named_in_the_status_and_in_a_warning_dialog():
    sys.path.insert(0, str(MODULE))
    try:
        from ToothSegLib.Commands import segmentationResultMessage
    finally:
        sys.path.remove(str(MODULE))
    mirrored_line = "left/right numbering is mirrored: the teeth numbered as the patient's right lie ..."
    report = {"labels": [11, 21, 36], "warnings": [mirrored_line, "tooth 36 appears as 2 separate objects"],
              "handedness": {"verdict": "mirrored", "determinant": -0.93}}
    message, dialog = segmentationResultMessage(report)
    assert message.startswith("Warning: left/right tooth numbering looks mirrored. 3 teeth found.")
    assert "tooth 36 appears as 2 separate objects" in message and mirrored_line not in message  # said once
    assert dialog is not None and "-0.93" in dialog and "renumber" in dialog
    # a header flipped front to back: the dialog sends the user to the scan's orientation, not to renumbering
    flipped_line = "left/right numbering looks mirrored (handedness -0.99), but the teeth's left/right agrees ..."
    report["warnings"] = [flipped_line]
    report["handedness"] = {"verdict": "mirrored", "determinant": -0.99, "suspect_axis": "anterior-posterior"}
    message, dialog = segmentationResultMessage(report)
    assert flipped_line not in message and "anterior-posterior" in dialog and "orientation" in dialog
    assert "renumber the teeth in the Correct section" not in dialog
    report["handedness"] = {"verdict": "correct", "determinant": 0.97}
    report["warnings"] = []
    assert segmentationResultMessage(report) == ("3 teeth found.", None)
    assert segmentationResultMessage({}) == ("0 teeth found.", None)  # an older report without the verdict


def test_an_imported_zip_is_named_for_the_catalogue_model_that_waits_for_it(tmp_path, monkeypatch):
    """The panel's "Import nnU-Net model (.zip)…": the ID, and the command it runs, which installs the
    model where the catalogue finds it."""
    sys.path.insert(0, str(MODULE))
    try:
        from ToothSegLib.Commands import checkpointImportArguments, importedModelId, segmentationArguments
    finally:
        sys.path.remove(str(MODULE))
    assert importedModelId("/downloads/Dataset111_453CT.zip", "dentalsegmentator", True) == "dentalsegmentator"
    assert importedModelId("/downloads/Dataset111_453CT.zip", "toothseg-cbct-synthetic-demo", False) == \
        "Dataset111_453CT"
    assert importedModelId("C:/my models/teeth v2.zip") == "teeth_v2"
    arguments = checkpointImportArguments("/downloads/a b.zip", "dentalsegmentator")
    assert arguments[-1] == "--install" and "/downloads/a b.zip" in arguments  # one argument, no shell
    from toothseg.cli.main import build_parser

    parsed = build_parser().parse_args(arguments)
    assert parsed.install and parsed.zip == "/downloads/a b.zip" and parsed.id == "dentalsegmentator"
    # the panel's segmentation choices, as the command line reads them
    segment = build_parser().parse_args(segmentationArguments("/run/in put.nrrd", "/run/teeth.seg.nrrd",
                                                              "/run/report.json", "m", "cpu", fast=True, tta=False,
                                                              uncertaintyPath="/run/u.nrrd", jaws="lower"))
    assert (segment.input, segment.model, segment.device, segment.jaws) == ("/run/in put.nrrd", "m", "cpu", "lower")
    assert segment.fast and not segment.tta and segment.uncertainty == "/run/u.nrrd" and segment.progress_lines
    auto = build_parser().parse_args(segmentationArguments("a.nrrd", "b.seg.nrrd", "r.json", "m"))
    assert auto.jaws == "auto" and auto.tta and not auto.fast and auto.uncertainty is None
