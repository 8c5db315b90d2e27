"""Measurement helpers for the benchmark tools: medians, peak memory, tables."""
from .measure import Measurement, measure, print_table

__all__ = ['Measurement', 'measure', 'print_table']
