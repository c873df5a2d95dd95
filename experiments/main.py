"""Train and evaluate RedNet: python experiments/main.py --config=... --workdir=...

Flags and the loop live in the library (`involution_jax.cli`, `involution_jax.train`);
`involution-train` is the same command, installed.
"""

from absl import app

from involution_jax import cli

if __name__ == "__main__":
  app.run(cli.train_main)
