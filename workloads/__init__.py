"""Workloads: the data sets and models that edgefit plans, applies and measures against.

Kept import-light on purpose: ``workloads.data`` needs numpy only, so loading data never pulls
in torch.
"""
