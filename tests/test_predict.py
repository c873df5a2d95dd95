"""Prediction: library, CLI on a folder with a corrupt file, converted weights."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import save_random_checkpoint
from PIL import Image

from involution_jax.cli import predict
from involution_jax.data.classification import IMAGE_EXTENSIONS
from involution_jax.inference.predictor import Predictor, image_files
from involution_jax.tasks import TwoStageDetection, task_named


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("ckpt")
  model, variables, info = save_random_checkpoint(str(path))
  return str(path), model, variables, info


@pytest.fixture
def image_folder(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / "sub").mkdir()
  paths = []
  for i in range(5):
    path = tmp_path / ("sub" if i % 2 else ".") / f"digit{i}.png"
    Image.fromarray(rng.integers(0, 255, (13, 11), dtype=np.uint8)).save(path)
    paths.append(str(path.resolve()))
  (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  (tmp_path / "readme.txt").write_text("ignored")
  return tmp_path, sorted(paths)


def test_predictions_match_the_model_and_pad_batches(checkpoint, image_folder):
  path, model, variables, info = checkpoint
  folder, images = image_folder
  predictor = Predictor.load(path, batch_size=4)
  results = predictor.classify(images, top_k=3)
  prep = task_named(info.task).preprocess_from_info(info)
  x = np.stack([prep.eval({"path": p, "label": 0})["image"] for p in images])
  probs = np.asarray(jax.nn.softmax(model.apply(variables, x, train=False)))
  for r, p in zip(results, probs):
    assert [t["index"] for t in r["top"]] == list(np.argsort(-p)[:3])
    np.testing.assert_allclose(
      [t["probability"] for t in r["top"]], np.sort(p)[::-1][:3], rtol=1e-5, atol=1e-6
    )
    assert r["top"][0]["class"] == str(r["top"][0]["index"])
  assert predictor._predict._cache_size() == 1  # 5 images, batches of 4: one compile


def test_images_in_memory_predict_as_their_files(checkpoint, image_folder):
  """PIL images and raw pixel arrays (NumPy, JAX; one, a list, or a batch) get the
  preprocessing the weights record, as files do."""
  predictor = Predictor.load(checkpoint[0], batch_size=4)
  paths = image_folder[1]
  from_files = predictor.predict(paths, top_k=3)
  pictures = [Image.open(p) for p in paths]
  grey = [np.asarray(p) for p in pictures]  # (13, 11) uint8: the files are greyscale
  expected = [{"top": r["top"]} for r in from_files]
  assert predictor.predict(pictures, top_k=3) == expected
  assert predictor.predict(grey, top_k=3) == expected
  assert predictor.predict([g.astype(np.float32) for g in grey], top_k=3) == expected
  rgb = np.stack([np.repeat(g[..., None], 3, -1) for g in grey])  # (5, 13, 11, 3)
  assert predictor.predict(rgb, top_k=3) == expected
  assert predictor.predict(jax.numpy.asarray(rgb), top_k=3) == expected

  class Tensor:  # another library's array (a torch tensor, say): one image, not its rows
    def __array__(self, dtype=None, copy=None):
      return rgb[1]

  assert len(predictor.predict(Tensor(), top_k=3)) == 1
  one = predictor.predict(paths[:1], top_k=3)  # a batch of one: another program
  assert predictor.predict(rgb[0], top_k=3) == [{"top": one[0]["top"]}]
  assert predictor.predict(paths[0], top_k=3) == one
  mixed = predictor.predict([paths[0], pictures[1], grey[2]], top_k=3)
  assert mixed == [from_files[0], *expected[1:3]]
  with pytest.raises(
    ValueError, match=r"input 0: an image array must be .* got shape \(3, 13, 11\)"
  ):
    predictor.predict([rgb[0].transpose(2, 0, 1)])
  with pytest.raises(ValueError, match=r"input 1: raw pixel values must be in \[0, 255\]"):
    predictor.predict([grey[0], grey[1] - 128.0])
  with pytest.raises(ValueError, match=r"input 0: float pixel values all in \[0, 1\] look scaled"):
    predictor.predict(grey[0] / 255.0)
  # A 16-bit image: scaled to 8 bits in memory as when its file is read.
  deep = image_folder[0] / "deep.png"
  Image.fromarray(grey[0].astype(np.uint16) * 257).save(deep)
  with Image.open(deep) as picture:
    assert picture.mode.startswith("I")
    assert predictor.predict(picture, top_k=3) == [
      {"top": r["top"]} for r in predictor.predict(str(deep), top_k=3)
    ]


def test_batches_follow_the_images_not_the_batch_size(checkpoint, image_folder):
  """One image with --batch-size 100000 must not allocate 100000 images' worth."""
  predictor = Predictor.load(checkpoint[0], batch_size=100_000)
  shapes, forward = [], predictor._predict
  predictor._predict = lambda v, x: (shapes.append(x.shape[0]), forward(v, x))[1]
  images = image_folder[1]
  predictor.classify(images[:1])
  predictor.classify(images[:3])  # 3 images: a batch of 4, the power of two above
  assert shapes == [1, 4]
  predictor.batch_size = 2
  predictor.classify(images[:3])
  assert shapes[2:] == [2, 2]


