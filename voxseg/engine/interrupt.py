"""Ctrl-C and `docker stop` (SIGTERM) honoured between training steps only.

Stopping in the middle of a step would save a model whose batch-norm statistics already saw
that step's batch while the step counter did not, so the resumed run would replay it. Inside
`deferred_interrupts()` the first SIGINT or SIGTERM only sets `requested`; the trainer checks
it between steps, saves a checkpoint and raises KeyboardInterrupt. A second signal stops at
once (KeyboardInterrupt where the process is), which is safe too: checkpoints are written
atomically, so the last complete one stays.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self) -> None:
        self.requested: signal.Signals | None = None

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum)
        print(f"\n{self.requested.name}: stopping after this step (again to stop now)", flush=True)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[StopRequest]:
    """Install the deferring handlers for the duration of the block (main thread only)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop._handle) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def ignore_in_worker(worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: a terminal's Ctrl-C reaches the whole process group; workers
    leave it to the main process, which stops the run cleanly (otherwise the workers die and the
    next batch fails). SIGTERM stays default: the loader uses it to end workers that hang."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
