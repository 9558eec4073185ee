"""The garbage collector's pace for long-running processes (the web and the workers).

CPython's default collects its youngest generation every 700 net container allocations.
An ingest batch builds a few hundred thousand dicts and lists (decoded attributes,
messages, rows), nearly all freed by reference counting, yet each collection scans what
is alive at that moment, promotes it, and every few dozen of them a full collection
walks the whole heap: Django, gRPC and the span path's caches. That was 15-20 % of an
ingest batch's CPU. Objects alive once the process is set up are moved out of the
collector's sight (`gc.freeze`), and the youngest generation is collected every 50,000
allocations: the few reference cycles a request leaves wait a little longer.
"""

import gc

YOUNGEST = 50_000


def collect_less() -> None:
    """Call once the process has imported what it serves with."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST, middle, oldest)