def test_cli_reports_the_corrupt_file_and_classifies_the_rest(checkpoint, image_folder, capsys):
  path = checkpoint[0]
  folder, images = image_folder
  assert predict.main([path, str(folder), "--json", "--top-k", "2"]) == 0
  results = json.loads(capsys.readouterr().out)
  assert len(results) == 6
  broken = [r for r in results if "error" in r]
  assert [r["path"] for r in broken] == [str(folder / "corrupt.jpg")]
  assert "cannot identify image file" in broken[0]["error"] or "Error" in broken[0]["error"]
  assert all(len(r["top"]) == 2 for r in results if "error" not in r)
  assert predict.main([path, str(folder / "digit0.png")]) == 0
  table = capsys.readouterr().out
  assert table.startswith(str(folder / "digit0.png")) and "%" in table
  assert predict.main([path, str(folder / "missing.png")]) == 1
  assert "no such image" in capsys.readouterr().err


def test_official_weights_predict_imagenet_classes(tmp_path, torch):
  from torch_rednet import Classifier, randomise_

  model = randomise_(Classifier(26)).eval()
  weights = tmp_path / "rednet26.pth"
  torch.save({"meta": {}, "state_dict": model.state_dict()}, weights)
  image = tmp_path / "photo.jpg"
  Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 260, 3), np.uint8)).save(image)
  predictor = Predictor.load(str(weights), batch_size=2)
  (result,) = predictor.classify([str(image)], top_k=5)
  assert len(predictor.class_names) == 1000 and predictor.class_names[1] == "goldfish"
  # The same 256 -> 224 centre crop and ImageNet normalisation, through the official model.
  x = predictor.preprocess.eval({"path": str(image), "label": 0})["image"]
  assert x.shape == (224, 224, 3)
  with torch.no_grad():
    want = torch.softmax(model(torch.from_numpy(x[None]).permute(0, 3, 1, 2)), -1)[0].numpy()
  assert [t["index"] for t in result["top"]] == list(np.argsort(-want)[:5])
  np.testing.assert_allclose(result["top"][0]["probability"], want.max(), rtol=1e-3)


def test_image_files_expands_folders_in_order(image_folder):
  folder, images = image_folder
  found = image_files([str(folder)])
  assert sorted(f for f in found if not f.endswith("corrupt.jpg")) == images
  assert all(f.lower().endswith(IMAGE_EXTENSIONS) for f in found)


