"""The planner: problem data, solver backends, the plan schema. Does not import torch."""

from planner.plan import Plan
from planner.problem import Choice, Problem

__all__ = ["Choice", "Plan", "Problem"]
