"""Measurements of ``tfp_realnvp`` (not part of the installable package).

Run from the repository root: ``python -m benchmarks.bench --out DIR`` (the
side-by-side benchmark, see ``benchmarks/README.md``), ``python
benchmarks/robustness.py``, ``python benchmarks/datasets_table.py`` and
``python benchmarks/tune_one.py``.
"""
