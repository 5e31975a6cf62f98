"""Per-layer x per-option costs. Importing this package does not import torch (capture does)."""
