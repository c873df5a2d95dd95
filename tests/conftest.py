"""Shared test fixtures. The test process simulates 8 CPU devices."""

import tempfile

import jax
import pytest

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
