"""Byte and file formats: what edgefit writes and reads back, independent of torch."""
