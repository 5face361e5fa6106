"""Parallelism applied from outside the model: TP plan and collectives (tp.py), pipeline transfers
(pp.py)."""
