"""Watching a running server's file-system syscalls with strace, to test durability.

``SyscallTrace`` attaches ``strace -f -y`` to a process (every thread, and the threads it
starts later) and, once the traced process has exited, parses the log into ``Call``s in
the order the calls completed. ``-y`` prints each descriptor with its path, so a test can
say "this directory was fsync'd after that rename and before the 201 was sent".
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import require_tool

TRACED = (
    "fsync,fdatasync,sync_file_range,rename,renameat,renameat2,mkdir,mkdirat,"
    "unlinkat,rmdir,sendto,sendmsg,write,writev"
)
_LINE = re.compile(r"^(?P<pid>\d+) +(?P<rest>.*)$")
_UNFINISHED = " <unfinished ...>"
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\) += (?P<result>-?\d+)")
_FD_PATH = re.compile(r"^\d+<(?P<path>[^>]*)>")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Call:
    """One completed syscall: its name, the path of its first descriptor (``-y``), the
    string arguments (paths of a rename, the start of a sent buffer), its result and the
    thread that made it (its id; the process id for the main thread)."""

    name: str
    fd_path: str | None
    strings: tuple[str, ...]
    result: int
    thread: int = 0


class SyscallTrace:
    def __init__(self, pid: int, log: Path, inject: str | None = None) -> None:
        """``inject``: an strace fault-injection spec, e.g. ``rename:delay_enter=3s``."""
        self.pid, self.log = pid, log
        strace = require_tool("strace")
        options = ["-f", "-y", "-s", "48", "-e", f"trace={TRACED}", "-o", str(log)]
        if inject is not None:
            options += ["-e", f"inject={inject}"]
        self.process = subprocess.Popen(
            [strace, *options, "-p", str(pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_attached(timeout=20.0)

    def _wait_attached(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tracers = []
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                    status = (task / "status").read_text().splitlines()
                    tracers += [line for line in status if line.startswith("TracerPid:")]
            if tracers and all(line.split()[1] != "0" for line in tracers):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"strace exited with {self.process.returncode}")
            time.sleep(0.05)
        self.close()
        raise AssertionError("strace did not attach")

    def close(self) -> None:
        """Stop tracing (when the traced process is still running, detach from it)."""
        if self.process.poll() is None:
            self.process.terminate()  # strace detaches and leaves the process running
        self.process.wait(20)

    def calls(self) -> list[Call]:
        """The calls in the order they completed; call after ``close``."""
        pending: dict[str, str] = {}
        calls: list[Call] = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = _LINE.match(line)
            if match is None:
                continue
            pid, rest = match["pid"], match["rest"]
            if rest.endswith(_UNFINISHED):
                pending[pid] = rest[: -len(_UNFINISHED)]
                continue
            resumed = _RESUMED.match(rest)
            if resumed is not None:
                rest = pending.pop(pid, resumed["name"] + "(") + resumed["tail"]
            call = _CALL.match(rest)
            if call is not None:
                fd_path = _FD_PATH.match(call["args"])
                calls.append(
                    Call(
                        call["name"],
                        fd_path["path"] if fd_path else None,
                        tuple(_STRING.findall(call["args"])),
                        int(call["result"]),
                        int(pid),
                    )
                )
        return calls
