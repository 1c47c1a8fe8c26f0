"""Overlap reading and writing with model work inside a worker.

A worker spends most of its time in the models, which run on one torch
thread. Decoding the next images and encoding the last outputs (Pillow, which
releases the GIL) can run beside them in one helper thread each, so the
pipeline costs little more than the bare model loop.

The helper threads live as long as the process and serve every shard,
because glibc gives each thread a malloc arena. With new threads for each
shard, a Ray actor's heap grew by about 40 MB per shard while the memory in
use stayed the same: the freed memory sat in arenas that the next shard's
threads did not use. glibc caps the arenas at 8 per core by default
(M_ARENA_MAX in mallopt(3)), which is probably why that growth levelled off.
"""

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_END = object()

# An executor reuses an idle thread, so consecutive shards run on the same
# reader and writer threads. The spare reader threads serve generators
# consumed side by side, whose producers would otherwise wait for each other.
# A single writer thread keeps a shard's writes in submission order.
_READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hcr-prefetch")
_WRITERS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hcr-writer")


def prefetched(source: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield the items of `source`, produced up to `depth` items ahead in a background thread.

    An exception raised by `source` is raised here, at the position where it
    occurred. Closing this generator early stops the producer after the item
    it is working on.
    """
    if depth < 1:
        yield from source
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                if not _put(items, (item, None), stop):
                    return
            _put(items, (_END, None), stop)
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
            _put(items, (_END, error), stop)

    producer = _READERS.submit(produce)
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        producer.result()


def _put(items: queue.Queue, value, stop: threading.Event) -> bool:
    """Put value unless stop is set first; return whether it was put."""
    while not stop.is_set():
        try:
            items.put(value, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class OrderedWriter(Generic[T]):
    """Run write calls in the writer thread and return their results in submission order.

    Plain values can be added between calls so that one list keeps the rows
    of a shard in input order. `results()` waits for every call and raises
    the first exception, as a direct call would have.
    """

    def __init__(self) -> None:
        self._slots: list[Future | T] = []

    def submit(self, function: Callable[..., T], *args) -> None:
        self._slots.append(_WRITERS.submit(function, *args))

    def add(self, value: T) -> None:
        self._slots.append(value)

    def results(self) -> list[T]:
        try:
            return [slot.result() if isinstance(slot, Future) else slot for slot in self._slots]
        finally:
            # After a failure, drop the calls not started and let the running one end.
            futures = [slot for slot in self._slots if isinstance(slot, Future)]
            for future in futures:
                future.cancel()
            wait(futures)
