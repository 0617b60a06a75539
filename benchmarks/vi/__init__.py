"""Variational inference benchmark on Inference Gym targets (see ``run.py``)."""
