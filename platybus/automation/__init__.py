"""Automation: hooks on events, procedures, cron jobs, Python scripts, and their traces.

See ``docs/automation/``. :class:`Automation` is the node component;
:mod:`platybus.automation.scripts` has the ``@hook``, ``@procedure`` and
``@cron`` decorators for ``scripts:`` modules.
"""

from platybus.automation.component import Automation

__all__ = ["Automation"]
