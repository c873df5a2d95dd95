"""1-D involution as hand-written CPU loops (`native_1d.cc`), called through XLA's FFI.

XLA's CPU loops for the 1-D kernel gradient reduce each tap over a group's 16
channels into a minor axis of taps, at ~1.7 GMAC/s (benchmarks/README lists
the formulations tried); a C++ loop that computes each output row whole runs
the three partials near memory bandwidth. `primitive.py` lowers to them on the
CPU, for `method="auto"`, 1-D, float32 or float64, one device, not for export
(a custom call to a library built here is not portable); everything else keeps
the XLA loops, and so does everything when the build fails.

The library is compiled on first use with the C++ compiler (`$CXX`, default
`c++`) against jaxlib's FFI headers, for this CPU (`-march=native`), and kept
in `$INVOLUTION_JAX_CACHE/native/`, named by a hash of the source, jaxlib,
compiler and CPU, beside the SHA-256 of the file built: a library that no longer
matches it (a damaged file, an edit) is built again, never loaded. This guards against
accidents; anyone who can write the cache folder can also rewrite the digest.
`INVOLUTION_JAX_NATIVE=0` turns it off.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import numpy as np

from involution_jax.host.cache import cache_dir, sha256_of

ENV = "INVOLUTION_JAX_NATIVE"
SOURCE = Path(__file__).with_name("native_1d.cc")
# The partial each FFI target computes (the names of `primitive.py`) -> (target, C symbol).
TARGETS = {
  "out": ("involution_jax_forward_1d", "InvolutionForward1D"),
  "x": ("involution_jax_grad_x_1d", "InvolutionGradX1D"),
  "kernel": ("involution_jax_grad_kernel_1d", "InvolutionGradKernel1D"),
}
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _cpu_signature() -> str:
  """What `-march=native` compiles for: the CPU's model and feature flags."""
  try:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    return "\n".join(sorted({line for line in info if line.startswith(("flags", "model name"))}))
  except OSError:
    return platform.processor() or platform.machine()


def _compile(compiler: list[str], target: Path) -> None:
  """Builds the shared library into `target` (atomically: concurrent builds are safe)."""
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
    built = Path(tmp) / target.name
    command = [
      *compiler,
      "-O3",
      "-march=native",
      "-fopenmp-simd",
      "-std=c++17",
      "-shared",
      "-fPIC",
      "-w",
      f"-I{jax.ffi.include_dir()}",
      str(SOURCE),
      "-o",
      str(built),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode:
      last = (done.stderr.strip().splitlines() or ["no output"])[-1]
      raise RuntimeError(f"{shlex.join(command[:1])} exited {done.returncode}: {last}")
    recorded = Path(tmp) / "digest"
    recorded.write_text(sha256_of(built))
    os.replace(recorded, _digest_file(target))
    os.replace(built, target)


def _digest_file(library: Path) -> Path:
  """Where the SHA-256 of `library` is recorded when it is built."""
  return library.with_name(library.name + ".sha256")


def build_unless_intact(compiler: list[str], target: Path) -> None:
  """Builds the library into `target` unless it is there with the digest recorded when it
  was built; a changed or unrecorded file is reported and built again, never loaded.
  Processes that need it at once take turns (a lock file beside it): one builds, the
  others find it intact."""
  target.parent.mkdir(parents=True, exist_ok=True)
  with open(target.with_name(target.name + ".lock"), "w") as turn:
    fcntl.flock(turn, fcntl.LOCK_EX)
    _build_unless_intact(compiler, target)


def _build_unless_intact(compiler: list[str], target: Path) -> None:
  if target.exists():
    digest = _digest_file(target)
    recorded = digest.read_text().strip() if digest.exists() else None
    if recorded == sha256_of(target):
      return
    warnings.warn(
      f"involution_jax: {target} "
      + ("has no recorded digest" if recorded is None else "changed since it was built")
      + "; building it again",
      RuntimeWarning,
      stacklevel=4,
    )
  _compile(compiler, target)


@functools.cache
def library() -> ctypes.CDLL | None:
  """Builds (once per machine) and loads the library, registering its FFI targets.

  Returns None, after one warning, when it cannot be built or loaded; None
  silently when `INVOLUTION_JAX_NATIVE=0` or off Linux/macOS.
  """
  if os.environ.get(ENV, "1") == "0" or platform.system() not in ("Linux", "Darwin"):
    return None
  compiler = shlex.split(os.environ.get("CXX", "c++"))
  try:
    version = subprocess.run(
      [*compiler, "--version"], capture_output=True, text=True, timeout=60
    ).stdout
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), jax.__version__, version, _cpu_signature()):
      key.update(part if isinstance(part, bytes) else part.encode())
    target = Path(cache_dir()) / "native" / f"involution_1d-{key.hexdigest()[:16]}.so"
    build_unless_intact(compiler, target)
    lib = ctypes.cdll.LoadLibrary(str(target))
    for name, symbol in TARGETS.values():
      jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as error:
    warnings.warn(
      f"involution_jax: the native 1-D CPU loops are unavailable ({error}); using the "
      f"XLA loops (set {ENV}=0 to skip the attempt)",
      RuntimeWarning,
      stacklevel=2,
    )
    return None
  return lib


def _single_device(ctx) -> bool:
  """Lowered for one device, or per device inside a fully manual shard_map.

  A custom call in a partitioned program would be replicated by XLA's SPMD
  partitioner (its operands gathered onto every device); the XLA loops shard.
  """
  context = ctx.module_context.axis_context
  devices = getattr(context, "num_devices", None)
  if devices is not None:
    return devices == 1
  mesh, manual = getattr(context, "mesh", None), getattr(context, "manual_axes", None)
  return mesh is not None and manual is not None and set(manual) == set(mesh.axis_names)


def applies(ctx, avals, n: int) -> bool:
  """Whether this lowering can call the native loops (see the module docstring)."""
  return (
    n == 1
    and all(dtype == avals[0][1] for _, dtype in avals)
    and avals[0][1] in DTYPES
    and not ctx.module_context.lowering_parameters.for_export
    and _single_device(ctx)
    and library() is not None
  )


def lower(ctx, a, b, *, result: str, stride: int, dilation: int, low: int):
  """The custom call computing partial `result` from operands a, b (`primitive.py`'s order)."""
  rule = jax.ffi.ffi_lowering(TARGETS[result][0])
  return rule(ctx, a, b, stride=np.int64(stride), dilation=np.int64(dilation), low=np.int64(low))
