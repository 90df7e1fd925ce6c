"""The ``platybus`` command.

- :mod:`~platybus.cli.main`: the parser and the core commands; ``main()`` is the entry point.
- :mod:`~platybus.cli.common`: logging, argument helpers and config loading shared by commands.
- :mod:`~platybus.cli.http_client`: the HTTP client commands use to reach a running node.
- one module per command group (:mod:`~platybus.cli.notify`, ...).

Plugins add their own subcommands through the ``platybus.commands`` entry-point group.
"""
