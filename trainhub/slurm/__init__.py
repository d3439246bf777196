"""Slurm clusters as compute targets (issue 16)."""
