"""Drift: live traffic compared with the reference profile each package carries."""
