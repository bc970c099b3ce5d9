"""SIGTERM, what a GUI's Cancel sends a child process, as the command line handles it."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from toothseg.core.progress import CancelToken, cancel_on_sigterm, interrupt_on_sigterm

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def test_sigterm_interrupts_an_uncancellable_step_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    unwound = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_on_sigterm():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000):  # the handler runs between bytecodes
                    pass
            finally:
                unwound.append(True)  # a ``with`` block's clean-up runs
    assert unwound == [True]
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_sets_the_cancel_token_of_a_cancellable_step():
    with cancel_on_sigterm(CancelToken()) as token:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):
            pass
        assert token.cancelled
