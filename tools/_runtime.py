"""Process settings the tools need before torch loads.

Huge pages for large CPU tensors: a fresh gradient of a dense head page-faults per 4 KiB
otherwise (timed by ``THP_MEM_ALLOC_ENABLE=1 python tools/benchmark_losses.py`` against the
same without it). Ignored where the kernel does not offer transparent huge pages; an explicit
``THP_MEM_ALLOC_ENABLE`` wins.
"""
import os

os.environ.setdefault('THP_MEM_ALLOC_ENABLE', '1')
