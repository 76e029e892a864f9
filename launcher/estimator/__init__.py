"""Predict what vLLM will reserve per GPU, with no model load and no torch import.

Pure functions: architecture + engine settings + GPU memory -> Estimate.
"""
from .core import EngineSettings, Estimate, GpuBudget, estimate

__all__ = ["EngineSettings", "Estimate", "GpuBudget", "estimate"]
