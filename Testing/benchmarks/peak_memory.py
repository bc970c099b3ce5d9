"""Peak resident memory of this process, honest in a child process.

``getrusage(RUSAGE_SELF).ru_maxrss`` is wrong in a process started by ``subprocess``: Linux carries the
parent's resident size at the fork over the ``exec``, so a child of a parent holding 3 GiB reports at
least 3 GiB whatever it does itself (measured 2026-12-05: a child of a 2 GiB parent reported 2.03 GiB,
its own ``VmHWM`` 13 MiB). ``VmHWM`` in ``/proc/self/status`` is the high-water mark of this process's
own address space, which starts empty at ``exec``.
"""

from __future__ import annotations

import resource


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB (``VmHWM`` on Linux, else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux, bytes on macOS
