"""Device specs and budgets: strict, versioned, every number with provenance. No torch here."""

from device_specs.budget import Budget, Limits
from device_specs.catalog import catalog_names, load_spec
from device_specs.schema import DeviceSpec, Kernel, Profile

__all__ = ["Budget", "DeviceSpec", "Kernel", "Limits", "Profile", "catalog_names", "load_spec"]
