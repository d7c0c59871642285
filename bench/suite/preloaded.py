"""Imported by the measuring fork server (:func:`bench.suite.measure.start_pass_server`):
importing this module imports everything the contenders use (:func:`preload`)."""

from bench.suite.contenders import preload

preload()
