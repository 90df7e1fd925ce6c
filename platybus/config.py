"""``config.yaml`` → typed config, with every error naming file, line and key path.

Loading is YAML safe-loading plus three things: ``include:`` of other files
(relative to the including file; the including file wins), ``${NAME}`` and
``${NAME:-default}`` environment substitution for upper-case names (``$${``
keeps a literal ``${``), and a source map from each key path to the file and
line it came from. Sections are validated into typed structs before anything
starts.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import yaml

from platybus.bus import BusConfig
from platybus.errors import ConfigError

T = TypeVar("T")

KeyPath = tuple[str | int, ...]

SECTIONS = (
    "include", "node", "backends", "plugins", "discovery", "hooks", "procedures", "cron",
    "scripts", "handlers", "notifiers", "traces", "automation", "journal",
)

_ENV = re.compile(r"\$(\$?)\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def format_path(path: KeyPath) -> str:
    """Render a key path as ``plugins.shell.timeout`` / ``hooks[2].if``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass
class SourceMap:
    """Where each key path of the merged config came from."""

    root: str
    marks: dict[KeyPath, tuple[str, int]] = field(default_factory=dict)

    def locate(self, path: KeyPath) -> tuple[str, int | None]:
        """Return the file and line of the deepest known prefix of ``path``."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark is not None:
                return mark
        return self.root, None

    def error(self, path: KeyPath, message: str) -> ConfigError:
        """Build a :class:`ConfigError` for a key path."""
        file, line = self.locate(path)
        return ConfigError(message, file=file, line=line, key=format_path(path) or None)


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``node`` section."""

    id: str = ""
    data_dir: str = "./data"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    extensions_path: list[str] = msgspec.field(default_factory=list)
    max_message_size: int = 1 << 20
    stop_timeout: float = 5.0
    bus: BusConfig = msgspec.field(default_factory=BusConfig)


@dataclass(frozen=True)
class ExtensionConfig:
    """One extension entry (plugin, backend, notifier, handler): name, class and options."""

    name: str
    path: KeyPath
    class_spec: str | None
    enabled: bool
    options: dict[str, Any]
    # The keys that the kind reads itself (a notifier's ``if``, a handler's ``timeout``).
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def class_path(self) -> KeyPath:
        """The key path that an error about the class points at."""
        return (*self.path, "class") if self.class_spec is not None else self.path


@dataclass
class Config:
    """A whole validated node config."""

    file: str
    node: NodeConfig
    backends: dict[str, ExtensionConfig]
    plugins: dict[str, ExtensionConfig]
    raw: dict[str, Any]
    source: SourceMap

    def section(self, name: str) -> Any:
        """Return a raw section (``hooks``, ``cron``, ...) or ``None``."""
        return self.raw.get(name)

    def convert(self, value: Any, type_: type[T], path: KeyPath, *,
                also_known: tuple[str, ...] = ()) -> T:
        """Validate ``value`` into ``type_``; errors name the file, line and key.

        ``also_known`` are keys valid beside ``value``'s own, offered for a typo.
        """
        return convert(value, type_, path, self.source, also_known=also_known)

    @property
    def data_dir(self) -> Path:
        """The node's data directory."""
        return Path(self.node.data_dir)


def convert(value: Any, type_: type[T], path: KeyPath, source: SourceMap, *,
            also_known: tuple[str, ...] = ()) -> T:
    """Validate plain config data into a typed struct, mapping errors to config locations."""
    try:
        result: T = msgspec.convert(value, type_, strict=False)
        return result
    except msgspec.ValidationError as error:
        raise _explain(error, value, type_, path, source, also_known) from None


def _explain(
    error: msgspec.ValidationError, value: Any, type_: Any, path: KeyPath, source: SourceMap,
    also_known: tuple[str, ...] = (),
) -> ConfigError:
    text = str(error)
    reason, _, where = text.partition(" - at `$")
    sub, located = _locate(value, type_, where.rstrip("`"))
    full = (*path, *sub)
    unknown = re.match(r"Object contains unknown field `([^`]+)`", reason)
    if unknown:
        key = unknown.group(1)
        known = _fields_of(located) + ([] if sub else list(also_known))
        hint = difflib.get_close_matches(key, known, n=1)
        tail = f"; did you mean {hint[0]!r}?" if hint else ""
        allowed = f" (known keys: {', '.join(known)})" if known and not hint else ""
        return source.error((*full, key), f"unknown key{tail}{allowed}")
    missing = re.match(r"Object missing required field `([^`]+)`", reason)
    if missing:
        return source.error(full, f"missing required key {missing.group(1)!r}")
    expected = re.match(r"Expected `([^`]+)`, got `([^`]+)`", reason)
    if expected:
        return source.error(full, f"expected {_kind(expected.group(1))}, got "
                                  f"{_kind(expected.group(2))}")
    return source.error(full, reason[0].lower() + reason[1:])


