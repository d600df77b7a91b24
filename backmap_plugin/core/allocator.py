"""Memory settings of the ``backmap`` command: glibc's allocator and Python's garbage collector.

On Linux, PyTorch's CPU tensors come from glibc's ``malloc``. Blocks above
its mmap threshold (at most 32 MiB by default) are mapped for each
allocation and unmapped when freed, and freed memory at the top of the heap
is handed back to the system; so every chunk of frames pays again for
fresh, zeroed pages (about 1.3 million page faults and 2.4 s of 12.7 for
1,000 frames of a 100-residue protein with the model). :func:`keep_freed_memory`
raises both thresholds so that freed blocks are reused instead.

Python's cyclic garbage collector walks its young objects every 700 net
allocations of container objects. Loading torch, e3nn and mdtraj creates
hundreds of thousands of objects that live as long as the process, and
each of them is walked again and again while they load:
:func:`collect_garbage_less_often` collects every :data:`GC_THRESHOLD`
allocations instead, which takes about 0.3 s off the 1.7-2.0 s a ``backmap
run`` pays before its first frame (garbage cycles are still collected,
later).

Only the ``backmap`` command (and the benchmarks that stand for it) call
it: it changes the whole process, so the library leaves a user's own
process alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap, and this much freed memory may stay in the process.
KEEP_BYTES = 1 << 30
#: Net allocations of container objects between collections of the youngest generation (CPython: 700).
GC_THRESHOLD = 100_000


def keep_freed_memory(limit: int = KEEP_BYTES) -> bool:
    """Let glibc's ``malloc`` keep up to ``limit`` bytes of freed memory for reuse.

    Parameters
    ----------
    limit : int
        Bytes (at most 2**31 - 1): the mmap and trim thresholds.

    Returns
    -------
    bool
        True when applied; False where the C library is not glibc (macOS,
        Windows, musl) or refuses the values, which changes nothing else.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, limit) == 1 and mallopt(_M_TRIM_THRESHOLD, limit) == 1


def collect_garbage_less_often(threshold: int = GC_THRESHOLD) -> None:
    """Collect the garbage collector's youngest generation every ``threshold`` allocations.

    Parameters
    ----------
    threshold : int
        Net allocations of container objects between collections (the older
        generations keep their own settings).
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)
