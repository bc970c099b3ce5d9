"""The command line of the background process, and its progress protocol (pure Python, tested outside Slicer)."""

from __future__ import annotations

import os
import shutil
import sys

__all__ = ["pythonSlicerExecutable", "parseProgressLine", "segmentationResultMessage", "MIRRORED_NUMBERING_TITLE",
           "jobOutcome", "CANCELLED_EXIT_CODE", "importedModelId", "checkpointImportArguments",
           "segmentationArguments"]

CANCELLED_EXIT_CODE = 130  # toothseg's exit status after SIGTERM or Ctrl-C (nothing partial written)

MIRRORED_NUMBERING_TITLE = "Check the tooth numbers: left and right look mirrored"


def pythonSlicerExecutable() -> str:
    """``PythonSlicer`` next to the running Slicer, else the current interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = os.path.join(os.path.dirname(sys.executable), "PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return candidate if os.path.exists(candidate) else sys.executable


def parseProgressLine(line: str):
    """``(fraction, stage)`` from a ``progress 0.4200 segmenting teeth`` line, else None."""
    parts = line.strip().split(" ", 2)
    if len(parts) >= 2 and parts[0] == "progress":
        try:
            return float(parts[1]), parts[2] if len(parts) > 2 else ""
        except ValueError:
            return None
    return None


def segmentationResultMessage(report: dict) -> tuple[str, str | None]:
    """The status line of a finished segmentation (from ``segment --report``) and, when its left/right
    numbering looks mirrored (``report["handedness"]["verdict"] == "mirrored"``), the text of a warning
    the panel shows in a dialog: a wrong-side tooth number is a clinical error, not a detail of the log."""
    teeth = report.get("labels", [])
    warnings = [str(w) for w in report.get("warnings", [])]
    message = f"{len(teeth)} teeth found."
    handedness = report.get("handedness") or {}
    mirrored = None
    if handedness.get("verdict") == "mirrored":
        axis = handedness.get("suspect_axis")
        if axis in ("anterior-posterior", "superior-inferior"):
            mirrored = (f"This scan's orientation header looks wrong along its {axis} axis: the teeth's "
                        "left and right agree with the header, their front and back or top and bottom do not "
                        f"(handedness {handedness.get('determinant', 0):+.2f}). Either that axis is flipped, and "
                        "the tooth numbers may be right, or the head is turned in the header, and left and right "
                        "are swapped as well. Check the volume's orientation (Volumes module, Volume Information) "
                        "before trusting or renumbering the left/right tooth numbers.")
        else:
            mirrored = ("The teeth numbered as the patient's right lie on the patient's left of this scan "
                        f"(handedness {handedness.get('determinant', 0):+.2f}). Either the model numbers sides "
                        "mirror-wise or the scan's orientation header is mirrored: check the numbers before any "
                        "use, and renumber the teeth in the Correct section.")
        message = "Warning: left/right tooth numbering looks mirrored. " + message
        warnings = [w for w in warnings if not w.startswith("left/right numbering")]
    if warnings:
        message += " " + " ".join(warnings)
    return message, mirrored


def jobOutcome(exitCode: int, cancelled: bool, log: str, what: str, cancelledMessage: str) -> tuple[str, str]:
    """``(state, message)`` of a finished background ``toothseg`` job: ``cancelled`` (Cancel/Stop, or exit
    130), ``failed`` (the last line of the log that names an error, else the exit code) or ``ok``."""
    if cancelled or exitCode == CANCELLED_EXIT_CODE:
        return "cancelled", cancelledMessage
    if exitCode != 0:
        errors = [line for line in log.splitlines() if "error" in line.lower()]
        return "failed", errors[-1] if errors else f"{what} failed (exit code {exitCode})."
    return "ok", ""


def importedModelId(zipPath: str, selectedId: str | None = None, selectedNeedsWeights: bool = False) -> str:
    """The ID an imported nnU-Net zip is installed under: the selected catalogue model's when that model
    waits for these weights (DentalSegmentator chosen, its zip downloaded: the entry then shows as
    installed), else a plain name made from the file name ("Dataset111_453CT.zip" → "Dataset111_453CT")."""
    if selectedId and selectedNeedsWeights:
        return selectedId
    from toothseg.core.names import plain_name_from

    return plain_name_from(os.path.splitext(os.path.basename(zipPath))[0], "nnunet-imported")


def checkpointImportArguments(zipPath: str, modelId: str) -> list[str]:
    """``toothseg`` arguments that convert an nnU-Net model zip and install it (a list: no shell string)."""
    return ["models", "import-checkpoint", "nnunet", "--zip", str(zipPath), "--id", modelId, "--install"]


def segmentationArguments(inputPath, outputPath, reportPath, modelId: str, device: str = "auto", fast: bool = False,
                          tta: bool = True, uncertaintyPath=None, jaws: str = "auto") -> list[str]:
    """``toothseg segment`` arguments for the panel's choices (a list: no shell string). ``jaws``: which jaws
    the scan holds as the user knows it (``both``, ``upper``, ``lower``), or ``auto`` for the model's own."""
    arguments = ["segment", str(inputPath), "-o", str(outputPath), "--model", modelId, "--device", device,
                 "--progress-lines", "--report", str(reportPath), "--tta" if tta else "--no-tta"]
    if fast:
        arguments.append("--fast")
    if jaws != "auto":
        arguments += ["--jaws", jaws]
    if uncertaintyPath is not None:
        arguments += ["--uncertainty", str(uncertaintyPath)]
    return arguments
