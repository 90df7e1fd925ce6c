"""Process isolation: code that may hang or crash runs in child interpreters.

- :mod:`~platybus.isolation.pool`: the process pool with hard deadlines (``ProcessPool``).
- :mod:`~platybus.isolation.tasks`: task futures, tasks and the pool's counters.
- :mod:`~platybus.isolation.worker`: the parent's side of one worker process.
- :mod:`~platybus.isolation.child`: the child interpreter's loop.
- :mod:`~platybus.isolation.handlers`: the ``handlers:`` section, event handlers run in the pool.
"""
