"""Process settings the tools need before torch loads.

Huge pages for large CPU tensors: a fresh gradient of a dense head page-faults per 4 KiB
otherwise, which was half of the loss time on CPU here (docs/benchmarks.md, Huge pages). Ignored where the
kernel does not offer transparent huge pages; an explicit ``THP_MEM_ALLOC_ENABLE`` wins.
"""
import os

os.environ.setdefault('THP_MEM_ALLOC_ENABLE', '1')
