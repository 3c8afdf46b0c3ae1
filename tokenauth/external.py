"""Running an operator's program for a decision (``extauth``, ``extauthz``).

The request goes to the program's standard input, never its arguments (which any local
user can read in ``/proc``); its exit code and a bounded standard output are the answer.
At most ``concurrency`` copies run at once; the wait for one and the run together must
end within ``timeout``, after which the program (its whole process group) is killed and
the request answered 503. Standard error is logged only when it does not contain what
was written to the program's input, so a program echoing a password cannot leak it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass

from shared import cpu_affinity
from tokenauth.config import ExternalConfig

log = logging.getLogger(__name__)

MAX_OUTPUT = 64 * 1024  # a verdict and a few labels; more is a broken program
MAX_STDERR_LOGGED = 1024


class ProgramFailed(Exception):
    """The program could not run, was killed, timed out or wrote too much."""


@dataclass(frozen=True)
class Answer:
    status: int
    output: bytes


class ExternalProgram:
    """One configured program and its concurrency slots."""

    def __init__(self, config: ExternalConfig, key: str) -> None:
        self.config = config
        self.key = key  # extauth or extauthz, for messages
        self.timeout = config.timeout.total_seconds()
        self._slots = asyncio.Semaphore(config.concurrency)

    async def ask(self, request: bytes) -> Answer:
        """Run the program with ``request`` on its input; raises :class:`ProgramFailed`."""
        try:
            async with asyncio.timeout(self.timeout), self._slots:
                return await self._run(request)
        except TimeoutError:
            raise ProgramFailed(f"{self.key}: the program did not answer in time") from None

    async def _run(self, request: bytes) -> Answer:
        try:
            process = await asyncio.create_subprocess_exec(
                self.config.command,
                *self.config.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a timeout kills it all
            )
        except OSError as error:
            log.error("%s: cannot start %s: %s", self.key, self.config.command, error.strerror)
            raise ProgramFailed(f"{self.key}: the program cannot be started") from None
        cpu_affinity.release(process.pid)
        try:
            output, errors, _ = await asyncio.gather(
                _read(process.stdout), _read(process.stderr), _write(process.stdin, request)
            )
            status = await process.wait()
        except BaseException:
            _kill(process)
            await process.wait()
            raise
        if errors and request.strip() and request.strip() not in errors:
            text = errors[:MAX_STDERR_LOGGED].decode(errors="replace")
            log.warning("%s: the program said on stderr: %s", self.key, text)
        if len(output) > MAX_OUTPUT:
            raise ProgramFailed(f"{self.key}: the program wrote too much")
        return Answer(status, output)


async def _read(stream: asyncio.StreamReader | None) -> bytes:
    if stream is None:
        return b""
    data = bytearray()
    while len(data) <= MAX_OUTPUT:
        chunk = await stream.read(16 * 1024)
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def _write(stream: asyncio.StreamWriter | None, data: bytes) -> bytes:
    if stream is None:
        return b""
    try:
        stream.write(data)
        await stream.drain()
        stream.close()
        await stream.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program answered without reading everything: its exit code still counts
    return b""


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
