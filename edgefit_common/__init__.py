"""The bottom layer every edgefit package may use: errors, units, YAML/JSON file I/O, atomic
writes, cache paths, and the version. Imports nothing of edgefit's."""

__version__ = "0.1.0"
