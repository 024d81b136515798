"""Hydra config groups: agent/ env/ reward/ robot/ mirror the package folders."""
