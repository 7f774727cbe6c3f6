"""Settings for the processes that run the job: long-lived model actors and the driver.

Each function changes only this process, says whether it did, and is cheap to call twice.
Why each one pays is measured in docs/decisions.md (*Ray scheduling and processes*).
"""

from __future__ import annotations

import os
import sys


def passive_openmp_waits() -> bool:
    """Make torch's OpenMP threads in this process sleep, not spin, between parallel
    regions (OMP_WAIT_POLICY=PASSIVE unless the environment sets it), so that an embedding
    actor leaves idle cores to the decode tasks beside it. OpenMP reads the setting when
    torch loads, so it applies only before torch is imported; returns whether it did."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def freeze_startup_objects() -> int:
    """Move every object this process holds now into the garbage collector's permanent
    generation (`gc.freeze`), so that later collections and the interpreter's exit no
    longer walk the half-million objects of torch, open_clip and a loaded model. For a
    long-lived process right after it loaded its model; objects freed by reference counting
    are still freed. Returns the number of objects frozen."""
    import gc

    gc.freeze()
    return gc.get_freeze_count()


def lower_priority(niceness: int) -> int:
    """Give every thread of this process (and the threads it starts later) a CPU niceness
    of at least `niceness` (0 or less: no change), so that a driver that only coordinates
    does not preempt Ray's workers on each wake-up of its scheduling loop. Without
    privileges a niceness cannot be lowered again. Returns the number of threads changed."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return 0
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc (macOS): there the call sets the whole process
        threads = [0]
    changed = 0
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
                changed += 1
        except OSError:  # a thread that ended meanwhile, or a platform that refuses
            continue
    return changed
