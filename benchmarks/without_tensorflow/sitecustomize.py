r"""Runs the benchmarks on a machine without TensorFlow (so without tfds), from exported arrays.

jaxgan reads its datasets through tfds, which needs TensorFlow; an accelerator image may hold
jax but not TensorFlow, and a GPU machine reached only through a job runner may install nothing.
With this folder first on PYTHONPATH and JAXGAN_ARRAYS_DIR set, every Python process (the
benchmarks start one per measurement) finds `tensorflow_datasets` replaced by an inert stand-in
(jaxgan's builder classes still import; none of them is ever called) and
`jaxgan.data.pipeline.read_split`, the one reader that needs tfds, answering from
`<JAXGAN_ARRAYS_DIR>/<dataset>_<split>.npz`, the very arrays tfds gives on a machine that has
it. Everything else (load_split's turning upright and subsetting, BatchIterator, the step,
generation) is jaxgan's own code.

  # where tfds works: export the splits the benchmarks read (offline: JAXGAN_MANUAL_DIR=DIR)
  python benchmarks/without_tensorflow/sitecustomize.py --out=ARRAYS mnist:train kannada_mnist:train
  # on the machine without TensorFlow
  JAXGAN_ARRAYS_DIR=ARRAYS PYTHONPATH=benchmarks/without_tensorflow:. \
      python benchmarks/train_throughput.py ...
"""
from __future__ import annotations

import os
import sys
import types


class _Inert(type):
  """Metaclass: every attribute of a stand-in class is the stand-in class again."""

  def __getattr__(cls, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Anything


class _Anything(metaclass=_Inert):
  """Subclassable, callable, decorating: what jaxgan's builders module asks of tfds at import."""

  def __init_subclass__(cls, **kwargs):  # swallows tfds's `skip_registration=True`
    pass

  def __init__(self, *args, **kwargs):
    pass


def _module_attribute(name):
  if name.startswith('__'):  # __file__, __path__...: absent, as introspection expects
    raise AttributeError(name)
  return _Anything


def _stand_in_tfds() -> None:
  def module(name):
    stand_in = types.ModuleType(name)
    stand_in.__getattr__ = _module_attribute
    sys.modules[name] = stand_in
    return stand_in

  tfds = module('tensorflow_datasets')
  tfds.builder_cls = lambda name: _Anything  # a class to subclass, as tfds's own answer is
  tfds.core = module('tensorflow_datasets.core')
  tfds.core.utils = module('tensorflow_datasets.core.utils')


def _serve_exported_arrays(folder: str) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgan import data  # pylint: disable=g-import-not-at-top
  from jaxgan.data import pipeline  # pylint: disable=g-import-not-at-top

  def read_exported(name, split, data_dir=None, manual_dir=None):
    del data_dir, manual_dir  # the arrays were exported from a prepared copy
    path = os.path.join(folder, f'{name}_{split}.npz')
    if not os.path.exists(path):
      raise data.DataError(f'no exported {name} {split!r} split at {path}: export it with '
                           f'python benchmarks/without_tensorflow/sitecustomize.py '
                           f'--out={folder} {name}:{split} where tfds works')
    with np.load(path) as arrays:
      return arrays['images'], arrays['labels']

  # Only the reading needs tfds; load_split's turning upright and subsetting stay jaxgan's.
  pipeline.read_split = read_exported


def _export(argv) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
      __file__)))))
  from jaxgan.data import pipeline  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description='export dataset splits as .npz for '
                                   'JAXGAN_ARRAYS_DIR')
  parser.add_argument('--out', required=True)
  parser.add_argument('splits', nargs='+', help='DATASET:SPLIT, e.g. mnist:train')
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  for item in args.splits:
    name, split = item.split(':')
    images, labels = pipeline.read_split(
        name, split, manual_dir=os.environ.get('JAXGAN_MANUAL_DIR') or None)
    path = os.path.join(args.out, f'{name}_{split}.npz')
    np.savez_compressed(path, images=images, labels=labels)
    print(f'{path}: {len(labels)} examples')


if __name__ == '__main__':
  _export(sys.argv[1:])
elif os.environ.get('JAXGAN_ARRAYS_DIR'):
  _stand_in_tfds()
  _serve_exported_arrays(os.environ['JAXGAN_ARRAYS_DIR'])
