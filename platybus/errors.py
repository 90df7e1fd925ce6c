"""The platybus exception hierarchy and the command's exit codes.

Every error platybus raises on purpose is a :class:`PlatybusError`::

    PlatybusError
    ├── ConfigError                  the config is invalid (file, line, key path)
    ├── DecodeError                  bytes that are not a valid message
    ├── SelectorError                a selector or template expression is invalid
    ├── TemplateError                a template could not be rendered with the values at hand
    ├── ExtensionError               a plugin or backend cannot be loaded or built
    │   └── ExtensionNotFound        no extension of that name
    ├── ActionError                  an action could not run or failed
    │   ├── UnknownActionError       no action of that name
    │   ├── ArgumentError            missing, unknown or mistyped argument
    │   ├── ActionFailed             the action raised
    │   ├── ActionNotAllowed         a remote origin may not call the action
    │   ├── StepFailed               a step of a hook, procedure or cron job failed
    │   └── RequestTimeout           no response in time
    ├── BusError                     the bus refused an operation
    │   ├── QueueFullError           the queue is full (back-pressure)
    │   ├── DuplicateSubscriberError a subscriber id is taken
    │   └── NoRouteError             no way to reach the target node
    ├── LinkError                    a connection to an outside service failed
    │   ├── RemoteError              a node's HTTP API answered with an error
    │   └── ListenError              a server cannot listen on its address (a port in use)
    ├── IsolationError               work sent to a worker process did not complete
    │   ├── HandlerError             the code raised in its worker (type, message, traceback)
    │   ├── HandlerTimeout           past its hard limit: its worker was killed
    │   └── WorkerCrashed            its worker process died
    ├── RecordClosed                 an event record was changed after close()
    ├── JournalError                 the intake journal cannot be read or written
    ├── NodeError                    the node cannot do what was asked
    │   ├── NodeNotReady             the node is starting or stopping
    │   └── NodeAlreadyRunning       another node holds the same id and data dir
    └── Terminated                   stopped by a signal in the middle of work

Each class maps to one process exit code (:func:`exit_code_for`), documented in
``docs/operations.md``, and to one HTTP status (:func:`http_status_for`), documented in
``docs/backends/http.md``.
"""

from __future__ import annotations

from typing import Any


class PlatybusError(Exception):
    """Base of every error platybus raises on purpose."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(PlatybusError):
    """The configuration is invalid; says which file, line and key."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        where = ""
        if file:
            where = file if line is None else f"{file}:{line}"
        prefix = f"{key}: " if key else ""
        text = f"{where}: {prefix}{message}" if where else f"{prefix}{message}"
        super().__init__(text, file=file, line=line, key=key)
        self.reason = message


class DecodeError(PlatybusError):
    """Bytes that do not decode into a valid message."""

    http_status = 400


class SelectorError(PlatybusError):
    """A selector, condition or template expression is invalid."""

    def __init__(self, message: str, *, source: str = "", position: int | None = None) -> None:
        self.source = source
        self.position = position
        text = message
        if position is not None and source:
            text = f"{message} at position {position}: {source!r}"
        super().__init__(text, source=source, position=position)


class TemplateError(PlatybusError):
    """A template could not be rendered: an undefined name, a type mismatch, a bad value."""

    def __init__(self, message: str, *, expression: str = "") -> None:
        self.expression = expression
        super().__init__(message, expression=expression or None)


class ExtensionError(PlatybusError):
    """A plugin, backend or other extension cannot be loaded or built."""

    exit_code = 3


class ExtensionNotFound(ExtensionError):
    """No extension is registered under that name."""


class ActionError(PlatybusError):
    """An action could not be run, or it failed."""

    def __init__(self, message: str, *, action: str | None = None, **details: Any) -> None:
        self.action = action
        super().__init__(message, action=action, **details)


class UnknownActionError(ActionError):
    """No action of that name exists on this node."""

    http_status = 404


class ArgumentError(ActionError):
    """An action argument is missing, unknown or of the wrong type."""

    http_status = 400


class ActionFailed(ActionError):
    """The action raised an exception."""


class ActionNotAllowed(ActionError):
    """The origin of the request may not call this action."""

    http_status = 403


class StepFailed(ActionError):
    """A step of a hook, procedure or cron job failed; names the step's path."""

    def __init__(self, message: str, *, step: str, action: str | None = None,
                 **details: Any) -> None:
        self.step = step
        super().__init__(message, action=action, step=step, **details)


class RequestTimeout(ActionError):
    """No response arrived before the deadline."""

    http_status = 504


class BusError(PlatybusError):
    """The bus refused an operation."""


class QueueFullError(BusError):
    """The bus queue is full and the back-pressure policy rejected the message."""

    http_status = 503


class DuplicateSubscriberError(BusError):
    """A subscriber with that id is already registered."""


class NoRouteError(BusError):
    """There is no way to reach the target node."""

    http_status = 502


class LinkError(PlatybusError):
    """A connection to an outside service (Redis, a peer, a server) failed."""

    exit_code = 2


class RemoteError(LinkError):
    """A node's HTTP API answered with an error status instead of a result."""

    exit_code = 1  # the node was reached; it said no

    def __init__(self, message: str, *, status: int, type: str) -> None:
        self.status = status
        self.type = type
        super().__init__(message, status=status, type=type)


class ListenError(LinkError):
    """A server cannot listen on its address, e.g. because the port is in use."""


class IsolationError(PlatybusError):
    """Work sent to a worker process did not complete."""


class HandlerError(IsolationError):
    """The code raised in its worker process; keeps the remote type, message and traceback."""

    def __init__(self, remote_type: str, remote_message: str, traceback: str = "",
                 **details: Any) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.traceback = traceback
        super().__init__(f"{remote_type}: {remote_message}", remote_type=remote_type,
                         traceback=traceback, **details)


class HandlerTimeout(IsolationError):
    """The work passed its hard limit (queueing plus running); its worker was killed."""


class WorkerCrashed(IsolationError):
    """The worker process running the work died."""


class RecordClosed(PlatybusError):
    """An event record was changed after it was closed."""


class JournalError(PlatybusError):
    """The intake journal (SQLite in the data dir) cannot be opened, read or written."""


class NodeError(PlatybusError):
    """The node cannot do what was asked in its current state."""


class NodeNotReady(NodeError):
    """The node is still starting, or already stopping."""

    http_status = 503


class NodeAlreadyRunning(NodeError):
    """Another node with the same id and data dir is running."""

    exit_code = 4


class Terminated(PlatybusError):
    """Work was stopped by a signal before it finished."""

    exit_code = 5


EXIT_OK = 0
EXIT_ERROR = 1


def _error_classes() -> dict[str, type[PlatybusError]]:
    classes: dict[str, type[PlatybusError]] = {}
    todo: list[type[PlatybusError]] = [PlatybusError]
    while todo:
        cls = todo.pop()
        classes.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return classes


def http_status_for(type_name: str) -> int:
    """Return the HTTP status of an error by its class name (an ``ErrorInfo.type``).

    Names come from responses, possibly another node's: a name that is not one of
    this hierarchy's classes (an exception a plugin raised) is a 500.
    """
    cls = _error_classes().get(type_name)
    return cls.http_status if cls is not None else 500


def exit_code_for(error: BaseException) -> int:
    """Return the process exit code for an error."""
    if isinstance(error, PlatybusError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return Terminated.exit_code
    return EXIT_ERROR
