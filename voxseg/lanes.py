"""Run the command-line tools as steps in lanes side by side: the demo's way of using every core.

A lane is a function that calls `Lanes.step` for each tool it runs, in order (so that it can skip
or resume steps from what earlier ones wrote); lanes run in threads, each step as a subprocess of
this Python whose output goes to its own log file. The console gets one line when a step starts
(with its command, so the run doubles as a recipe), one when it ends, the output of the steps
marked `show` (metric tables) and, while steps run, their progress bars' last state every
`heartbeat` seconds. The first failing step stops the others (Ctrl-C, which the tools turn into
a clean exit after their last checkpoint) and becomes one error naming its log.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from voxseg.errors import VoxsegError

T = TypeVar("T")
STOP_GRACE_S = 30.0  # how long a stopped step may take to exit on Ctrl-C before it is killed


class StepFailed(VoxsegError):
    """A step exited with a non-zero status."""


class Stopped(Exception):
    """Raised in a lane asked to stop (another lane's step failed, or Ctrl-C)."""


@dataclass
class StepTime:
    lane: str
    title: str
    start_s: float  # since the Lanes object was made
    seconds: float


class Lanes:
    """Steps run from lane threads; `run` starts the lanes and waits for all of them."""

    def __init__(self, log_dir: str | Path, cwd: str | Path, heartbeat: float = 60.0):
        self.log_dir, self.cwd, self.heartbeat = Path(log_dir), Path(cwd), heartbeat
        self.times: list[StepTime] = []
        self._running: dict[str, tuple[subprocess.Popen, Path, str]] = {}  # lane -> (process, log, title)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._count = 0  # steps started: numbers the logs
        self._start = time.perf_counter()

    def print(self, text: str) -> None:
        """One block of console output, never interleaved with another lane's."""
        with self._lock:
            print(text, flush=True)

    def step(self, lane: str, title: str, args: list[str], show: bool = False) -> None:
        """Run `python ARGS` in the working directory, its output to LOG_DIR/NN_LANE.log."""
        if self._stop.is_set():
            raise Stopped
        with self._lock:
            self._count += 1
            log = self.log_dir / f"{self._count:02d}_{lane}.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.print(f"[{lane}] {title}\n    $ python {shlex.join(args)}")
        start = time.perf_counter()
        with open(log, "w") as out:
            process = subprocess.Popen([sys.executable, *args], cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT)
            with self._lock:
                self._running[lane] = (process, log, title)
            status = process.wait()
        seconds = time.perf_counter() - start
        with self._lock:
            del self._running[lane]
            self.times.append(StepTime(lane, title, start - self._start, seconds))
        if status and self._stop.is_set():
            raise Stopped
        if status:
            tail = "\n".join(last_lines(log.read_text(errors="replace"), 15))
            self.print(f"[{lane}] {title}: FAILED (exit {status}); the end of {log}:\n{tail}")
            raise StepFailed(f"step failed ({title}); its log: {log}")
        shown = "\n" + log.read_text(errors="replace").rstrip() if show else ""
        self.print(f"[{lane}] {title}: {seconds:.0f} s{shown}")

    def run(self, lanes: dict[str, Callable[[], T]]) -> dict[str, T]:
        """Run each lane in its own thread; returns their results by name, or raises the first
        failure (StepFailed) or KeyboardInterrupt after stopping the other lanes' steps."""
        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            futures: dict[str, Future] = {name: pool.submit(lane) for name, lane in lanes.items()}
            try:
                pending = set(futures.values())
                while pending:
                    done, pending = wait(pending, timeout=self.heartbeat, return_when=FIRST_EXCEPTION)
                    if any(f.exception() is not None for f in done):
                        break
                    if pending:
                        self.print_progress()
            except KeyboardInterrupt:
                self.stop()
                raise
            failed = [f for f in futures.values() if f.done() and f.exception() is not None]
            if failed:
                self.stop()
                raise failed[0].exception()  # type: ignore[misc]
            return {name: f.result() for name, f in futures.items()}

    def stop(self) -> None:
        """Stop every lane: no new steps; running ones get Ctrl-C, and are killed if they linger."""
        self._stop.set()
        with self._lock:
            processes = [process for process, _, _ in self._running.values()]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def print_progress(self) -> None:
        """Each running step's progress: the last state of its progress bar (or its last line)."""
        with self._lock:
            running = [(lane, log, title) for lane, (_, log, title) in self._running.items()]
        lines = [f"[{lane}] {title}: {last_progress(log)}" for lane, log, title in running]
        if lines:
            self.print(f"-- {time.perf_counter() - self._start:.0f} s\n" + "\n".join(lines))

    def summary(self) -> str:
        """Where the time went: each step's lane, start and duration, and the wall time."""
        wall = time.perf_counter() - self._start
        rows = [f"{'start':>7} {'seconds':>8}  {'lane':<10} step"]
        for t in sorted(self.times, key=lambda t: t.start_s):
            rows.append(f"{t.start_s:7.0f} {t.seconds:8.0f}  {t.lane:<10} {t.title}")
        busy = sum(t.seconds for t in self.times)
        rows.append(f"{wall:7.0f} s wall for {busy:.0f} s of steps ({busy / max(wall, 1e-9):.1f} side by side)")
        return "\n".join(rows)


def last_lines(text: str, n: int) -> list[str]:
    """The last n lines of a log, progress bars' carriage-return updates reduced to their last state."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.rstrip().split("\n")]
    return [line for line in lines if line.strip()][-n:]


def last_progress(log: Path) -> str:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return "starting"
    pieces = [piece.strip() for piece in text.replace("\n", "\r").split("\r") if piece.strip()]
    return pieces[-1][:140] if pieces else "starting"
