"""A child process that dies with its parent (the kernel's parent-death signal).

Standard library only, and nothing heavier than ``ctypes``: the offline collection's
child programs (``python -I -S``, see ``registry/storage/driver/child_program.py``)
import it before they do anything else, and each millisecond of their start-up is spent
once per child on every collection.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies, or exit at once if it
    died already (between the fork or spawn and this call, when the request would come
    too late). With another ``signum`` (one the caller handles, to finish what it holds
    before it ends), that signal is sent instead, and sent at once if the parent is gone.

    The kernel rather than a thread watching the parent: it acts even while the process
    holds the GIL in a long loop, and needs nothing running in it. The signal follows the
    death of the parent's *thread* that created this process: callers create children from
    a thread that lives as long as the parent (its main or event-loop thread).
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # orphaned already: adopted by init or a subreaper
        if signum != signal.SIGKILL:
            os.kill(os.getpid(), signum)
            return
        os._exit(1)
