"""The per-shard memory release of the workers hands freed heap pages back to the OS."""

import sys
import threading

import pytest

from actors.runtime import _malloc_trim, release_free_memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_release_returns_freed_heap_pages():
    # A worker's pattern: a helper thread allocates buffers between small
    # objects that stay alive, so the freed buffers leave holes in that
    # thread's arena instead of shrinking it.
    buffers, survivors = [], []

    def fill() -> None:
        for index in range(3000):
            buffers.append(bytes([index % 251]) * 60_000)  # touched, so resident
            survivors.append(bytes([index % 251]) * 64)

    helper = threading.Thread(target=fill)
    helper.start()
    helper.join()
    buffers.clear()
    freed = _rss_mb()
    release_free_memory()
    released = freed - _rss_mb()
    # 3000 x 60 kB = 172 MB were freed. Without the trim glibc kept all of it
    # in a trial (0 MB returned), and with it about 90 MB left.
    # NOTE: RSS is process-wide, so threads of earlier tests (Ray, Prefect)
    # that allocate meanwhile can hide the release: this failed once in five
    # full-suite runs and passed when repeated.
    assert released > 50, f"only {released:.0f} MB returned to the OS"
    assert len(survivors) == 3000
