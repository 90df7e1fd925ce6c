"""The ``file_monitor`` backend: file system changes as ``file.*`` events.

See ``docs/backends/file_monitor.md`` for the options and the events.
"""

from backends.file_monitor.backend import FileMonitorBackend
from backends.file_monitor.config import FileMonitorConfig, ReadyConfig, WatchedPath
from backends.file_monitor.events import (
    FileClosed,
    FileCreated,
    FileDeleted,
    FileEventData,
    FileModified,
    FileMoved,
    FileMovedData,
    FileReady,
    FileReadyData,
)

__all__ = [
    "FileClosed",
    "FileCreated",
    "FileDeleted",
    "FileEventData",
    "FileModified",
    "FileMonitorBackend",
    "FileMonitorConfig",
    "FileMoved",
    "FileMovedData",
    "FileReady",
    "FileReadyData",
    "ReadyConfig",
    "WatchedPath",
]
