"""Background reading and ordered background writing inside workers (flows.prefetch)."""

import threading
import time

import pytest

from flows.prefetch import OrderedWriter, prefetched


def test_prefetched_keeps_order_and_runs_ahead():
    produced: list[int] = []

    def source():
        for index in range(6):
            produced.append(index)
            yield index

    stream = prefetched(source(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)
    # The producer ran ahead of the consumer, by at most depth + 1 items.
    assert 2 <= len(produced) <= 4
    assert list(stream) == [1, 2, 3, 4, 5]


def test_prefetched_raises_the_source_error_in_place():
    def source():
        yield 1
        raise OSError("connection reset")

    stream = prefetched(source())
    assert next(stream) == 1
    with pytest.raises(OSError, match="connection reset"):
        next(stream)


def test_closing_early_stops_the_producer():
    produced = []

    def source():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    stream = prefetched(source(), depth=1)
    assert next(stream) == 0
    stream.close()
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count
    assert count <= 3


def test_shards_reuse_helper_threads():
    """One shard after another runs on the same reader and writer threads (and their malloc arenas)."""

    # Thread objects, not idents: an ident can be reused by a later thread.
    def reader_threads() -> set[threading.Thread]:
        def source():
            yield threading.current_thread()

        return set(prefetched(source()))

    def writer_threads() -> set[threading.Thread]:
        writer: OrderedWriter[threading.Thread] = OrderedWriter()
        writer.submit(threading.current_thread)
        writer.submit(threading.current_thread)
        return set(writer.results())

    assert reader_threads() == reader_threads()
    assert writer_threads() == writer_threads()
    assert len(writer_threads()) == 1


def test_side_by_side_generators():
    pairs = list(zip(prefetched(iter(range(50)), depth=1), prefetched(iter(range(50)), depth=1), strict=True))
    assert pairs == [(index, index) for index in range(50)]


def test_writer_keeps_submission_order():
    writer: OrderedWriter[str] = OrderedWriter()

    def slow(name: str, delay: float) -> str:
        time.sleep(delay)
        return name

    writer.submit(slow, "a", 0.05)
    writer.add("b")
    writer.submit(slow, "c", 0.0)
    assert writer.results() == ["a", "b", "c"]


def test_writer_raises_first_error():
    writer: OrderedWriter[int] = OrderedWriter()

    def fail() -> int:
        raise PermissionError("read-only bucket")

    writer.add(1)
    writer.submit(fail)
    with pytest.raises(PermissionError, match="read-only bucket"):
        writer.results()
