"""The JSON Schema of a whole config, built from the typed structs that validate it.

Editors that speak the yaml-language-server protocol complete and check
``config.yaml`` with it (``platybus schema -o platybus.schema.json``, then a
``# yaml-language-server: $schema=platybus.schema.json`` line at the top).
Every installed plugin, backend and notifier contributes its own options, so the
schema matches this installation. The node's own checks stay the authority:
the schema knows shapes and names, not cross-references such as an action name.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from platybus.automation.cron import CronOptions
from platybus.automation.hooks import HookOptions
from platybus.automation.isolated import AutomationOptions
from platybus.automation.procedures import ProcedureOptions
from platybus.automation.trace import TracesConfig
from platybus.config import COMMON_KEYS, SECTIONS, NodeConfig
from platybus.discovery import DiscoveryConfig
from platybus.extensions import BACKEND_GROUP, PLUGIN_GROUP, Backend, Plugin
from platybus.isolation.handlers import HandlerSettings
from platybus.journal import JournalConfig
from platybus.loader import available, load_class
from platybus.notify.manager import NOTIFIER_GROUP, Notifier, NotifierSettings

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_COMMON = {
    "class": {"type": "string", "minLength": 1,
              "description": "an installed name, 'module:Class' or 'python:package.module.Class'"},
    "enabled": {"type": "boolean"},
}
_NAMES_OR_LIST = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


def config_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of a config for this installation."""
    core: list[Any] = [NodeConfig, DiscoveryConfig, TracesConfig, AutomationOptions,
                       JournalConfig, HookOptions, ProcedureOptions, CronOptions,
                       NotifierSettings, HandlerSettings]
    kinds: dict[str, dict[str, type[msgspec.Struct]]] = {
        "plugins": {n: load_class(PLUGIN_GROUP, n, Plugin).Config
                    for n in sorted(available(PLUGIN_GROUP))},
        "backends": {n: load_class(BACKEND_GROUP, n, Backend).Config
                     for n in sorted(available(BACKEND_GROUP))},
        "notifiers": {n: load_class(NOTIFIER_GROUP, n, Notifier).Config
                      for n in sorted(available(NOTIFIER_GROUP))},
    }
    extension_types = [t for section in kinds.values() for t in section.values()]
    every = [*core, *extension_types]
    refs, defs = msgspec.json.schema_components(every, ref_template="#/$defs/{name}")
    # Two classes may share a name (every plugin's nested Config): msgspec qualifies them.
    def_name = {t: r["$ref"].rsplit("/", 1)[-1] for t, r in zip(every, refs, strict=True)}

    def ref(type_: Any) -> dict[str, Any]:
        return {"$ref": f"#/$defs/{def_name[type_]}"}

    def entry(options: type[msgspec.Struct] | None, settings: type[msgspec.Struct] | None,
              *, needs_class: bool) -> dict[str, Any]:
        """One extension entry: its options and the kind's settings beside class/enabled."""
        properties: dict[str, Any] = dict(_COMMON)
        closed = True
        for part in (options, settings):
            if part is None:
                continue
            body = defs.get(def_name[part], {})
            properties.update(copy.deepcopy(body.get("properties", {})))
            closed = closed and body.get("additionalProperties") is False
        schema: dict[str, Any] = {"type": ["object", "null"], "properties": properties}
        if options is None:
            closed = False  # a class the schema cannot know takes options of its own
        if closed:
            schema["additionalProperties"] = False
        if needs_class:
            schema["required"] = ["class"]
        return schema

    def section(name: str, settings: type[msgspec.Struct] | None) -> dict[str, Any]:
        known = kinds.get(name, {})
        return {
            "type": ["object", "null"],
            "properties": {n: entry(c, settings, needs_class=False) for n, c in known.items()},
            # Another name is an entry whose class: says what it is.
            "additionalProperties": entry(None, settings, needs_class=True),
        }

    properties: dict[str, Any] = {
        "include": _NAMES_OR_LIST,
        "node": ref(NodeConfig),
        "plugins": section("plugins", None),
        "backends": section("backends", None),
        "notifiers": section("notifiers", NotifierSettings),
        "handlers": section("handlers", HandlerSettings),
        "discovery": ref(DiscoveryConfig),
        "traces": ref(TracesConfig),
        "automation": ref(AutomationOptions),
        "journal": ref(JournalConfig),
        "scripts": _NAMES_OR_LIST,
        "hooks": {"type": ["object", "null"], "additionalProperties": ref(HookOptions)},
        "procedures": {"type": ["object", "null"], "additionalProperties": {
            "anyOf": [{"type": "array"}, ref(ProcedureOptions)]}},
        "cron": {"type": ["object", "null"], "additionalProperties": ref(CronOptions)},
    }
    missing = set(SECTIONS) - set(properties)
    assert not missing, f"sections without a schema: {missing}"
    assert set(COMMON_KEYS) == set(_COMMON)
    return {
        "$schema": DIALECT,
        "title": "platybus config",
        "description": "A platybus node's config.yaml (docs/config.md).",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "$defs": defs,
    }
