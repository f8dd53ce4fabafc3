"""The cyclic garbage collector kept off what lives as long as the process.

A run imports Prefect, pandas, statsforecast and TensorFlow: millions of objects that live until the process
exits. Python's cyclic collector walks every one of them at each full collection, and a stage that builds
many small objects (frames, configs, task states) sets off a full collection every few hundred thousand. On
10,000 series with two Dask workers that walking took about 20 s of CPU (perf, benchmarks/README.md).
`gc.freeze` moves the objects alive now into a generation the collector never walks; they are still freed
by reference counting as before, and only a cycle among them that dies later is not collected.
"""

from __future__ import annotations

import gc
import sys

# Allocations between young collections (Python's default: 700). A process that orchestrates thousands of
# task runs makes millions of short-lived objects; collecting them 70 times less often walks the survivors
# 70 times less often.
YOUNG_GENERATION_THRESHOLD = 50_000
_modules_when_frozen = 0  # len(sys.modules) at the last freeze


def collect_less_often() -> None:
    """Raise the young generation's threshold (`YOUNG_GENERATION_THRESHOLD`), the older ones' as they were."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


def freeze_loaded_modules() -> None:
    """After new imports, exempt every object alive now from the cyclic collector (`gc.freeze`). Cheap when
    nothing was imported since the last call. No collection first: after the command's imports one found 5
    objects to free, and cost 0.16 s (0.6 s beside the workers' start)."""
    global _modules_when_frozen
    if len(sys.modules) == _modules_when_frozen:
        return
    gc.freeze()
    _modules_when_frozen = len(sys.modules)
