"""Built-in plugins, installed as ``platybus.plugins``.

They register in the ``platybus.plugins`` entry-point group, as third-party plugins do.
"""
