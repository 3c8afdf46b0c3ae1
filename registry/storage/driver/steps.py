"""Steps a driver performs in order, in one go where its backend can: ``run_steps``.

A blob's commit is three writes one after the other (the verified upload moved into the
blob store, the repository's link written, the upload's directory deleted). On the
filesystem each was a thread job of its own, and every hand-over to a thread costs the
event loop a wake-up and, under a push load, dozens of exchanges of the interpreter lock
(issue 17): ``FilesystemDriver`` runs the whole list in one job. Each step keeps its own
method's guarantees (a ``Put`` is as durable as ``put_content``, a ``Move`` as
``move``), and they happen in the order given, so what a caller flushed before naming it
stays flushed before it is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registry.storage.driver.base import Content  # base imports these steps


@dataclass(frozen=True, slots=True)
class Move:
    """``move(source, destination, expected=expected)``."""

    source: str
    destination: str
    expected: Content | None = None


@dataclass(frozen=True, slots=True)
class Put:
    """``put_content(path, content)``, durable."""

    path: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """``delete(path)``, where nothing there is no error (it is what the step wants)."""

    path: str


@dataclass(frozen=True, slots=True)
class Touch:
    """Set the file's modified time to now (PathNotFound if it is not there): a blob's
    ``lastref`` refreshed before the ``Move`` that makes it visible, on backends whose
    files are their own (``local_path``); others have no such step."""

    path: str


Step = Move | Put | Delete | Touch
