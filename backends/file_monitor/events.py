"""The typed events of the file monitor: ``file.created`` ... ``file.ready``."""

from __future__ import annotations

import msgspec

from platybus.messages import Event


class FileEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Where a change happened: the path, its watched root and whether it is a directory.

    ``catch_up`` is true for a change that happened while the node was not running,
    reported at start for a root with ``catch_up: true``.
    """

    path: str
    root: str
    relative: str
    is_directory: bool = False
    catch_up: bool = False


class FileMovedData(FileEventData, frozen=True, kw_only=True):
    """A rename inside the watched root: the old ``path`` and the ``new_path``."""

    new_path: str
    new_relative: str


class FileReadyData(FileEventData, frozen=True, kw_only=True):
    """A complete file; ``marker`` is the marker file that announced it, if any."""

    marker: str | None = None


class FileCreated(Event, tag="event", kw_only=True, frozen=True):
    """A file or directory appeared under a watched root."""

    type: str = "file.created"
    data: FileEventData


class FileModified(Event, tag="event", kw_only=True, frozen=True):
    """A file's content changed (bursts are coalesced)."""

    type: str = "file.modified"
    data: FileEventData


class FileDeleted(Event, tag="event", kw_only=True, frozen=True):
    """A file or directory disappeared from a watched root."""

    type: str = "file.deleted"
    data: FileEventData


class FileMoved(Event, tag="event", kw_only=True, frozen=True):
    """A file or directory was renamed within a watched root."""

    type: str = "file.moved"
    data: FileMovedData


class FileClosed(Event, tag="event", kw_only=True, frozen=True):
    """A file that was open for writing was closed: it finished being written."""

    type: str = "file.closed"
    data: FileEventData


class FileReady(Event, tag="event", kw_only=True, frozen=True):
    """A file of a drop folder is complete (closed, moved in, or announced by a marker)."""

    type: str = "file.ready"
    data: FileReadyData


EVENT_TYPES: tuple[type[Event], ...] = (
    FileCreated, FileModified, FileDeleted, FileMoved, FileClosed, FileReady,
)
