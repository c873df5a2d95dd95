"""One training run per workdir: a lock file the kernel releases when its holder dies.

`hold(workdir)` takes `workdir/.lock` with `flock`: a second run on the same workdir
gets `WorkdirInUseError` naming the holder (process, host, start time, command) before
it writes anything. The lock belongs to the holder's open file, so a holder killed
with SIGKILL releases it too; the next run finds the dead holder's record, says so and
takes the lock over. Local file systems and NFSv4 (which implements `flock` with its
own locks) see one lock for all their clients.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator

LOCK_FILE = ".lock"


class WorkdirInUseError(OSError):
  """Another run holds the workdir."""


def _describe(record: dict) -> str:
  """ "pid 123 on host-a since 2026-12-07 13:00:00 (involution-train --workdir runs/x)"."""
  if not record:
    return "holder unknown"
  command = " ".join(record.get("command", []))
  return f"pid {record.get('pid')} on {record.get('host')} since {record.get('started')}" + (
    f" ({command})" if command else ""
  )


def _read_record(fd: int) -> dict:
  """The holder's record in the lock file ({} where empty or unreadable)."""
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    record = json.loads(os.read(fd, 1 << 16) or b"{}")
    return record if isinstance(record, dict) else {}
  except (OSError, ValueError):
    return {}


def _lock_open_file(path: str, workdir: str) -> int:
  """An open descriptor of `path` holding its exclusive lock."""
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_record(fd)
      os.close(fd)
      raise WorkdirInUseError(
        f"workdir {workdir} is in use by another training run ({_describe(holder)}); "
        "wait for it to end (or stop it), or use another workdir"
      ) from None
    try:  # the last holder may have removed the file between our open and our lock
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        return fd
    except FileNotFoundError:
      pass
    os.close(fd)


@contextlib.contextmanager
def hold(workdir: str, log: Callable[[str], None] = print) -> Iterator[None]:
  """Holds `workdir`'s lock (the folder is created) until the block ends.

  Raises:
    WorkdirInUseError: another run, in this process or any other, holds it.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = _lock_open_file(path, workdir)
  try:
    stale = _read_record(fd)
    if stale:
      log(
        f"workdir {workdir}: the run that held it ({_describe(stale)}) ended without "
        "releasing it; taken over"
      )
    record = dict(
      pid=os.getpid(),
      host=socket.gethostname(),
      started=datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
      command=[os.path.basename(sys.argv[0])] + sys.argv[1:],
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):  # while still holding it: a run that
      os.unlink(path)  # opened this file meanwhile finds it gone and retries on a new one
    os.close(fd)
