"""One training run per workdir: a lock file the kernel releases when its holder dies.

`hold(workdir)` takes `workdir/.lock` with `flock` (in a multi-process run, process 0
does: `hold_on_process_0`): a second run on the same workdir gets `WorkdirInUseError`
naming the holder (process, host, start time, command) before it writes anything. The
lock belongs to the holder's open file, so a holder killed with SIGKILL releases it too;
the next run finds the dead holder's record, says so and takes the lock over (also when
another user's run left it). On a file system that cannot lock (some Lustre and NFS
mounts) the run says so and goes on without the check; NFS emulates `flock` with
per-process locks, so there the check holds between processes and hosts but not within
one process.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

LOCK_FILE = ".lock"
# flock's answers on a file system that does not lock.
_CANNOT_LOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


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
    record = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    return record if isinstance(record, dict) else {}
  except (OSError, ValueError):
    return {}


def _open_locked(path: str, workdir: str) -> tuple[int, dict] | None:
  """(a writable descriptor of `path` holding its lock, the stale record found in it);
  None where the file system cannot lock."""
  stale = {}
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:  # another user's file: test its lock read-only
      fd = os.open(path, os.O_RDONLY)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_record(fd)
      os.close(fd)
      raise WorkdirInUseError(
        f"workdir {workdir} is in use by another training run ({_describe(holder)}); "
        "wait for it to end (or stop it), or use another workdir"
      ) from None
    except OSError as e:
      os.close(fd)
      if e.errno in _CANNOT_LOCK:
        return None
      raise
    try:  # the last holder may have removed the file between our open and our lock
      current = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      current = False
    if current:
      stale = _read_record(fd) or stale
      if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR:
        return fd, stale
      os.unlink(path)  # a stale file we cannot write: removed under its lock, made anew
    os.close(fd)


@contextlib.contextmanager
def hold(workdir: str, log: Callable[[str], None] = print) -> Iterator[None]:
  """Holds `workdir`'s lock (the folder is created) until the block ends.

  Raises:
    WorkdirInUseError: another run holds it.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  locked = _open_locked(path, workdir)
  if locked is None:
    log(
      f"workdir {workdir}: this file system cannot lock {path}; training without the "
      "check that no other run uses the workdir"
    )
    yield
    return
  fd, stale = locked
  try:
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


@contextlib.contextmanager
def hold_on_process_0(workdir: str, log: Callable[[str], None] = print) -> Iterator[None]:
  """`hold` by process 0 of a run (the one that writes the workdir's files); when it
  cannot, every process raises, so none waits for the others in a collective."""
  with contextlib.ExitStack() as stack:
    error = None
    if jax.process_index() == 0:
      try:
        stack.enter_context(hold(workdir, log))
      except Exception as e:  # told to every process below, then raised
        error = e
    failed_somewhere = jax.process_count() > 1 and multihost_utils.broadcast_one_to_all(
      np.int32(error is not None)
    )
    if failed_somewhere and error is None:
      error = WorkdirInUseError(f"workdir {workdir} is in use (see process 0)")
    if error is not None:
      raise error
    yield
