"""How the filesystem driver starts its child programs for a collection: the walk for
killed writers' temporaries (``temporaries``) and the deleting children
(``filesystem_deleters``), each a file of this package run as a program.

``-I -S``: no ``PYTHON*`` variables, no user site, and no ``site`` at all. The children
import only the standard library and ``shared.parent_death``, found in the directory
three levels above their own file (the one holding ``registry/``), where ``site`` would
process the virtualenv's ``.pth`` files, the editable install's finder among them, which
cost each child about 20 ms of CPU before its first line: nine children on every
collection (docs/performance.md, "Lean child programs").
"""

from __future__ import annotations

import sys

FLAGS = ("-I", "-S")


def command(program: str, *arguments: str) -> list[str]:
    """The command line that runs ``program`` (an absolute path) as a child."""
    return [sys.executable, *FLAGS, program, *arguments]
