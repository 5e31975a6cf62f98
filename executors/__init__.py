"""Executors apply a plan. Importing this package does not import torch (executors do, lazily)."""
