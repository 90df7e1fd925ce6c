"""Notification: event records, the notifier manager and the persistent outbox.

- :mod:`~platybus.notify.records`: ``EventRecord`` and the lossless document form of events.
- :mod:`~platybus.notify.manager`: ``NotifierManager``, the ``notifiers:`` section.
- :mod:`~platybus.notify.outbox`: events a notifier could not send yet, kept on disk.

Built-in notifiers are an entry-point group (``platybus.notifiers``), like third-party ones.
"""