def _locate(value: Any, type_: Any, where: str) -> tuple[list[str | int], Any]:
    """Turn msgspec's ``.a[0].b`` into a key path and the type there.

    msgspec writes a mapping key as ``[...]``: the key is found again by
    converting each value of the mapping until one fails.
    """
    sub: list[str | int] = []
    for name, index in re.findall(r"\.([^.\[`]+)|\[(\d+|\.\.\.)\]", where):
        step: str | int
        if name:
            part: str | int = name
            step = name
            value = value.get(name) if isinstance(value, dict) else None
        elif index == "...":
            failing = _failing_key(value, _step_type(type_, "..."))
            if failing is None:
                break
            part, step = failing, "..."
            value = value[failing]
        else:
            part = step = int(index)
            value = value[step] if isinstance(value, list) and step < len(value) else None
        type_ = _step_type(type_, step)
        sub.append(part)
    return sub, type_


def _failing_key(value: Any, item_type: Any) -> str | None:
    if not isinstance(value, dict) or item_type is None:
        return None
    for key, item in value.items():
        try:
            msgspec.convert(item, item_type, strict=False)
        except msgspec.ValidationError:
            return str(key)
    return None


def _step_type(type_: Any, part: str | int) -> Any:
    """The type one step below ``type_``: a struct field, a list item or a mapping value."""
    for candidate in typing.get_args(type_) if _is_union(type_) else (type_,):
        if isinstance(part, str) and part != "..." and hasattr(candidate, "__struct_fields__"):
            for field_info in msgspec.structs.fields(candidate):
                if field_info.encode_name == part:
                    return field_info.type
        origin, args = typing.get_origin(candidate), typing.get_args(candidate)
        if part == "..." and origin is dict and len(args) == 2:
            return args[1]
        if isinstance(part, int) and origin in (list, tuple) and args:
            return args[0]
    return None


def _is_union(type_: Any) -> bool:
    return typing.get_origin(type_) in (typing.Union, types.UnionType)


def _kind(name: str) -> str:
    words = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "array": "a list", "object": "a mapping", "null": "nothing"}
    if "|" in name:
        return " or ".join(_kind(p.strip()) for p in name.split("|"))
    return words.get(name, name)


def _fields_of(type_: Any) -> list[str]:
    for candidate in typing.get_args(type_) if _is_union(type_) else (type_,):
        if hasattr(candidate, "__struct_fields__"):
            return list(candidate.__struct_fields__)
    return []


