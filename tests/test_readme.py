"""The README's Python code runs as written: each section's blocks in order, in one
namespace, in a folder that holds what the README's commands before them would have made
(a trained language model, a downloaded or converted RedNet-50: here with random values,
never from the internet)."""

import os
import pickle
import re

import numpy as np
import pytest
from helpers import ROOT, load_config, paddle_state, random_rednet_variables, save_random_checkpoint

from involution_jax.weights import mmcls, zoo

FENCE = re.compile(r"^( *)```(\w*)\s*$")


def python_blocks(text: str) -> dict[str, list[str]]:
  """{section heading: [its Python blocks, dedented]} in the order they appear."""
  sections, heading, block, language = {}, "", [], None
  for line in text.splitlines():
    fence = FENCE.match(line)
    if language is None and fence:  # a block opens
      language, indent, block = fence.group(2), len(fence.group(1)), []
    elif language is not None and fence and not fence.group(2):  # it closes
      if language == "python":
        sections.setdefault(heading, []).append("\n".join(block))
      language = None
    elif language is not None:
      block.append(line[indent:])
    elif line.startswith("#"):
      heading = line.lstrip("#").strip()
  return sections


with open(os.path.join(ROOT, "README.md")) as f:
  SECTIONS = python_blocks(f.read())


def test_the_reader_finds_every_python_block():
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  opened = len(re.findall(r"^ *```python\s*$", text, flags=re.M))
  assert opened == sum(len(blocks) for blocks in SECTIONS.values()) >= 10
  text = "# A\n```python\nx = 1\n```\n```bash\n# not a heading\n```\n  ```python\n  y = 2\n  ```\n"
  assert python_blocks(text) == {"A": ["x = 1", "y = 2"]}


@pytest.fixture(scope="module")
def rednet50_weights():
  """A RedNet-50 with random values (positive variances), as mmcls arrays."""
  return mmcls.from_flax(random_rednet_variables(50))


def _prepare(section: str, folder, state, monkeypatch, request) -> None:
  """What the README's earlier commands leave for `section`'s code."""
  cache = folder / "cache"
  monkeypatch.setenv(zoo.CACHE_ENV, str(cache))
  monkeypatch.setenv(zoo.URL_ENV, "http://127.0.0.1:9/nothing-here")  # never the internet
  if section in ("Pretrained weights", "Flax NNX"):  # "downloaded once, then cached"
    cache.mkdir()
    with open(zoo.cached_path("rednet50"), "wb") as f:
      pickle.dump(paddle_state(state), f, protocol=4)
  if section == "Official and other weight files":
    torch = request.getfixturevalue("torch")
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, "rednet50.pth")
  if section == "Inference":  # involution-train --config charlm:involution --workdir runs/charlm
    config = load_config("charlm", "involution", context=16, batch_size=8, eval_batch_size=8)
    config.model_kwargs.update(width=16, depth=1, kernel_sizes=(3,), heads=2, group_channels=8)
    save_random_checkpoint(str(folder / "runs" / "charlm"), config=config)


# Over 20 s for some sections: they run RedNet-50 (converted, pretrained, in NNX) and
# compile the dense models, as written.
@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_the_code_of_each_section_runs(section, tmp_path, monkeypatch, rednet50_weights, request):
  monkeypatch.chdir(tmp_path)
  _prepare(section, tmp_path, rednet50_weights, monkeypatch, request)
  namespace = {"__name__": "__readme__"}
  for number, block in enumerate(SECTIONS[section]):
    code = compile(block, f"README.md, {section}, block {number + 1}", "exec")
    exec(code, namespace)  # the README's own code
