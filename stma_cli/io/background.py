"""A daemon thread joined to the caller by a bounded queue: the video decoder's prefetch and the output writer.

    worker = BackgroundWorker.prefetch(decoded_frames(), depth=8)    # the thread runs the iterator
    for frame in worker: ...                                         # the caller takes its items
    worker.stop()

    with BackgroundWorker.sink(output.write, depth=4) as writer:     # the thread calls output.write(*item)
        writer.put((index, frame, labels))                           # the caller hands items over

Either way an exception in the thread is raised in the caller: by a prefetch after the items produced
before it, by a sink at the next `put` or when the block ends. A sink's block always ends with every item
put handled (through an exception too: that work is done and its results are kept), unless an item failed.
`stop` ends the thread early, dropping what is still queued, and waits for it: a sink's always, a prefetch's
for at most STOP_WAIT_S, so that no stop (nor with it Ctrl-C or SIGTERM) hangs on a read that never returns.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

_END = object()
_POLL_S = 0.1  # how often a blocked side looks at the stop flag
STOP_WAIT_S = 2.0  # how long `stop` waits for a prefetch's thread before leaving it behind


class BackgroundWorker:
    """One daemon thread and a bounded queue; build it with `prefetch` or `sink`."""

    def __init__(self, run: Callable[[BackgroundWorker], None], name: str, depth: int, sink: bool) -> None:
        self._sink = sink
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self.finished = False  # a prefetch: every item was taken; a sink: every item was handled
        self._thread = threading.Thread(target=run, args=(self,), name=name, daemon=True)
        self._thread.start()

    @classmethod
    def prefetch(cls, items: Iterable[Any], depth: int, name: str = "stma-prefetch") -> BackgroundWorker:
        """Run the iterator `items` in the thread, up to `depth` items ahead of the caller."""
        iterator = iter(items)
        return cls(lambda worker: worker._produce(iterator), name, depth, sink=False)

    @classmethod
    def sink(cls, handle: Callable[..., None], depth: int, name: str = "stma-sink") -> BackgroundWorker:
        """Call `handle(*item)` in the thread for every item `put`, in order."""
        return cls(lambda worker: worker._consume(handle), name, depth, sink=True)

    # -- the caller's side -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        """A prefetch's items, until the end (then `finished` is True) or until `stop`."""
        while (item := self._take()) is not _END:
            yield item
        if self._error is not None:
            raise self._error
        self.finished = not self._stopping.is_set()

    def put(self, item: tuple) -> None:
        """Hand an item (a tuple of arguments) to a sink; raises the error of an earlier item, if any."""
        self._raise_error()
        self._offer(item)

    def finish(self, raise_error: bool = True) -> None:
        """Wait until a sink has handled every item; raise its error, if any (and `raise_error`)."""
        self._offer(_END)
        self._thread.join()
        if raise_error:
            self._raise_error()
        self.finished = self._error is None

    def stop(self) -> None:
        """End the thread without handling what is still queued, and wait for it.

        A prefetch's thread still blocked after STOP_WAIT_S (in a read that never returns: a FIFO without
        data, a hung mount) is left behind: a daemon thread, whose items nobody takes, that ends with the
        process. A sink's thread is waited for however long it takes: it may be writing a file.
        """
        self._stopping.set()
        deadline = None if self._sink else time.monotonic() + STOP_WAIT_S
        while self._thread.is_alive() and (deadline is None or time.monotonic() < deadline):
            try:
                self._queue.get(timeout=_POLL_S / 2)
            except queue.Empty:
                pass

    def __enter__(self) -> BackgroundWorker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sink and not self._stopping.is_set():
            self.finish(raise_error=exc_type is None)  # the block's own exception goes first
        else:
            self.stop()

    # -- the thread's side -----------------------------------------------------------------------

    def _produce(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if not self._offer(item):
                    return
        except BaseException as error:  # raised in the caller after the items before it
            self._error = error
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        self._offer(_END)

    def _consume(self, handle: Callable[..., None]) -> None:
        while (item := self._take()) is not _END:
            if self._error is None:
                try:
                    handle(*item)
                except BaseException as error:  # raised in the caller at its next put or finish
                    self._error = error

    # -- the queue, with an eye on the stop flag -------------------------------------------------

    def _offer(self, item: Any) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _take(self) -> Any:
        while True:
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stopping.is_set():
                    return _END

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
