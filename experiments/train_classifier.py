r"""Train an evaluation classifier and write its weights and manifest.

python -m experiments.train_classifier --config=experiments/configs/classifier_mnist.py \
    --out_dir=classifiers
python -m experiments.train_classifier --config=experiments/configs/classifier_kannada.py \
    --out_dir=classifiers

writes <out_dir>/<dataset>.msgpack and <dataset>.json (default out_dir: the weights shipped in
jaxgan/evaluation/weights/) and prints the accuracy on every held-out split (Kannada-MNIST: test
and Dig-MNIST). With the same config and seed, a CPU run on the kind of processor that trained
the shipped file reproduces it bit for bit. Writing over a shipped file (MNIST, Kannada-MNIST) is
refused before training, unless --replace_shipped: the evaluation figures depend on that
classifier; train into --out_dir=FOLDER to reproduce or vary it.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from jaxgan import console  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':  # before jax and TensorFlow load, which takes seconds
  console.take_stop_signals()

import json
import platform
import sys
import time

import flax
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxgan import atomic, data
from jaxgan.data.builders import TEST_SPLITS
from jaxgan.evaluation import classifier, weights

_OUT_DIR = flags.DEFINE_string('out_dir', str(weights.SHIPPED_DIR),
                               'Folder the weights and their manifest are written to.')
_REPLACE_SHIPPED = flags.DEFINE_bool(
    'replace_shipped', False, 'Let this training overwrite the shipped weights (every '
    'evaluation figure changes with the classifier).')
config_flags.DEFINE_config_file('config', 'experiments/configs/classifier_mnist.py',
                                'Classifier training config file.', lock_config=True)


def main(argv):
  del argv  # flags only: console.run refuses other arguments
  console.setup_logging()
  config = console.config_from_flag(console.CLASSIFIER_CONFIG)
  classifier.validate_config(config)  # before the recipe check and the minutes of training
  if not _OUT_DIR.value:  # '' would write into whatever folder the command runs in
    raise app.UsageError('--out_dir is empty: name the folder to write the weights to, e.g. '
                         '--out_dir=classifiers, or leave the flag out for the shipped folder')
  path = weights.weights_path(config.dataset, _OUT_DIR.value)
  if os.path.exists(_OUT_DIR.value) and not os.path.isdir(_OUT_DIR.value):
    raise ValueError(f'--out_dir={_OUT_DIR.value} is a file, not a folder: name a folder for '
                     f'{path.name}')
  unwritable = atomic.unwritable_folder(path)
  if unwritable:  # before the minutes of training, not after
    raise OSError(f'--out_dir={_OUT_DIR.value}: {unwritable} is not writable here: name a '
                  'folder you can write')
  if not _REPLACE_SHIPPED.value:
    weights.check_shipped_recipe(path, json.loads(config.to_json()))
  start = time.perf_counter()
  params = classifier.train_classifier(config)
  train_seconds = time.perf_counter() - start
  held_out = list(TEST_SPLITS[config.dataset])
  accuracy = {}
  for split in held_out:
    images, labels = data.load_split(config.dataset, split, data_dir=config.data_dir or None,
                                     manual_dir=config.manual_dir or None)
    accuracy[split] = round(classifier.accuracy(params, images, labels), 6)
  manifest = weights.save(
      params, path, dataset=config.dataset, accuracy=accuracy,
      train_seconds=round(train_seconds, 1), config=json.loads(config.to_json()),
      command=' '.join(['python -m experiments.train_classifier'] + sys.argv[1:]),
      versions=dict(jax=jax.__version__, flax=flax.__version__, python=platform.python_version(),
                    platform=jax.default_backend()))
  logging.info('wrote %s (%d bytes, sha256 %s)', path, manifest['num_bytes'], manifest['sha256'])
  print(f'{config.dataset}: ' + ', '.join(f'{split} accuracy {value:.2%}'
                                           for split, value in accuracy.items()) +
        f'; trained in {train_seconds / 60:.1f} min; sha256 {manifest["sha256"]}', flush=True)


if __name__ == '__main__':
  console.run(main)
