"""Runs ``toothseg`` commands in a separate Python process without blocking Slicer's GUI.

Inference (and training) run in ``PythonSlicer`` — Slicer's own Python, not the GUI process — so the
user can keep working, a crash cannot take Slicer down, and Cancel really stops the work: it sends
SIGTERM, which ``toothseg`` turns into a clean stop with no partial output. Progress comes back as
``progress FRACTION STAGE`` lines (``toothseg segment --progress-lines``). The command is a list of
arguments, never a shell string.
"""

from __future__ import annotations

import logging
import os

import qt

from .Commands import parseProgressLine, pythonSlicerExecutable

__all__ = ["ToothSegProcess"]


class ToothSegProcess:
    """A ``python -m toothseg.cli ARGS`` child process with progress, log and cancel callbacks."""

    def __init__(self, arguments, onProgress=None, onLog=None, onFinished=None, pythonPath=None) -> None:
        self.arguments = [str(a) for a in arguments]
        self.onProgress, self.onLog, self.onFinished = onProgress, onLog, onFinished
        self.process = qt.QProcess()
        self.process.setProcessChannelMode(qt.QProcess.MergedChannels)
        environment = qt.QProcessEnvironment.systemEnvironment()
        if pythonPath:
            existing = environment.value("PYTHONPATH")
            environment.insert("PYTHONPATH", os.pathsep.join([pythonPath] + ([existing] if existing else [])))
        environment.insert("PYTHONUNBUFFERED", "1")
        self.process.setProcessEnvironment(environment)
        self.process.readyReadStandardOutput.connect(self._readOutput)
        self.process.finished.connect(self._finished)
        # A program that cannot start (no PythonSlicer, no permission) emits no finished(): without this the
        # panel would wait for ever. Signature-string connect as in Slicer's DICOMLib/DICOMProcesses.py.
        self.process.connect("errorOccurred(QProcess::ProcessError)", self._error)
        self.cancelled = False
        self.log = []
        self._buffer = ""

    def start(self) -> None:
        program = pythonSlicerExecutable()
        self.process.start(program, ["-m", "toothseg.cli", *self.arguments])
        logging.info("ToothSeg: started %s -m toothseg.cli %s", program, " ".join(self.arguments))

    def cancel(self) -> None:
        """Ask the process to stop (SIGTERM); it writes nothing partial and exits with 130."""
        self.cancelled = True
        if self.process.state() != qt.QProcess.NotRunning:
            self.process.terminate()
            if not self.process.waitForFinished(10000):
                self.process.kill()

    def isRunning(self) -> bool:
        return self.process.state() != qt.QProcess.NotRunning

    def _readOutput(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput().data()).decode("utf-8", errors="replace")
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            progress = parseProgressLine(line)
            if progress is not None:
                if self.onProgress:
                    self.onProgress(*progress)
            elif line.strip():
                self.log.append(line)
                if self.onLog:
                    self.onLog(line)

    def _error(self, error) -> None:
        if error == qt.QProcess.FailedToStart and self.onFinished:
            message = f"error: could not start {pythonSlicerExecutable()}: {self.process.errorString()}"
            self.log.append(message)
            self.onFinished(127, self.cancelled, "\n".join(self.log))

    def _finished(self, exitCode, exitStatus) -> None:
        self._readOutput()
        if self.onFinished:
            self.onFinished(int(exitCode), self.cancelled, "\n".join(self.log))
