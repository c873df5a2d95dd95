"""Data: sources, preprocessing and grain pipelines (no model code).

- `pipeline`: `Dataset`, the sharded training iterator and evaluation batches.
- `classification`: digits (bundled), image folders, TFDS; `Preprocess`.
- `dense`: digit scenes, Cityscapes, COCO; `DensePreprocess`; COCO AP.
- `imagenet`: ImageNet-1k class names and input statistics.
- `text`, `labelled_text`: byte-level text for language models; labelled text.
- `cache`: the folder downloads go to (pretrained weights, the sentiment wheel).
"""
