"""Load the module's .ui with PySide6 (offscreen), standing in plain Qt widgets for Slicer's own."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

UI_FILE = Path(__file__).resolve().parents[2] / "ToothSegExtension" / "ToothSeg" / "Resources" / "UI" / "ToothSeg.ui"


def load_panel(width: int = 440):
    """(QApplication, root widget) of ToothSeg.ui; Slicer/CTK classes become similar Qt widgets."""
    from PySide6 import QtCore, QtWidgets
    from PySide6.QtUiTools import QUiLoader

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])

    class Loader(QUiLoader):
        STAND_INS = {
            "qMRMLWidget": QtWidgets.QWidget,
            "ctkCollapsibleButton": QtWidgets.QGroupBox,
            "qMRMLNodeComboBox": QtWidgets.QComboBox,
            "ctkPathLineEdit": QtWidgets.QLineEdit,
            "ctkSliderWidget": QtWidgets.QDoubleSpinBox,
            "qMRMLSegmentEditorWidget": QtWidgets.QLabel,
        }

        def createWidget(self, class_name, parent=None, name=""):
            stand_in = self.STAND_INS.get(class_name)
            if stand_in is None:
                return super().createWidget(class_name, parent, name)
            widget = stand_in(parent)
            widget.setObjectName(name)
            widget.setProperty("slicerClass", class_name)
            return widget

    loader = Loader()
    file = QtCore.QFile(str(UI_FILE))
    file.open(QtCore.QFile.ReadOnly)
    root = loader.load(file)
    file.close()
    if root is None:
        raise RuntimeError(loader.errorString())
    for box in root.findChildren(QtWidgets.QGroupBox):
        box.setTitle(str(box.property("text") or ""))  # ctkCollapsibleButton's caption
    for label in root.findChildren(QtWidgets.QLabel):
        if label.property("slicerClass") == "qMRMLSegmentEditorWidget":
            label.setText("[Segment Editor: effects, undo/redo, segment list]")
            label.setMinimumHeight(60)
    root.resize(width, root.sizeHint().height())
    return app, root
