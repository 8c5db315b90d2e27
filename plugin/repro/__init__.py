"""Benchmark reproduction: suites of configs run over seeds at a scale, their run records,
tables and figures (``tools/reproduce.py``), and the class-imbalance analysis
(``tools/analyze_imbalance.py``). Not imported by ``import plugin``."""