# Over 20 s: a dense model's forward compiles for the predictor and again for main.
@pytest.mark.parametrize("name", ["digitscenes_seg", "digitscenes_det"])
def test_dense_models_predict_and_draw(name, tmp_path, capsys):
  from helpers import load_config

  config = load_config(name, num_train_scenes=4)

  def confident(variables):  # class scores of 0.5 (not the prior's 0.01): detections to check
    if name.endswith("det"):
      variables["params"]["bbox_head"]["retina_cls"]["bias"][:] = 0.0

  save_random_checkpoint(str(tmp_path / "ckpt"), config=config, edit=confident)
  rng = np.random.default_rng(0)
  paths = []
  for i, size in enumerate(((48, 48), (37, 61))):
    path = tmp_path / f"scene{i}.png"
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    paths.append(str(path))
  predictor = Predictor.load(str(tmp_path / "ckpt"), batch_size=2)
  results = predictor.predict(paths)
  in_memory = predictor.predict([np.asarray(Image.open(p)) for p in paths])
  for r, m in zip(results, in_memory):
    if name.endswith("seg"):
      np.testing.assert_array_equal(m["mask"], r["mask"])
    else:
      assert m["detections"] == r["detections"]
  for r, size in zip(results, ((48, 48), (37, 61))):
    if name.endswith("seg"):
      assert r["mask"].shape == size and r["mask"].max() < 11
      assert sum(r["class_fractions"].values()) == pytest.approx(1.0)
    else:
      assert r["detections"], "no detection to check"
      for d in r["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= size[1] and 0 <= y1 < y2 <= size[0]  # clipped to the image
        assert d["class"] == str(d["index"]) and 0 < d["score"] <= 1
  out = tmp_path / "drawn"
  assert (
    predict.main(
      [
        str(tmp_path / "ckpt"),
        *paths,
        "--out-dir",
        str(out),
        "--json",
        "--min-score",
        "0.1",
        "--batch-size",
        "2",  # the predictor's: the same program, the same scores to the bit
      ]
    )
    == 0
  )
  printed = json.loads(capsys.readouterr().out)
  assert len(printed) == 2 and all("mask" not in r for r in printed)
  if name.endswith("det"):
    for r, shown in zip(results, printed):
      assert shown["detections"] == [d for d in r["detections"] if d["score"] >= 0.1]
      assert shown["detections"], "--min-score 0.1 left no detection to compare"
  for path, (h, w) in zip(paths, ((48, 48), (37, 61))):
    with Image.open(out / (Path(path).stem + ".png")) as png:
      if name.endswith("seg"):  # the image, and the legend of its classes on the right
        assert png.width > w and png.height >= h
      else:
        assert png.size == (w, h)


# Over 20 s: Mask R-CNN's inference compiles for the predictor and again for main.
def test_mask_rcnn_predicts_boxes_and_instance_masks(tmp_path, capsys):
  from helpers import load_config

  config = load_config("digitscenes_rcnn", "mask_conv", num_train_scenes=4)
  save_random_checkpoint(str(tmp_path / "ckpt"), config=config)
  path = tmp_path / "scene.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 61, 3), np.uint8)).save(path)
  [result] = Predictor.load(str(tmp_path / "ckpt"), batch_size=1).predict([str(path)])
  assert result["detections"]  # random weights: softmax scores ~1/11 pass the 0.05 threshold
  for d in result["detections"]:  # at the image's size (pasting: tests/test_instances.py)
    assert d["mask"].shape == (37, 61) and d["mask"].dtype == bool
  out = tmp_path / "drawn"
  flags = ["--out-dir", str(out), "--json", "--min-score", "0", "--batch-size", "1"]
  assert predict.main([str(tmp_path / "ckpt"), str(path), *flags]) == 0
  [printed] = json.loads(capsys.readouterr().out)
  assert [d["mask_pixels"] for d in printed["detections"]] == [
    int(d["mask"].sum()) for d in result["detections"]
  ]
  with Image.open(out / "scene.png") as png:
    assert png.size == (61, 37)


def test_a_box_in_the_padding_is_dropped_and_masks_stay_with_their_boxes(tmp_path):
  # A 60 x 30 image: the model sees it at half size, padded below.
  out = dict(  # in the model's input pixels; box 1 lies below the image (y > 15)
    boxes=np.array([[2, 2, 10, 10], [2, 20, 10, 28], [0, 10, 40, 20], [0, 0, 0, 0]], np.float32),
    scores=np.array([0.9, 0.8, 0.7, 0.0], np.float32),
    classes=np.array([0, 1, 2, 0]),
    valid=np.array([True, True, True, False]),
    masks=np.stack([np.zeros((28, 28)), np.ones((28, 28)), np.ones((28, 28)), np.zeros((28, 28))]),
  )
  example = {"scale": np.float32(0.5)}
  result = TwoStageDetection().prediction(out, example, (60, 30), ["a", "b", "c"], 5)
  first, second = result["detections"]
  assert (first["index"], first["box"]) == (0, [4.0, 4.0, 20.0, 20.0])
  assert (second["index"], second["box"]) == (2, [0.0, 20.0, 60.0, 30.0])  # clipped below
  assert first["mask"].shape == second["mask"].shape == (30, 60)
  assert not first["mask"].any()  # each mask with its own box: box 1's ones went with it
  assert second["mask"][20:].all() and not second["mask"][:20].any()
