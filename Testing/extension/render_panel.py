"""Render the module panel offscreen (PySide6, Slicer widgets stood in by plain Qt) to a PNG.

    python Testing/extension/render_panel.py Resources/Screenshots/panel.png

Used for the README picture; the real panel in Slicer has the same layout with Slicer's widgets.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from uiloader import load_panel  # noqa: E402


def main(out: str) -> int:
    from PySide6 import QtWidgets

    app, panel = load_panel()
    for box in panel.findChildren(QtWidgets.QGroupBox):
        box.setVisible(True)
    combo = panel.findChild(QtWidgets.QComboBox, "modelComboBox")
    combo.addItems(["RAIL, 4-student ensemble [3D] — weights not installed",
                    "U-Mamba2-SSL [3D] — weights not installed"])
    panel.findChild(QtWidgets.QComboBox, "inputVolumeSelector").addItem("ToothSeg sample (synthetic CBCT)")
    panel.findChild(QtWidgets.QLabel, "inputInfoLabel").setText("149 x 130 x 112 voxels, 0.6 x 0.6 x 0.6 mm")
    panel.findChild(QtWidgets.QLabel, "modelCardLabel").setText(
        "<b>RAIL (region-aware instructive learning), 4-student ensemble</b> (not installed)<br>"
        "Weights not installed: download the authors' checkpoints, then <i>toothseg models import-checkpoint rail</i>")
    panel.findChild(QtWidgets.QLabel, "deviceInfoLabel").setText("No CUDA GPU found: the CPU will be used")
    progress = panel.findChild(QtWidgets.QProgressBar, "progressBar")
    progress.setValue(42)
    panel.findChild(QtWidgets.QLabel, "statusLabel").setText("segmenting teeth: window 12/28")
    panel.adjustSize()
    panel.resize(440, panel.sizeHint().height())
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(out):
        raise SystemExit(f"could not write {out}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "panel.png"))
