"""Typed configuration: a YAML file plus ``PREFIX_A_B_C`` environment overrides.

A schema is a tree of frozen dataclasses. The YAML key of a field is its name (or
``setting(key=...)``); an environment variable ``PREFIX_A_B_C`` replaces the value at key
path ``a.b.c`` with its own value parsed as YAML, the way distribution/distribution's
configuration parser does it: variables are applied in sorted name order (so
``REGISTRY_STORAGE`` lands before ``REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY``), each path
segment is matched against the upper-cased key, keys of free maps that do not exist yet
are created in lower case, and a number segment indexes a list.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``datetime.timedelta``
(Go duration strings such as ``1h30m``; a bare integer is nanoseconds, as in Go),
``X | None``, ``list[X]``, ``dict[str, X]``, nested dataclasses, and ``Any`` (any YAML).
A dataclass deriving from ``OneOf`` holds at most one *variant* field (Distribution's
``storage`` drivers, ``auth`` methods) and may be given as a bare variant name.

Errors name the key path, the file line or the environment variable, never the value:
a value may be a secret.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from shared.durations import parse_duration

log = logging.getLogger(__name__)

T = TypeVar("T")
KeyPath = tuple[str | int, ...]

_NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MISSING: Any = dataclasses.MISSING


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and where it came from."""


class InvalidSetting(ValueError):
    """Raised by a schema's ``__post_init__`` to reject the value of one of its keys."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def meta(
    *,
    key: str | None = None,
    env: str | None = None,
    check: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Field metadata for a schema: ``field(default=..., metadata=meta(...))``.

    ``key`` overrides the YAML key (default: the field name), ``env`` the environment
    segment (default: the upper-cased key); ``check`` validates the loaded value and may
    normalise it (raise ``ValueError`` with a message that does not quote the value).
    """
    return {"key": key, "env": env, "check": check}


def between(low: int, high: int) -> Callable[[int], int]:
    """A ``check`` for ``meta``: an integer from ``low`` to ``high``."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}")
        return value

    return check


VARIANT: Mapping[str, Any] = types.MappingProxyType({"variant": True})
"""Metadata of a ``OneOf`` variant: ``x: X | None = field(default=None, metadata=VARIANT)``."""


@dataclasses.dataclass(frozen=True)
class OneOf:
    """Base of a section holding at most one variant field (plus ordinary fields).

    ``DEFAULT_VARIANT`` (a field name) is filled with its defaults when no variant is
    given; ``VARIANT_KIND`` names the variants in error messages.
    """

    DEFAULT_VARIANT: ClassVar[str | None] = None
    VARIANT_KIND: ClassVar[str] = "variant"

    def __post_init__(self) -> None:
        chosen = [f for f in _fields(type(self)) if f.variant and getattr(self, f.name) is not None]
        if len(chosen) > 1:
            names = ", ".join(f.key for f in chosen)
            raise ValueError(f"more than one {self.VARIANT_KIND} given ({names}); give one")
        if not chosen and self.DEFAULT_VARIANT is not None:
            (default,) = [f for f in _fields(type(self)) if f.name == self.DEFAULT_VARIANT]
            # Frozen: the documented way to set a field during initialisation.
            object.__setattr__(self, default.name, _zero(default.type))

    @property
    def variant_name(self) -> str | None:
        """The YAML key of the chosen variant, or None."""
        for f in _fields(type(self)):
            if f.variant and getattr(self, f.name) is not None:
                return f.key
        return None

    @classmethod
    def variant_keys(cls) -> tuple[str, ...]:
        """The YAML keys of every variant this section accepts."""
        return tuple(f.key for f in _fields(cls) if f.variant)


# --- schema introspection ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    key: str
    env: str
    type: Any
    variant: bool
    check: Callable[[Any], Any] | None


_FIELDS: dict[type, tuple[_Field, ...]] = {}


def _fields(cls: type) -> tuple[_Field, ...]:
    """The schema fields of a dataclass, with their keys and resolved types (cached)."""
    if cls in _FIELDS:
        return _FIELDS[cls]
    hints = typing.get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key") or f.name
        result.append(
            _Field(
                name=f.name,
                key=key,
                env=f.metadata.get("env") or key.upper(),
                type=hints[f.name],
                variant=bool(f.metadata.get("variant")),
                check=f.metadata.get("check"),
            )
        )
    _FIELDS[cls] = tuple(result)
    return _FIELDS[cls]


def _unwrap(tp: Any) -> Any:
    """``X | None`` → ``X``; anything else unchanged."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union in a schema: {tp}")
        return args[0]
    return tp


