"""Timing, memory and bandwidth helpers shared by the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import jax
import numpy as np

# The PyTorch re-creation of the official model lives with the tests that check it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def best_time_s(
  fn: Callable[[], object],
  repeats: int = 5,
  warmup: int = 1,
  min_seconds: float = 0.25,
  max_repeats: int = 200,
) -> float:
  """Fastest wall-clock run of `fn` (outputs blocked on), in seconds.

  At least `repeats` runs, and more (up to `max_repeats`) until `min_seconds`
  have passed: a sub-millisecond op's best of five varied by 50% on this VM.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def compiled_temp_bytes(jitted, *args) -> int:
  """XLA's temporary buffer size for `jitted(*args)` (args and outputs excluded)."""
  return jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes


def copy_bandwidth_bytes_per_s(size_bytes: int = 256 << 20, repeats: int = 5) -> float:
  """Measured memory bandwidth of this machine: bytes read + written per second by a copy."""
  src = np.ones(size_bytes // 8)
  dst = np.empty_like(src)
  seconds = best_time_s(lambda: np.copyto(dst, src), repeats=repeats)
  return 2 * size_bytes / seconds


def mib(n_bytes: float) -> float:
  return n_bytes / 2**20


def print_table(header: list[str], rows: list[list[str]]) -> None:
  widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
  line = lambda cells: " | ".join(str(c).rjust(w) for c, w in zip(cells, widths))
  print(line(header))
  print("-+-".join("-" * w for w in widths))
  for row in rows:
    print(line(row))


def available_bytes() -> int:
  """Memory the system can still give (MemAvailable in /proc/meminfo)."""
  with open("/proc/meminfo") as f:
    fields = dict(line.split(":") for line in f)
  return int(fields["MemAvailable"].split()[0]) * 1024


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096


def peak_rss_growth(fn) -> float:
  """Peak resident-set growth (bytes) while `fn` runs, sampled every millisecond."""
  base, peak, done = rss_bytes(), [0], threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], rss_bytes())
      time.sleep(0.001)

  thread = threading.Thread(target=sample)
  thread.start()
  try:
    fn()
  finally:
    done.set()
    thread.join()
  return max(peak[0] - base, 0)


def peak_rss_growth_in_child(argv: list[str]) -> list[int]:
  """Runs `python *argv`, which prints integers (peak RSS growths) on its last line, in
  a child where glibc gives every freed block of >= 64 KiB back to the system
  (MALLOC_MMAP_THRESHOLD_), so that the resident set follows PyTorch's live memory:
  with glibc's defaults, memory a step frees and reuses stays resident and the peak
  growth undercounts it (RedNet-50: by ~800 MiB)."""
  child = subprocess.run(
    [sys.executable, *argv],
    env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"),
    capture_output=True,
    text=True,
    check=True,
  )
  return [int(v) for v in child.stdout.strip().splitlines()[-1].split()]
