"""Ctrl-C during native code that runs without the GIL (a solver): stop it at once.

Python's SIGINT handler only runs when the main thread is back in Python, so a Ctrl-C during a
ten-second native solve would wait ten seconds. Inside :func:`stop_on_sigint` a helper thread
watches the signal wake-up fd and calls the native code's own stop function the moment a SIGINT
arrives; when the native call returns, Python's handler raises KeyboardInterrupt as usual (the
CLI's exit 130, temporary files removed on the way out).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def stop_on_sigint(stop: Callable[[], None]) -> Iterator[None]:
    """Call `stop()` from a helper thread as soon as SIGINT arrives while the block runs.

    A no-op outside the main thread (signals go to the main thread only) or when SIGINT is
    not handled by Python (ignored, or the default action). Any wake-up fd already installed
    (asyncio's) keeps receiving the signal bytes."""
    if (threading.current_thread() is not threading.main_thread()
            or not callable(signal.getsignal(signal.SIGINT))):
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:  # not the main interpreter
        os.close(read_end)
        os.close(write_end)
        yield
        return
    watcher = threading.Thread(target=_watch, args=(read_end, previous, stop),
                               name="edgefit-sigint", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write_end)  # the watcher reads end-of-file and returns
        watcher.join(timeout=5)
        os.close(read_end)


def _watch(read_end: int, forward: int, stop: Callable[[], None]) -> None:
    while True:
        try:
            data = os.read(read_end, 512)
        except OSError:
            return
        if not data:
            return
        if forward >= 0:
            with contextlib.suppress(OSError):
                os.write(forward, data)
        if signal.SIGINT in data:
            with contextlib.suppress(Exception):
                stop()