def _is_section(tp: Any) -> typing.TypeGuard[type]:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _zero(tp: Any) -> Any:
    """The value a key takes when given as null (a variant: selected, with its defaults)."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp) or tp
    zeros: dict[Any, Callable[[], Any]] = {
        str: str,
        int: int,
        float: float,
        bool: bool,
        list: list,
        dict: dict,
        datetime.timedelta: datetime.timedelta,
    }
    if origin in zeros:
        return zeros[origin]()
    if _is_section(tp):
        return tp()
    return None


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG)


def _flat(node: MappingNode) -> MappingNode:
    """Resolve ``<<`` merge keys in place, as YAML loaders do."""
    SafeConstructor().flatten_mapping(node)
    return node


# --- environment overrides --------------------------------------------------------------


class _Overrides:
    """Applies ``PREFIX_*`` variables to the composed YAML tree, guided by the schema."""

    def __init__(self, root: MappingNode, schema: type) -> None:
        self.root = root
        self.schema = schema
        self.origins: list[tuple[KeyPath, str]] = []

    def apply(self, environ: Mapping[str, str], prefix: str) -> None:
        head = prefix.upper() + "_"
        for name in sorted(environ):
            if not name.startswith(head):
                continue
            value = _compose_env(name, environ[name])
            segments = name[len(head) :].split("_")
            try:
                target = self._set(self.root, self.schema, segments, value, ())
            except ConfigError as e:
                raise ConfigError(f"{e} (environment: {name})") from None
            if target is None:
                # Not fatal: other tools' variables share the prefix (podman's
                # REGISTRY_AUTH_FILE). The name only: a value may be a secret.
                log.warning("ignoring environment variable %s: it names no configuration key", name)
                continue
            # A later variable replacing a whole section supersedes earlier ones inside it.
            self.origins = [(p, n) for p, n in self.origins if p[: len(target)] != target]
            self.origins.append((target, name))

    def _set(
        self, container: Node, tp: Any, segments: list[str], value: Node, path: KeyPath
    ) -> KeyPath | None:
        seg, rest = segments[0], segments[1:]
        tp = _unwrap(tp)
        if isinstance(container, SequenceNode):
            return self._set_item(container, tp, seg, rest, value, path)
        assert isinstance(container, MappingNode)
        child_tp: Any
        if _is_section(tp):
            found = [f for f in _fields(tp) if f.env == seg]
            if not found:
                return None
            key, child_tp = found[0].key, found[0].type
        else:  # dict[str, X] or Any holding a mapping: free keys, matched case-insensitively.
            args = typing.get_args(tp)
            child_tp = args[1] if len(args) == 2 else Any
            existing = [k.value for k, _ in _flat(container).value if isinstance(k, ScalarNode)]
            key = next((k for k in existing if k.upper() == seg), seg.lower())
        if not rest:
            _put(container, key, value)
            return (*path, key)
        child = self._container(_get(container, key), child_tp, (*path, key))
        if child is None:
            return None
        _put(container, key, child)
        return self._set(child, child_tp, rest, value, (*path, key))

    def _set_item(
        self,
        container: SequenceNode,
        tp: Any,
        seg: str,
        rest: list[str],
        value: Node,
        path: KeyPath,
    ) -> KeyPath | None:
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = container.value
        if not (seg.isascii() and seg.isdigit()) or int(seg) > len(items):
            raise ConfigError(
                f"{_dotted(path)}: {seg!r} is not an index of this list (it has {len(items)} items)"
            )
        index = int(seg)
        if index == len(items):
            items.append(ScalarNode(_NULL_TAG, ""))
        if not rest:
            items[index] = value
            return (*path, index)
        child = self._container(items[index], item_tp, (*path, index))
        if child is None:
            return None
        items[index] = child
        return self._set(child, item_tp, rest, value, (*path, index))

    def _container(self, node: Node | None, tp: Any, path: KeyPath) -> Node | None:
        """The mapping or sequence node to descend into, created when absent or null;
        None when ``tp`` is a plain value (so the variable names no key)."""
        tp = _unwrap(tp)
        origin = typing.get_origin(tp) or tp
        if origin is list:
            if _null(node):
                return SequenceNode("tag:yaml.org,2002:seq", [])
            if isinstance(node, SequenceNode):
                return node
            raise ConfigError(f"{_dotted(path)}: expected a list")
        if not (_is_section(tp) or origin is dict or tp is Any):
            return None
        if _null(node):
            return MappingNode("tag:yaml.org,2002:map", [])
        if isinstance(node, MappingNode | SequenceNode) and (
            tp is Any or isinstance(node, MappingNode)
        ):
            return node
        if isinstance(tp, type) and issubclass(tp, OneOf) and isinstance(node, ScalarNode):
            # `REGISTRY_STORAGE=inmemory` then `REGISTRY_STORAGE_DELETE_ENABLED=true`.
            return MappingNode(
                "tag:yaml.org,2002:map",
                [(ScalarNode(_STR_TAG, node.value), ScalarNode(_NULL_TAG, ""))],
            )
        if tp is Any:
            return None
        raise ConfigError(f"{_dotted(path)}: expected a mapping")


def _get(mapping: MappingNode, key: str) -> Node | None:
    for k, v in mapping.value:
        if isinstance(k, ScalarNode) and k.value == key:
            node: Node = v
            return node
    return None


def _put(mapping: MappingNode, key: str, value: Node) -> None:
    """Set ``key`` to ``value``, in place when present (dropping any duplicates)."""
    pairs: list[tuple[Node, Node]] = []
    placed = False
    for k, v in mapping.value:
        if not (isinstance(k, ScalarNode) and k.value == key):
            pairs.append((k, v))
        elif not placed:
            pairs.append((k, value))
            placed = True
    if not placed:
        pairs.append((ScalarNode(_STR_TAG, key), value))
    mapping.value = pairs


def _compose_env(name: str, text: str) -> Node:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(
            f"environment variable {name}: the value is not valid YAML{where}"
        ) from None
    except yaml.YAMLError:
        raise ConfigError(f"environment variable {name}: the value is not valid YAML") from None
    if node is None:
        return ScalarNode(_NULL_TAG, "")
    _forget_marks(node, set())
    return node


def _forget_marks(node: Node, seen: set[int]) -> None:
    """Env values have no file position; dropping marks keeps them out of messages."""
    if id(node) in seen:
        return
    seen.add(id(node))
    node.start_mark = node.end_mark = None
    children: list[Node] = []
    if isinstance(node, SequenceNode):
        children = list(node.value)
    elif isinstance(node, MappingNode):
        children = [n for pair in node.value for n in pair]
    for child in children:
        _forget_marks(child, seen)


# --- conversion -------------------------------------------------------------------------


class _Converter:
    """Turns the composed (and overridden) YAML tree into the schema's dataclasses."""

    def __init__(self, origins: list[tuple[KeyPath, str]]) -> None:
        self.origins = origins

    def error(self, path: KeyPath, node: Node | None, message: str) -> ConfigError:
        """An error naming the key, its file line or the variables that set it."""
        text = f"{_dotted(path) or 'configuration'}: {message}"
        involved = [n for p, n in self.origins if path[: len(p)] == p or p[: len(path)] == path]
        mark = getattr(node, "start_mark", None)
        if mark is not None:
            text += f" ({mark.name}, line {mark.line + 1})"
        if involved:
            text += f" (environment: {', '.join(involved)})"
        return ConfigError(text)

    def value(self, node: Node, tp: Any, path: KeyPath) -> Any:
        if _null(node) and _is_section(_unwrap(tp)):
            # A selected variant given as null: its defaults, validated like a mapping.
            node = MappingNode("tag:yaml.org,2002:map", [], node.start_mark)
        elif _null(node):
            return _zero(tp)
        tp = _unwrap(tp)
        origin = typing.get_origin(tp) or tp
        if tp is Any:
            return self.anything(node, path)
        if _is_section(tp):
            return self.section(node, tp, path)
        if origin is list:
            if not isinstance(node, SequenceNode):
                raise self.error(path, node, "expected a list")
            (item_tp,) = typing.get_args(tp)
            return [self.value(item, item_tp, (*path, i)) for i, item in enumerate(node.value)]
        if origin is dict:
            return {
                key: self.value(v, typing.get_args(tp)[1], (*path, key))
                for key, k, v in self.pairs(node, path)
            }
        if not isinstance(node, ScalarNode):
            raise self.error(path, node, f"expected {_NAMES.get(tp, tp)}")
        return self.scalar(node, tp, path)

    def scalar(self, node: ScalarNode, tp: Any, path: KeyPath) -> Any:
        if tp is str:
            # Like Go's yaml: a scalar read into a string keeps its text (`version: 0.1`).
            return node.value
        expected = {bool: (_BOOL_TAG,), int: (_INT_TAG,), float: (_INT_TAG, _FLOAT_TAG)}
        if tp in expected and node.tag in expected[tp]:
            return tp(SafeConstructor().construct_object(node))
        if tp is datetime.timedelta:
            if node.tag == _INT_TAG:  # Go: a bare integer is a number of nanoseconds.
                return datetime.timedelta(
                    microseconds=SafeConstructor().construct_object(node) / 1000
                )
            if node.tag == _STR_TAG:
                try:
                    return parse_duration(node.value)
                except ValueError as e:
                    raise self.error(path, node, str(e)) from None
        raise self.error(path, node, f"expected {_NAMES.get(tp, tp)}")

    def anything(self, node: Node, path: KeyPath) -> Any:
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or "cannot be read"
            raise self.error(path, node, problem) from None

    def pairs(
        self, node: Node, path: KeyPath, *, merge: bool = False
    ) -> list[tuple[str, Node, Node]]:
        """The key/value pairs of a mapping. A repeated key is not an error, as in Go's YAML
        (Distribution's own documented sample repeats one): the later value wins, or with
        ``merge`` two mappings combine, as Go decodes both into the same struct."""
        if not isinstance(node, MappingNode):
            raise self.error(path, node, "expected a mapping")
        pairs: dict[str, tuple[Node, Node]] = {}
        for k, v in _flat(node).value:
            if not isinstance(k, ScalarNode):
                raise self.error(path, k, "a key must be a plain value")
            if k.value in pairs:
                where = (
                    f" ({k.start_mark.name}, line {k.start_mark.line + 1})" if k.start_mark else ""
                )
                log.warning(
                    "configuration key %s is given twice%s", _dotted((*path, k.value)), where
                )
                earlier = pairs[k.value][1]
                if merge and isinstance(earlier, MappingNode) and isinstance(v, MappingNode):
                    v = MappingNode(v.tag, earlier.value + v.value, earlier.start_mark)
            pairs[k.value] = (k, v)
        return [(key, k, v) for key, (k, v) in pairs.items()]

    def section(self, node: Node, cls: type[T], path: KeyPath) -> T:
        fields = {f.key: f for f in _fields(cls)}
        kwargs: dict[str, Any] = {}
        if issubclass(cls, OneOf) and isinstance(node, ScalarNode):
            # `storage: inmemory` / `REGISTRY_AUTH=htpasswd`: the value names the variant.
            f = fields.get(node.value)
            if f is None or not f.variant or node.tag != _STR_TAG:
                names = ", ".join(cls.variant_keys())
                raise self.error(
                    path, node, f"expected a mapping or a {cls.VARIANT_KIND} ({names})"
                )
            node = MappingNode("tag:yaml.org,2002:map", [(node, ScalarNode(_NULL_TAG, ""))])
        for key, key_node, value_node in self.pairs(node, path, merge=True):
            f = fields.get(key)
            if f is None:
                known = ", ".join(fields)
                raise self.error((*path, key), key_node, f"unknown key (known keys here: {known})")
            if _null(value_node) and not f.variant:
                continue  # null: keep the default
            value = self.value(value_node, f.type, (*path, key))
            if f.check is not None:
                try:
                    value = f.check(value)
                except ValueError as e:
                    raise self.error((*path, key), value_node, str(e)) from None
            kwargs[f.name] = value
        try:
            return cls(**kwargs)
        except InvalidSetting as e:
            raise self.error(
                (*path, e.key),
                (_get(node, e.key) if isinstance(node, MappingNode) else None) or node,
                e.message,
            ) from None
        except ValueError as e:
            raise self.error(path, node, str(e)) from None


