"""The Redis Streams link between nodes.

- :mod:`~platybus.link.protocol`: envelopes, signing, stream keys, dedup; pure, no I/O.
- :mod:`~platybus.link.inbound`: what a node accepts from the link (policy).
- :mod:`~platybus.link.stream_link`: the reader and writer threads that do the I/O.
- :mod:`~platybus.link.outgoing`: what waits for the writer (bounded, with a drop policy).
- :mod:`~platybus.link.loopback`: an in-memory transport for tests and embedded use.
"""
