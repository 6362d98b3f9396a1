"""Digit datasets: official files (IDX; SVHN's .mat) -> tfds prepared copies -> arrays -> batches.

Importing this package registers the `kannada_mnist` tfds builder.
"""

from jaxgan.data.builders import DATASETS, check_preparable, prepare
from jaxgan.data.idx import DataError
from jaxgan.data.pipeline import BatchIterator, load_split, training_batches

__all__ = ['DATASETS', 'BatchIterator', 'DataError', 'check_preparable', 'load_split', 'prepare',
           'training_batches']
