"""The log writer's child process: it makes the access lines and writes every line.

A serving process has one core's worth of interpreter (the GIL): making an access line's
text on its event loop was about a sixth of a manifest GET's CPU in the production
configuration, and on a thread of the same process it costs the same lock
(docs/performance.md#per-request-overhead). With this child, the loop queues the line's
captured values (:data:`shared.access_text.Captured`, plain values), the log writer thread
hands each batch of queued items over a pipe (one ``marshal`` frame and one write per
batch), and this process makes the lines (:func:`shared.access_text.access_line`, the very
code the loop ran) and writes them to the log output it was given, in the order they were
queued. Lines the parent made itself (other records, lines it made when a value could not
be marshalled) travel as text in the same frames, so the order of all lines is kept.

The child is started by :func:`shared.log_queue.queued_logging`, after a worker's fork, one
per serving process, and runs this file as a program (``python -I -S``, standard library
and :mod:`shared.log_format` only: ``registry/storage/driver/child_program.py`` says why).
It ends when the pipe closes: after the parent's last batch on a clean shutdown (the parent
waits for it, so no line is lost), or when the parent dies, whichever way. The kernel's
parent-death signal (:mod:`shared.parent_death`, SIGUSR1 here, not SIGKILL) covers a pipe
left open elsewhere: on it the child reads what the pipe holds without waiting, writes it
and ends, so the lines handed over before a parent was killed outright are not lost. It
ignores SIGINT and SIGTERM: a signal to the whole process group must not end it before the
parent has handed over its last lines.

Frames: a 4-byte big-endian length, then the payload. The first payload is a ``pickle`` of
the output's settings (:data:`Settings`, which may hold any value ``log.fields`` allows);
each next one is a ``marshal`` of a list whose items are lines (``str``) or access lines to
make (``(logger name, time made, captured values)``).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import pickle
import signal
import sys
from collections.abc import Callable
from typing import IO, Any

# This very file, run as the child's program.
_PROGRAM = os.path.abspath(__file__)
_LENGTH = 4


# How the child writes: the formatter's name and static fields (as
# shared.log_format.make_formatter takes them), the output's encoding, error handling and
# line terminator. A plain tuple: a class would be pickled by its module's name, which
# the child (running this file as __main__) would import a second time.
Settings = tuple[str, dict[str, Any], str, str, str]


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(_LENGTH, "big") + payload


class LogChild:
    """The parent's end: starts the child writing to ``output`` (a file descriptor, left
    open) and hands it batches."""

    def __init__(self, settings: Settings, output: int) -> None:
        import subprocess  # here: the child, which runs this file, has no use for it

        from shared import cpu_affinity  # nor for this, and could not import it

        # -I -S: the lean start of the collection's child programs (no site, so none of
        # the virtualenv's .pth files; registry/storage/driver/child_program.py).
        with cpu_affinity.children_unbound():  # it writes beside the worker, not after
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", _PROGRAM, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=output,
            )
        stdin = self._process.stdin
        assert stdin is not None
        self._pipe: IO[bytes] = stdin
        self.send_raw(pickle.dumps(settings))

    def send_raw(self, payload: bytes) -> None:
        """Write one frame; raises ``OSError`` (``BrokenPipeError``) if the child is gone."""
        self._pipe.write(_frame(payload))
        self._pipe.flush()

    def send(self, items: list[Any]) -> None:
        """Hand over one batch of lines and access lines to make; raises ``ValueError`` if an
        item holds a value ``marshal`` cannot write (then nothing was sent), ``OSError`` if
        the child is gone."""
        self.send_raw(marshal.dumps(items))

    def close(self) -> None:
        """Close the pipe and wait until the child has written every line handed over."""
        with contextlib.suppress(OSError):  # the child is gone: its lines with it
            self._pipe.close()
        self._process.wait()


def _read(stream: IO[bytes], size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _serve(stream: IO[bytes], output: int) -> None:
    from shared.access_text import access_line
    from shared.log_format import make_formatter

    header = _read(stream, _LENGTH)
    payload = header and _read(stream, int.from_bytes(header, "big"))
    if not payload:
        return
    # The parent's own frames, over a pipe only it holds (noqa: untrusted data never).
    settings: Settings = pickle.loads(payload)  # noqa: S301
    name, static_fields, encoding, errors, terminator = settings
    formatter = make_formatter(name, static_fields)
    while True:
        header = _read(stream, _LENGTH)
        payload = header and _read(stream, int.from_bytes(header, "big"))
        if not payload:
            return
        items = marshal.loads(payload)  # noqa: S302 (the parent's, as above)
        lines = [
            item if type(item) is str else _line(access_line, formatter, item) for item in items
        ]
        _write_all(output, (terminator.join(lines) + terminator).encode(encoding, errors))


def _line(make: Callable[..., str], formatter: Any, item: Any) -> str:
    """An access line made here. A value the formatter refuses costs that line only, as a
    record does in the parent (where logging's ``handleError`` reports it), not the child
    and every line after it."""
    try:
        return make(formatter, *item)
    except Exception as error:
        return f"--- Logging error: an access line could not be made: {type(error).__name__}"


def _drain_and_end(signum: int, frame: object) -> None:
    """The parent died (the kernel's parent-death signal): what it handed over is all in
    the pipe, so read it without waiting and end at its end, rather than be killed with
    those lines, which are usually the last ones before the death."""
    os.set_blocking(sys.stdin.fileno(), False)


if __name__ == "__main__":  # LogChild's program: PARENT_PID; frames on stdin
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.path.append(_PROGRAM.rsplit(os.sep, 2)[0])  # the directory holding shared/
    from shared.parent_death import die_with_parent

    signal.signal(signal.SIGUSR1, _drain_and_end)
    die_with_parent(int(sys.argv[1]), signal.SIGUSR1)
    _serve(sys.stdin.buffer, sys.stdout.fileno())
