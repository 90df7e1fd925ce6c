"""Built-in notifiers, registered in the ``platybus.notifiers`` entry-point group."""
