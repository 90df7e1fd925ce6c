"""The ``transfer`` plugin: local and SFTP file transfer jobs.

- :mod:`.plugin`: ``TransferPlugin`` and its actions.
- :mod:`.engine`: the job engine shared by every endpoint (atomic writes, single instance).
- :mod:`.local`, :mod:`.sftp`: the endpoints.
- :mod:`.api`: ``configure``/``transfer``, the Python API of a job's caller.
- :mod:`.cli`: the ``platybus transfer`` command (``platybus.commands`` entry point).

See ``docs/plugins/transfer.md``.
"""

from .api import FileTags, TransferOutcome, configure, set_sigterm_handler, transfer
from .plugin import TransferPlugin

__all__ = [
    "FileTags",
    "TransferOutcome",
    "TransferPlugin",
    "configure",
    "set_sigterm_handler",
    "transfer",
]
