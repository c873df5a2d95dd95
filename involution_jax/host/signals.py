"""SIGTERM (a scheduler stopping or preempting a job) as an exception that unwinds."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(BaseException):
  """SIGTERM arrived (a scheduler stopping or preempting the job): unwinds as Ctrl-C does,
  so `finally` blocks run (a training run stops its reader processes, frees its shared
  memory and releases its workdir)."""


def raise_terminated(signum, frame) -> None:
  signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up
  raise Terminated


@contextlib.contextmanager
def sigterm_as_a_request() -> Iterator[threading.Event]:
  """Within the block, SIGTERM sets the event it yields instead of raising `Terminated`
  wherever the main thread is: for code whose library calls must not be cut in the
  middle (a checkpoint being written, a reader's queue). The code checks the event where
  stopping is safe and raises `Terminated` there; a request left unanswered at the end
  of the block is raised then."""
  requested = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield requested
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
  try:
    yield requested
  finally:
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
  if requested.is_set():
    raise Terminated
