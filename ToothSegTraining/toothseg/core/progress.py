"""Progress reporting and cooperative cancellation shared by the CLI, Slicer and training.

Long operations take a :class:`Progress`; they call :meth:`Progress.update` with a fraction and
a short stage text, and :meth:`Progress.check` between units of work, which raises
:class:`~toothseg.core.errors.CancelledError` once :meth:`CancelToken.cancel` was called (from a
GUI button, a signal handler or another thread). Nested steps get a :meth:`Progress.sub` range
so that every step can report 0→1 without knowing what runs around it.
"""

from __future__ import annotations

import contextlib
import signal

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .errors import CancelledError

__all__ = ["ProgressCallback", "CancelToken", "Progress", "cancel_on_sigterm"]

#: ``callback(fraction in [0, 1], stage text)``
ProgressCallback = Callable[[float, str], None]


class CancelToken:
    """A thread-safe flag that a long operation polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class Progress:
    """Maps a step's local 0→1 progress onto ``[start, end]`` of the overall bar."""

    callback: ProgressCallback | None = None
    token: CancelToken | None = None
    start: float = 0.0
    end: float = 1.0
    prefix: str = ""
    _last: float = field(default=-1.0, repr=False)

    def update(self, fraction: float, stage: str = "") -> None:
        """Report local progress ``fraction`` (clipped to [0, 1]) and check for cancellation."""
        self.check()
        if self.callback is not None:
            fraction = min(1.0, max(0.0, float(fraction)))
            overall = self.start + (self.end - self.start) * fraction
            text = f"{self.prefix}: {stage}" if self.prefix and stage else (stage or self.prefix)
            self.callback(overall, text)

    def check(self) -> None:
        """Raise :class:`CancelledError` if cancellation was requested."""
        if self.token is not None and self.token.cancelled:
            raise CancelledError("cancelled by the user")

    def sub(self, start: float, end: float, prefix: str = "") -> "Progress":
        """A child progress covering local ``[start, end]`` of this one."""
        span = self.end - self.start
        return Progress(self.callback, self.token, self.start + span * start, self.start + span * end,
                        prefix or self.prefix)


@contextlib.contextmanager
def cancel_on_sigterm(token: CancelToken) -> Iterator[CancelToken]:
    """While active, SIGTERM (what a GUI's Cancel sends a child process) sets ``token`` instead of
    killing the process, so the operation stops at its next check and cleans up after itself."""
    previous = signal.signal(signal.SIGTERM, lambda *_: token.cancel())
    try:
        yield token
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """While active, SIGTERM raises KeyboardInterrupt, so a step that cannot check a cancel token (an
    import) still unwinds its ``with`` blocks (staging and temporary folders removed; exit status 130)."""

    def interrupt(*_) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_progress_line(fraction: float, stage: str) -> None:
    """Print one ``progress FRACTION STAGE`` line on stdout (flushed): the protocol of ``--progress-lines``,
    which the Slicer module's background-process runner parses."""
    print(f"progress {fraction:.4f} {stage}", flush=True)
