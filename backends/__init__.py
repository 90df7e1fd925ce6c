"""Built-in backends, installed as ``platybus.backends``.

They register in the ``platybus.backends`` entry-point group, as third-party backends do.
"""
