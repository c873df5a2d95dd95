"""Top-1 / top-5 of a checkpoint or of official weights:

    python experiments/eval.py --config=experiments/configs/rednet50_imagenet.py \
        --weights=rednet50.pdparams --config.data_dir=/data/imagenet
"""

from absl import app

from involution_jax import cli

if __name__ == "__main__":
  app.run(cli.eval_main)
