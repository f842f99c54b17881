"""Run a function as user nobody, so permission checks bite even when tests run as root."""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from typing import Any

import pytest

NOBODY = 65534


def run_unprivileged(fn: Callable[..., Any], *args: Any,
                     before_fork: Callable[[], None] | None = None) -> Any:
    """Call ``fn(*args)`` as nobody: as root, fork and drop privileges; otherwise just call it.

    A fresh ``python`` could not start as nobody (the interpreter lives under
    /root), hence the fork. ``fn`` must return plain picklable data; an
    exception in the child fails the test with the child's traceback, and a
    machine where privileges cannot be dropped skips it. ``before_fork``
    loads whatever the child would import lazily and nobody could not read.
    """
    if os.geteuid() != 0:
        return fn(*args)
    if before_fork is not None:
        before_fork()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_end)
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            except OSError as exc:
                payload: tuple[str, Any] = ("nosetuid", str(exc))
            else:
                try:
                    payload = ("ok", fn(*args))
                except BaseException:
                    payload = ("error", traceback.format_exc())
            with os.fdopen(write_end, "wb") as out:
                out.write(pickle.dumps(payload))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == "nosetuid":
        pytest.skip(f"cannot drop root privileges to test permissions: {value}")
    if kind == "error":
        pytest.fail(f"unprivileged child failed:\n{value}")
    return value
