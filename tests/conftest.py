"""Shared test fixtures. The test process simulates 8 CPU devices."""

import atexit
import os
import shutil
import tempfile

import jax
import pytest

# The tests build the same small programs again and again (every training run
# compiles its steps anew, often in a child process): one persistent compilation
# cache for the whole run, which xdist's workers and the children inherit through
# the environment, takes about a third off the training tests. It starts empty,
# so nothing carries over from one run (or one version of the code) to the next.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="involution-jax-tests-xla-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
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
