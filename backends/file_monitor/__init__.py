"""The ``file_monitor`` backend: file system changes as ``file.*`` events.

See ``docs/backends/file_monitor.md`` for the options and the events.
"""

from .backend import FileMonitorBackend
from .config import FileMonitorConfig, ReadyConfig, WatchedPath
from .events import (
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
