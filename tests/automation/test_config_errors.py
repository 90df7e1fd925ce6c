"""Automation config errors name the file, the line and the key, before anything starts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from platybus.errors import ConfigError
from tests.automation.conftest import Harness

Make = Callable[..., Harness]


@pytest.mark.parametrize(("yaml", "line", "key", "message"), [
    ("""
hooks:
  h:
    if: {type: x}
    then:
      - action: rec.nte
""", 6, "hooks.h.then[0].action", "unknown action 'rec.nte'; did you mean 'rec.note'?"),
    ("""
hooks:
  h:
    if: {type: x}
    then:
      - action: rec.note
        args: {valeu: 1}
""", 6, "hooks.h.then[0].action", "unknown argument 'valeu'; did you mean 'value'?"),
    ("""
hooks:
  h:
    if: {type: x}
    then: [{action: rec.slow, args: {tag: "${event.data.x"}}]
""", 5, "hooks.h.then[0].args", "invalid template: '${' is never closed"),
    ("""
hooks:
  h:
    if: {type: x}
    then: [{action: rec.note, args: {value: "${event.__class__}"}}]
""", 5, "hooks.h.then[0].args", "names starting with '_' are not allowed"),
    ("""
hooks:
  h:
    if: {type: x, data.path: {$regex: '(?P<name>.*)'}}
    then:
      - action: rec.note
        args:
          value: "${nme}"
""", 7, "hooks.h.then[0].args",
     "unknown name 'nme' in template; did you mean 'name'? (known here: event, name)"),
    ("""
hooks:
  h:
    if: {type: x}
    thn: []
""", 5, "hooks.h.thn", "unknown key; did you mean 'then'?"),
    ("""
hooks:
  h:
    if: {type: x}
    mode: sometimes
    then: []
""", 5, "hooks.h.mode", "invalid enum value 'sometimes'"),
    ("""
hooks:
  h:
    if: {type: x}
    then:
      - acton: rec.note
""", 6, "hooks.h.then[0]", "did you mean 'action'?"),
    ("""
hooks:
  h:
    if: {type: x}
    then:
      - {action: rec.note, if: "${true}"}
""", 6, "hooks.h.then[0]", "exactly one of"),
    ("""
hooks:
  h:
    if: {type: x}
    then:
      - set: {event: 1}
""", 6, "hooks.h.then[0].set.event", "'event' is reserved"),
    ("""
hooks:
  h:
    if: {type: x}
    then:
      - {action: procedure.nope}
""", 6, "hooks.h.then[0].action", "unknown procedure 'procedure.nope'"),
    ("""
procedures:
  p:
    params: [a, a]
    steps: []
""", 4, "procedures.p.params[1]", "parameter 'a' is given twice"),
    ("""
procedures:
  p:
    params: [n]
    steps:
      - if: "n >"
        then: []
""", 6, "procedures.p.steps[0].if", "invalid template"),
    ("""
procedures:
  p:
    steps:
      - for: x
        in: "${[1, 2]}"
        do: [{wait: -1}]
""", 7, "procedures.p.steps[0].do[0].wait", "seconds >= 0"),
    ("""
procedures:
  bad name:
    steps: []
""", 3, "procedures.bad name", "invalid name"),
    ("""
traces:
  keep: lots
""", 3, "traces.keep", "expected an integer"),
])
def test_errors_name_file_line_and_key(harness: Make, yaml: str, line: int, key: str,
                                       message: str) -> None:
    with pytest.raises(ConfigError) as info:
        harness(yaml, start=False)
    error = info.value
    assert message in error.reason
    assert (error.line, error.key) == (line, key)
    assert error.file is not None
    assert error.file.endswith("n1.yaml")
