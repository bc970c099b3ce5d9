"""The command line of the background process, and its progress protocol (pure Python, tested outside Slicer)."""

from __future__ import annotations

import os
import shutil
import sys

__all__ = ["pythonSlicerExecutable", "parseProgressLine"]


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
