"""expsolver: exponential integrators for diffusion ODEs, verified on exact Gaussian-mixture targets."""

from .schedules import VPCosine, VPDiscrete, VPLinear, VPSchedule

__all__ = ["VPSchedule", "VPLinear", "VPCosine", "VPDiscrete"]
