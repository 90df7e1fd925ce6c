"""platybus: a plugin-based automation message bus."""

__version__ = "0.1.0"