_NAMES: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    datetime.timedelta: "a duration such as 10s, 1h30m or 168h",
}


# --- entry points -----------------------------------------------------------------------


def load_config(
    schema: type[T],
    path: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    prefix: str,
) -> T:
    """Read ``path`` (None: an empty document, every default), apply the ``prefix``
    environment overrides from ``environ`` and return the schema's dataclass."""
    root: Node | None = None
    if path is not None:
        try:
            with open(path, encoding="utf-8") as stream:
                root = yaml.compose(stream, Loader=yaml.SafeLoader)
        except OSError as e:
            raise ConfigError(
                f"cannot read configuration file {os.fspath(path)}: {e.strerror}"
            ) from None
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{os.fspath(path)}{where}: not valid YAML: {e.problem}") from None
        except yaml.YAMLError:
            raise ConfigError(f"{os.fspath(path)}: not valid YAML") from None
    if _null(root):
        root = MappingNode("tag:yaml.org,2002:map", [])
    if not isinstance(root, MappingNode):
        raise ConfigError(f"{os.fspath(path or '')}: the configuration must be a YAML mapping")
    overrides = _Overrides(root, schema)
    overrides.apply(environ, prefix)
    return _Converter(overrides.origins).section(root, schema, ())


def changed_settings(config: object) -> list[str]:
    """The key paths whose value differs from the schema's default, deepest sections first
    reported as a whole when one side has none (a variant, a free map)."""
    return list(_changes(config, type(config)(), ()))


def _changes(value: object, default: object, path: KeyPath) -> Iterator[str]:
    for f in _fields(type(value)):
        mine, theirs = getattr(value, f.name), getattr(default, f.name)
        if mine == theirs:
            continue
        if dataclasses.is_dataclass(mine) and type(mine) is type(theirs):
            yield from _changes(mine, theirs, (*path, f.key))
        else:
            yield _dotted((*path, f.key))
