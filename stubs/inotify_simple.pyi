# The part of inotify_simple (2.x) that tokenauth uses; the package ships no types.
from enum import IntEnum
from typing import NamedTuple

class Event(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: str

class flags(IntEnum):
    ACCESS = 1
    MODIFY = 2
    ATTRIB = 4
    CLOSE_WRITE = 8
    CLOSE_NOWRITE = 16
    OPEN = 32
    MOVED_FROM = 64
    MOVED_TO = 128
    CREATE = 256
    DELETE = 512
    DELETE_SELF = 1024
    MOVE_SELF = 2048
    UNMOUNT = 8192
    Q_OVERFLOW = 16384
    IGNORED = 32768
    ONLYDIR = 16777216
    DONT_FOLLOW = 33554432
    EXCL_UNLINK = 67108864
    MASK_ADD = 536870912
    ISDIR = 1073741824
    ONESHOT = 2147483648

class INotify:
    def __init__(
        self, inheritable: bool = False, nonblocking: bool = False, closefd: bool = True
    ) -> None: ...
    def fileno(self) -> int: ...
    def add_watch(self, path: str | bytes, mask: int) -> int: ...
    def rm_watch(self, wd: int) -> None: ...
    def read(self, timeout: int | None = None, read_delay: int | None = None) -> list[Event]: ...
    def close(self) -> None: ...
