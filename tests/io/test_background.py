"""BackgroundWorker: a prefetch and a sink, with the thread's errors raised in the caller."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from stma_cli.io.background import STOP_WAIT_S, BackgroundWorker


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("test-worker")]


def test_prefetch_yields_every_item_in_order() -> None:
    worker = BackgroundWorker.prefetch(range(50), depth=3, name="test-worker")
    assert list(worker) == list(range(50)) and worker.finished
    worker.stop()
    assert not _workers()


def test_prefetch_raises_after_the_items_before_the_error() -> None:
    def items() -> Iterator[int]:
        yield from (1, 2)
        raise ValueError("corrupt frame 2")

    taken = []
    worker = BackgroundWorker.prefetch(items(), depth=8, name="test-worker")
    with pytest.raises(ValueError, match="corrupt frame 2"):
        for item in worker:
            taken.append(item)
    assert taken == [1, 2] and not worker.finished
    worker.stop()


def test_prefetch_stays_depth_items_ahead_and_stops_early() -> None:
    produced = []
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    worker = BackgroundWorker.prefetch(items(), depth=4, name="test-worker")
    taken = next(iter(worker))
    worker.stop()
    assert taken == 0 and len(produced) <= 4 + 2  # the queue, the item in hand, the one being offered
    assert closed.is_set() and not _workers() and not worker.finished


def test_sink_handles_items_in_order() -> None:
    handled = []
    with BackgroundWorker.sink(lambda a, b: handled.append((a, b)), depth=2, name="test-worker") as sink:
        for i in range(20):
            sink.put((i, i * i))
    assert handled == [(i, i * i) for i in range(20)] and sink.finished and not _workers()


def test_sink_raises_its_error_in_the_caller() -> None:
    def handle(index: int) -> None:
        if index == 3:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        with BackgroundWorker.sink(handle, depth=1, name="test-worker") as sink:
            for i in range(10_000):
                sink.put((i,))  # raises at a put after item 3 failed
    assert not _workers()


def test_sink_left_through_an_exception_still_handles_what_was_put() -> None:
    handled = []
    with pytest.raises(KeyboardInterrupt):
        with BackgroundWorker.sink(handled.append, depth=8, name="test-worker") as sink:
            for i in range(5):
                sink.put((i,))
            raise KeyboardInterrupt
    assert handled == [0, 1, 2, 3, 4] and sink.finished and not _workers()


def test_stopped_sink_drops_what_is_queued() -> None:
    handled = []
    in_hand, release = threading.Event(), threading.Event()

    def handle(index: int) -> None:
        in_hand.set()
        release.wait()
        handled.append(index)

    threading.Timer(0.3, release.set).start()  # item 0 is in hand until then; the stop drops items 1-4 meanwhile
    sink = BackgroundWorker.sink(handle, depth=8, name="test-worker")
    for i in range(5):
        sink.put((i,))
    in_hand.wait()
    sink.stop()
    assert handled == [0] and not _workers()


def test_stop_does_not_wait_on_a_prefetch_stuck_in_a_read() -> None:
    """A prefetch blocked in a read that does not return (a pipe without data) is left behind after
    STOP_WAIT_S; it ends, unseen, once the read returns."""
    read_end, write_end = os.pipe()

    def items() -> Iterator[bytes]:
        while True:
            yield os.read(read_end, 1)

    worker = BackgroundWorker.prefetch(items(), depth=2, name="test-worker")
    stopping = threading.Thread(target=worker.stop, daemon=True)  # a stop that hangs fails the test, not hangs it
    stopping.start()
    stopping.join(STOP_WAIT_S + 1)
    assert not stopping.is_alive()
    assert _workers()  # still in its read
    os.write(write_end, b"x")  # the read returns; the thread sees the stop
    deadline = time.monotonic() + 10
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _workers()
    os.close(read_end)
    os.close(write_end)