# -- YAML with positions ---------------------------------------------------


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate a config file; raise :class:`ConfigError` if anything is off."""
    file = Path(path)
    environ = os.environ if env is None else env
    source = SourceMap(root=str(file))
    raw = _load_file(file, environ, source, ())
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping of sections", file=str(file), line=1)
    for key in raw:
        if key not in SECTIONS:
            hint = difflib.get_close_matches(str(key), SECTIONS, n=1)
            tail = f"; did you mean {hint[0]!r}?" if hint else ""
            raise source.error((str(key),), f"unknown section{tail} "
                                            f"(known: {', '.join(SECTIONS[1:])})")
    node = convert(raw.get("node") or {}, NodeConfig, ("node",), source)
    if not node.id:
        node = msgspec.structs.replace(node, id=socket.gethostname())
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", node.id):
        raise source.error(("node", "id"), "must be 1-63 letters, digits, '.', '_' or '-'")
    return Config(
        file=str(file),
        node=node,
        backends=_extensions(raw, "backends", source),
        plugins=_extensions(raw, "plugins", source),
        raw=raw,
        source=source,
    )


def _extensions(raw: dict[str, Any], section: str, source: SourceMap) -> dict[str, ExtensionConfig]:
    return extension_section(raw.get(section), section, source)


# The keys every extension entry may have, whatever its kind.
COMMON_KEYS = ("class", "enabled")

# Keys of earlier versions, refused with the spelling that replaced them: no silent aliases.
OLD_KEYS = {
    "type": "'type' is now 'class': write class: {value}",
    "entry_point": "'entry_point' is now 'class': write class: {value}",
    "options": "options sit in the entry itself, beside 'class': write {keys} one level up, "
               "without 'options:'",
    "configuration": "options sit in the entry itself, beside 'class': write {keys} one level "
                     "up, without 'configuration:'",
}


def extension_section(
    entries: Any, section: str, source: SourceMap, *,
    settings: tuple[str, ...] = (), refuse_old: bool = False,
) -> dict[str, ExtensionConfig]:
    """Split each entry of an extension section into its class, its settings and its options.

    ``class`` and ``enabled`` are common to every kind; ``settings`` names the keys
    the kind itself reads (a notifier's ``if``, a handler's ``timeout``); every other
    key is the extension's own option. ``refuse_old`` turns the keys of earlier
    versions (:data:`OLD_KEYS`) into errors naming the new spelling.
    """
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise source.error((section,), "expected a mapping of names to options")
    result = {}
    for name, given in entries.items():
        path: KeyPath = (section, str(name))
        if given is not None and not isinstance(given, dict):
            raise source.error(path, "expected a mapping of options (or nothing)")
        options = dict(given or {})
        if refuse_old:
            for key in OLD_KEYS:
                if key in options:
                    raise source.error((*path, key), _old_key_message(key, options[key]))
        spec = options.pop("class", None)
        if spec is not None and (not isinstance(spec, str) or not spec):
            raise source.error((*path, "class"), "expected an installed name or 'module:Class'")
        enabled = options.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise source.error((*path, "enabled"), "expected true or false")
        own = {key: options.pop(key) for key in settings if key in options}
        result[str(name)] = ExtensionConfig(str(name), path, spec, enabled, options, own)
    return result


def _old_key_message(key: str, value: Any) -> str:
    if isinstance(value, dict) and value:
        keys = ", ".join(f"{k}: ..." for k in value)
    else:
        keys = "the options"
    shown = value if isinstance(value, str) and value else "<name or module:Class>"
    return OLD_KEYS[key].format(value=shown, keys=keys)


def _load_file(
    file: Path, env: Mapping[str, str], source: SourceMap, stack: tuple[Path, ...]
) -> Any:
    resolved = file.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError(f"include cycle: {chain}", file=str(file))
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config: {error.strerror}", file=str(file)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"invalid YAML: {problem}", file=str(file),
                          line=mark.line + 1 if mark else None) from None
    if node is None:
        return {}
    builder = _Builder(str(file), env, source)
    data = builder.build(node, ())
    if isinstance(data, dict) and "include" in data:
        includes = data.pop("include")
        names = [includes] if isinstance(includes, str) else includes
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise source.error(("include",), "expected a file name or a list of file names")
        merged: dict[str, Any] = {}
        for name in names:
            included = _load_file(file.parent / name, env, source, (*stack, resolved))
            if not isinstance(included, dict):
                raise source.error(("include",), f"{name}: the top level must be a mapping")
            merged = _merge(merged, included)
        # Marks of the including file win: rebuild them over the included ones.
        _Builder(str(file), env, source).build(node, ())
        data = _merge(merged, data)
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class _Builder:
    """Turns a composed YAML node tree into Python data, recording each key's line."""

    def __init__(self, file: str, env: Mapping[str, str], source: SourceMap) -> None:
        self.file = file
        self.env = env
        self.source = source
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.source.marks[path] = (self.file, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool):
                    raise ConfigError("keys must be plain scalars", file=self.file,
                                      line=key_node.start_mark.line + 1,
                                      key=format_path(path) or None)
                key = str(key) if not isinstance(key, str) else key
                if key in result:
                    raise ConfigError("duplicate key", file=self.file,
                                      line=key_node.start_mark.line + 1,
                                      key=format_path((*path, key)))
                self.source.marks[(*path, key)] = (self.file, key_node.start_mark.line + 1)
                result[key] = self.build(value_node, (*path, key))
                self.source.marks[(*path, key)] = (self.file, key_node.start_mark.line + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self.constructor.construct_object(node, deep=True)
        if isinstance(value, str) and "${" in value:
            value = self._substitute(value, path, node)
        return value

    def _substitute(self, text: str, path: KeyPath, node: yaml.Node) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(1):
                return match.group(0)[1:]
            name, default = match.group(2), match.group(3)
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    raise ConfigError(
                        f"environment variable {name} is not set "
                        f"(write ${{{name}:-default}} to give a default)",
                        file=self.file, line=node.start_mark.line + 1,
                        key=format_path(path) or None,
                    )
                return default
            return value

        return _ENV.sub(replace, text)
