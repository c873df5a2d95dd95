"""RedNet-101 on ImageNet with the published recipe (see imagenet.py)."""

import os
import runpy


def get_config():
  recipe = runpy.run_path(os.path.join(os.path.dirname(__file__), "imagenet.py"))
  return recipe["get_config"]("rednet101")
