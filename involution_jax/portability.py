"""Lowering for accelerators this machine does not have: is a program TPU- and GPU-ready?

JAX lowers a jitted function for any platform on a CPU-only machine
(`traced.lower(lowering_platforms=...)`, abstract inputs, nothing allocated).
A program that lowers can still fail on the target if it carries a construct
only this machine's runtime provides; `unportable_ops` reads the lowered
StableHLO for them:

- custom calls other than the allowed ones (`ALLOWED_CUSTOM_CALLS`): host
  callbacks (`jax.pure_callback`, `jax.debug.print`), CPU-only kernels
  registered through `jax.ffi` (but for the CPU itself, this package's own
  1-D loops, `ops/native.py`), ...;
- host transfers (send / recv / infeed / outfeed);
- float64 for TPU, which XLA:TPU does not support.

Used by the lowering tests, `involution-train --dry_run` and export.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax

from involution_jax.ops.native import TARGETS as NATIVE_TARGETS

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
# Pallas' Triton kernels (the op's method="pallas") on GPUs, the 1-D C++ loops (what
# "auto" runs for 1-D on one CPU device) on the CPU, and jax.export's checks of symbolic
# shapes (which jax resolves when an artifact is called); nothing else anywhere.
TRITON_CALL = "__gpu$xla.gpu.triton"
_EVERYWHERE = frozenset({"shape_assertion"})
ALLOWED_CUSTOM_CALLS = {
  "cpu": _EVERYWHERE | {target for target, _ in NATIVE_TARGETS.values()},
  "cuda": _EVERYWHERE | {TRITON_CALL},
  "rocm": _EVERYWHERE | {TRITON_CALL},
  "tpu": _EVERYWHERE,
}
_CUSTOM_CALL = re.compile(r"custom_call\s*@([\w$.]+)|call_target_name\s*=\s*\"([^\"]+)\"")
_HOST_TRANSFER = re.compile(r"\bstablehlo\.(send|recv|infeed|outfeed)\b")
_FLOAT64 = re.compile(r"\b(?:f64|complex<f64>)\b")


class PortabilityError(ValueError):
  """A program does not lower for a platform, or carries what that platform cannot run."""


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
  """The names unchanged, or a ValueError naming one outside `PLATFORMS`."""
  for p in platforms:
    if p not in PLATFORMS:
      raise ValueError(f"unknown platform {p!r}; expected some of {', '.join(PLATFORMS)}")
  if not platforms:
    raise ValueError(f"no platform given; expected some of {', '.join(PLATFORMS)}")
  return tuple(platforms)


def custom_calls(module_text: str) -> set[str]:
  """The custom-call targets named in a lowered module's text."""
  return {a or b for a, b in _CUSTOM_CALL.findall(module_text)}


def unportable_ops(module_text: str, platform: str) -> list[str]:
  """What in a module lowered for `platform` that platform cannot run; [] when nothing."""
  problems = [
    f"custom call @{name}"
    + (
      " (a host callback: pure_callback / io_callback / debug.print)" if "callback" in name else ""
    )
    for name in sorted(custom_calls(module_text) - ALLOWED_CUSTOM_CALLS[platform])
  ]
  problems += [
    f"host transfer stablehlo.{op}" for op in sorted(set(_HOST_TRANSFER.findall(module_text)))
  ]
  if platform == "tpu" and _FLOAT64.search(module_text):
    problems.append("float64 values (XLA:TPU has no float64)")
  return problems


def local_platform() -> str:
  """This process's backend as a lowering platform name ("cpu", "cuda", "rocm", "tpu")."""
  device = jax.devices()[0]
  if device.platform == "gpu":
    return "rocm" if "rocm" in device.client.platform_version.lower() else "cuda"
  return device.platform


def lower_traced(traced: jax.stages.Traced, platform: str | None = None) -> jax.stages.Lowered:
  """A traced function (`jax.jit(f).trace(*args)`, abstract args with shardings)
  lowered for `platform` (None: this machine's backend, ready to compile) and
  checked by `unportable_ops`.

  Raises:
    PortabilityError: naming the platform and what failed to lower or cannot run there.
  """
  target = check_platforms([platform])[0] if platform else local_platform()
  try:
    lowered = traced.lower(lowering_platforms=(platform,)) if platform else traced.lower()
  except Exception as e:  # any lowering rule may refuse the platform, each with its own type
    raise PortabilityError(f"does not lower for {target}: {type(e).__name__}: {e}") from e
  problems = unportable_ops(lowered.as_text(), target)
  if problems:
    raise PortabilityError(f"lowered for {target}, but it cannot run there: {'; '.join(problems)}")
  return lowered


def lower_for(jitted, args: Sequence, platform: str | None = None) -> jax.stages.Lowered:
  """`lower_traced(jitted.trace(*args), platform)` for a `jax.jit` function."""
  try:
    traced = jitted.trace(*args)
  except Exception as e:  # callbacks and custom rules may refuse while tracing
    raise PortabilityError(f"does not trace: {type(e).__name__}: {e}") from e
  return lower_traced(traced, platform)
