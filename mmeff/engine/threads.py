"""How many torch CPU threads a run on a possibly shared machine should use."""
import os
from typing import Tuple


def auto_threads() -> Tuple[int, str]:
    """All cores on an idle machine; 1 thread when the load average shows the cores are taken.

    OpenMP threads wait for each other at every parallel region: when another process holds one
    of the cores, a 2-thread step can take 10-20x longer than a 1-thread step (measured here:
    ~80 s vs ~3.7 s per step with a load average of 9 on 2 cores).
    Returns (threads, a note saying why).
    """
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cores, 'all cores'
    if cores > 1 and load >= cores - 0.5:
        return 1, f'1 thread: load average {load:.1f} on {cores} cores (busy machine)'
    return cores, f'all {cores} cores (load average {load:.1f})'
