"""Evaluation-classifier weights: flax msgpack (arrays only, never pickle) plus a JSON manifest.

`<name>.msgpack` holds `flax.serialization.to_bytes(params)`; `<name>.json` beside it records the
file's SHA-256, how it was trained and how well it scores. `load` refuses a file whose digest
differs from the manifest's, so every metric is computed with exactly the shipped classifier.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import flax.serialization
import jax

from jaxgan import atomic
from jaxgan.evaluation import classifier

SHIPPED_DIR = Path(__file__).parent / 'weights'
# The command that trains each classifier (a shipped one into --out_dir, or with
# --replace_shipped over it), named in every error about it.
TRAIN_COMMANDS = {
    'mnist': 'python -m experiments.train_classifier '
             '--config=experiments/configs/classifier_mnist.py',
    'kannada_mnist': 'python -m experiments.train_classifier '
                     '--config=experiments/configs/classifier_kannada.py',
    'emnist_digits': 'python -m experiments.train_classifier '
                     '--config=experiments/configs/classifier_emnist.py',
    'svhn': 'python -m experiments.train_classifier '
            '--config=experiments/configs/classifier_svhn.py',
}
# Datasets whose classifier is not shipped (the machine that trained the shipped ones had no
# copy of them): each user trains it once with its TRAIN_COMMANDS entry, into SHIPPED_DIR.
NOT_SHIPPED = frozenset({'emnist_digits', 'svhn'})


def weights_path(dataset: str, directory: str | os.PathLike = SHIPPED_DIR) -> Path:
  """`<directory>/<dataset>.msgpack`; refuses datasets without an evaluation classifier."""
  if dataset not in TRAIN_COMMANDS:
    raise ValueError(f'no evaluation classifier for dataset {dataset!r}: choose one of '
                     f'{", ".join(TRAIN_COMMANDS)}')
  return Path(directory) / f'{dataset}.msgpack'


# Where the training digits are read from, not how the classifier is trained.
_DATA_LOCATION_FIELDS = ('manual_dir', 'data_dir')


def check_shipped_recipe(path: str | os.PathLike, config: dict) -> None:
  """Refuses to overwrite a shipped weights file: every fcd, label_accuracy and cas figure
  would silently change with it (another recipe than its manifest records; or the same one on
  another kind of processor, which may round otherwise). Other folders pass, and so does a user's
  own classifier (NOT_SHIPPED) in the shipped folder trained by its recipe again."""
  path = Path(path)
  if path.resolve().parent != SHIPPED_DIR.resolve() or not path.exists():
    return
  shipped = read_manifest(path).get('config', {})
  changed = [f'{field} {shipped.get(field)!r} -> {config.get(field)!r}'
             for field in sorted(set(shipped) | set(config))
             if field not in _DATA_LOCATION_FIELDS and shipped.get(field) != config.get(field)]
  if changed:
    raise ValueError(f'this config changes the recipe of the shipped {path} '
                     f'({", ".join(changed)}), and every fcd, label_accuracy and cas figure '
                     'would change with it: write it elsewhere with --out_dir=FOLDER, or pass '
                     '--replace_shipped to replace the shipped classifier on purpose')
  if path.stem not in NOT_SHIPPED:
    raise ValueError(f'{path} is the shipped classifier, which every fcd, label_accuracy and '
                     'cas figure depends on, and another kind of processor may train other '
                     'bytes by its recipe: train it into --out_dir=FOLDER and compare the '
                     'sha256 with the shipped manifest\'s, or pass --replace_shipped to replace it '
                     'on purpose')


def manifest_path(path: str | os.PathLike) -> Path:
  return Path(path).with_suffix('.json')


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
  with atomic.replacing(path) as tmp:
    Path(tmp).write_bytes(data)


def save(params, path: str | os.PathLike, **record) -> dict:
  """Write `params` to `path` and its manifest (`manifest`); returns the manifest."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  manifest_record = manifest(params, path, **record)
  _write_atomic(path, flax.serialization.to_bytes(params))
  _write_atomic(manifest_path(path),
                (json.dumps(manifest_record, indent=2, sort_keys=True) + '\n').encode())
  return manifest_record


def manifest(params, path: str | os.PathLike, **record) -> dict:
  """The manifest of `params` saved to `path`: `record` plus the file's name, SHA-256 and size."""
  data = flax.serialization.to_bytes(params)
  return dict(record, file=Path(path).name, sha256=sha256(data), num_bytes=len(data))


def read_manifest(path: str | os.PathLike) -> dict:
  manifest_file = manifest_path(path)
  if not manifest_file.is_file():
    raise FileNotFoundError(f'{manifest_file} not found: it records the checksum of {path}; '
                            'restore both files (git checkout) or train them again with '
                            'python -m experiments.train_classifier')
  return json.loads(manifest_file.read_text())


def load(path: str | os.PathLike, model=classifier.Classifier()) -> tuple[dict, dict]:
  """(params, manifest) of a weights file, after checking its SHA-256 against the manifest."""
  path = Path(path)
  manifest = read_manifest(path)
  regenerate = manifest.get('command', 'python -m experiments.train_classifier')
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: restore it (git checkout) or train it again '
                            f'with {regenerate}')
  data = path.read_bytes()
  actual = sha256(data)
  if actual != manifest.get('sha256'):  # a manifest without one is as damaged as a wrong one
    raise ValueError(f'{path} has SHA-256 {actual}, but {manifest_path(path).name} expects '
                     f'{manifest.get("sha256")}: the file is damaged or was changed; restore it '
                     f'(git checkout {path}) or train it again with {regenerate}'
                     f'{"" if path.stem in NOT_SHIPPED else " --replace_shipped"}')
  target = jax.eval_shape(functools.partial(classifier.init_params, model), jax.random.key(0))
  try:
    params = flax.serialization.from_bytes(target, data)
  except (ValueError, KeyError) as error:
    raise ValueError(f'{path} does not hold {type(model).__name__} weights ({error}): train '
                     f'them again with {regenerate}') from None
  mismatched = [
      jax.tree_util.keystr(key) for (key, want), got in zip(
          jax.tree_util.tree_leaves_with_path(target), jax.tree.leaves(params))
      if want.shape != got.shape or want.dtype != got.dtype]
  if mismatched:
    raise ValueError(f'{path} holds weights of other shapes or dtypes than '
                     f'{type(model).__name__} at {", ".join(mismatched)}: train them again with '
                     f'{regenerate}')
  return params, manifest


def check_available(dataset: str) -> None:
  """Raises FileNotFoundError, naming the command that trains it, when `dataset`'s evaluation
  classifier is one jaxgan does not ship and it has not been trained here yet."""
  path = weights_path(dataset)
  if dataset in NOT_SHIPPED and not (path.is_file() or manifest_path(path).is_file()):
    raise FileNotFoundError(f'no {dataset} evaluation classifier yet (jaxgan ships none for it): '
                            f'train it once with {TRAIN_COMMANDS[dataset]}, which writes {path}')


def load_shipped(dataset: str) -> tuple[dict, dict]:
  """(params, manifest) of the evaluation classifier for `dataset` (shipped, or trained here
  for the NOT_SHIPPED datasets)."""
  check_available(dataset)
  return load(weights_path(dataset))
