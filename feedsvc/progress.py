"""Progress for long CLI commands: a bar on a terminal, plain lines elsewhere.

On a terminal the bar is redrawn in place (at most ten times a second, so
drawing never costs more than the work); in a log file or a CI job, where
carriage returns make a mess, a plain line is printed at every tenth of the
work instead. A step whose length is unknown (loading the articles folder)
shows a spinner with the elapsed time on a terminal, and one line when done.
No dependency: this is all ``build`` and ``check`` need.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

_SPINNER = "|/-\\"


class Progress:
    """Reports ``done`` of ``total`` items of one labelled step to ``stream``."""

    def __init__(self, label: str, stream: TextIO | None = None, *, tty: bool | None = None,
                 interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.clock = clock
        self._drawn_at: float | None = None
        self._tenth = -1  # the last tenth of the work reported as a plain line
        self._open = False  # a bar is on the terminal's current line

    def __call__(self, done: int, total: int, item: str = "") -> None:
        """Report progress; the signature of ``export.build_site``'s ``progress``."""
        if self.tty:
            now = self.clock()
            if done < total and self._drawn_at is not None and now - self._drawn_at < self.interval:
                return
            self._drawn_at = now
            self._draw(done, total, item)
        else:
            tenth = 10 * done // total if total else 10
            if tenth > self._tenth:
                self._tenth = tenth
                percent = 100 * done // total if total else 100
                self._line(f"{self.label}: {done}/{total} ({percent}%)")

    def _draw(self, done: int, total: int, item: str) -> None:
        columns = shutil.get_terminal_size((80, 24)).columns
        fraction = done / total if total else 1.0
        counts = f" {100 * fraction:3.0f}% {done}/{total} "
        width = max(10, min(40, columns - len(self.label) - len(counts) - 4))
        filled = int(width * fraction)
        bar = f"{self.label} [{'#' * filled}{'.' * (width - filled)}]{counts}"
        room = columns - len(bar) - 1
        tail = item[-room:] if room > 8 else ""
        self.stream.write("\r" + (bar + tail).ljust(columns - 1))
        self.stream.flush()
        self._open = True

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # the bar's line ends however the step ended

    def close(self, message: str | None = None) -> None:
        """End the bar's line; print ``message`` (on a terminal, over the bar)."""
        if self.tty and self._open:
            columns = shutil.get_terminal_size((80, 24)).columns
            self.stream.write("\r" + " " * (columns - 1) + "\r")
            self._open = False
        if message:
            self._line(message)
        self.stream.flush()


@contextmanager
def busy(label: str, stream: TextIO | None = None, *, tty: bool | None = None,
         interval: float = 0.1) -> Iterator[None]:
    """A step of unknown length: a spinner and elapsed seconds, then one line."""
    stream = stream if stream is not None else sys.stderr
    tty = stream.isatty() if tty is None else tty
    started = time.monotonic()
    stop = threading.Event()
    spinner: threading.Thread | None = None
    if tty:
        def spin() -> None:
            turn = 0
            while not stop.wait(interval):
                turn += 1
                stream.write(f"\r{label} {_SPINNER[turn % 4]} {time.monotonic() - started:.1f} s")
                stream.flush()

        spinner = threading.Thread(target=spin, name="feedsvc-progress", daemon=True)
        spinner.start()
    else:
        stream.write(f"{label} ...\n")
        stream.flush()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        stop.set()
        if spinner is not None:
            spinner.join()
            stream.write("\r" + " " * (len(label) + 16) + "\r")
        outcome = "failed" if failed else "done"
        stream.write(f"{label}: {outcome} in {time.monotonic() - started:.1f} s\n")
        stream.flush()
