"""Shared test fixtures. The test process simulates 8 CPU devices (see tests/README.md)."""

import atexit
import os
import shutil
import tempfile

# How XLA compiles for this CPU (before jax starts; child processes inherit it): the suite's
# time is mostly XLA compiling small programs once each (about half of it; tracing and
# lowering a quarter), so the compiler is set for compile time, the program's semantics kept:
# - LLVM at -O1 instead of -O2: programs compile 25-60% faster (Mask R-CNN's train step
#   31 -> 24 s, its init 19 -> 7 s) and run as fast;
# - fusions emitted by XLA's classic elemental emitter instead of its newer MLIR fusion
#   emitters: 10-20% less compile time, as fast to run (tests/README.md has the figures).
# Code generation only (no fast math either way); a fused multiply-add may round differently.
# A level set in XLA_FLAGS already is kept (e.g. to run the suite at -O2), as is an emitter
# choice.
_COMPILE_FOR_THE_SUITE = {
  "xla_backend_optimization_level": "1",
  "xla_cpu_use_fusion_emitters": "false",
}
_flags = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
  [_flags] + [f"--{k}={v}" for k, v in _COMPILE_FOR_THE_SUITE.items() if k not in _flags]
).strip()

# One XLA compilation cache for the whole run: both xdist workers and every child process
# (they inherit the environment) reuse what another already compiled. Most programs here
# compile in under a second, below jax's default threshold, so every one is kept. Made
# fresh per run and removed at its end, so a run's time never depends on an earlier one;
# a cache directory already set is used as it is (e.g. to keep one between runs).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="involution-jax-xla-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats enabled."""
  with jax.enable_x64(True):
    yield


# Optional dependencies (extras `torch`, `tfds`, `coco`; CI installs them all): a test that
# needs one asks for its fixture and is skipped, with the reason, where it is missing.
@pytest.fixture(scope="session")
def torch():
  return pytest.importorskip("torch", reason="needs the torch extra (pip install -e '.[torch]')")


@pytest.fixture
def tfds(tmp_path, monkeypatch):
  module = pytest.importorskip(
    "tensorflow_datasets", reason="needs the tfds extra (pip install -e '.[tfds]')"
  )
  # TFDS makes an empty temporary directory whenever it looks for a dataset's
  # metadata outside data_dir (mock data, unprepared datasets): keep them here.
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  return module


@pytest.fixture(scope="session")
def pycocotools():
  return pytest.importorskip(
    "pycocotools", reason="needs the coco extra (pip install -e '.[coco]')"
  )
