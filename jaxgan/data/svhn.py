"""SVHN's cropped digits (Netzer et al. 2011): the official .mat files, and the MNIST format.

The Street View House Numbers are 32x32 colour photographs of house-number digits. jaxgan's
networks, evaluation classifiers and metrics are built for 28x28 grey digits, so `load_split`
hands SVHN over in that format (`to_mnist_format`): grey by ITU-R BT.601 luma (0.299 R +
0.587 G + 0.114 B, the weights of PIL's and TensorFlow's greyscale conversions), then 32x32 ->
28x28 by area averaging (each output pixel the mean of the 8/7 x 8/7 source square it covers),
rounded to the nearest grey level. Polarity stays as photographed: SVHN holds dark digits on
light backgrounds as well as light on dark.

Every check of a .mat file raises DataError with a one-line message naming the file, the
problem and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from jaxgan.data.idx import IMAGE_SIDE, DataError

# Split -> file, as named in the official release (DOWNLOAD_URL).
MAT_FILES = {'train': 'train_32x32.mat', 'test': 'test_32x32.mat', 'extra': 'extra_32x32.mat'}
# 531,131 less difficult training digits in a 1.3 GB file: a manual dir may go without them.
OPTIONAL_SPLITS = frozenset({'extra'})
PHOTO_SIDE = 32
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
DOWNLOAD_URL = 'http://ufldl.stanford.edu/housenumbers/'
_REFETCH = f'copy or download the file again from {DOWNLOAD_URL}'
# Converted this many images at a time: float64 copies of a whole split would take gigabytes.
_CHUNK = 8192


def read_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 (N, 32, 32, 3), labels uint8 (N,) in 0..9) of one official .mat file.

  The files store the images as X (32, 32, 3, N) and the labels as y (N, 1) in 1..10, with 10
  for the digit 0; tfds's svhn_cropped builder reads them the same way.
  """
  path = Path(path)
  if not path.is_file():
    raise DataError(f'{path}: file not found: check the path or copy the file there')
  try:
    contents = scipy.io.loadmat(os.fspath(path), variable_names=('X', 'y'))
  # scipy reads a file of 4-126 bytes past its end while sniffing the version: IndexError.
  except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, NotImplementedError,
          IndexError) as error:
    reason = ' '.join(str(error).split())
    raise DataError(f'{path}: not a readable MATLAB file ({reason}): {_REFETCH}') from None
  if 'X' not in contents or 'y' not in contents:
    raise DataError(f'{path}: holds no X (images) and y (labels) arrays, so it is not one of '
                    f"SVHN's cropped-digit files: use {', '.join(MAT_FILES.values())}")
  images, labels = contents['X'], contents['y']
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (PHOTO_SIDE,
                                                                          PHOTO_SIDE, 3):
    raise DataError(f'{path}: X is {images.dtype} {images.shape}, expected uint8 (32, 32, 3, N) '
                    f'colour images: {_REFETCH}')
  count = images.shape[3]
  if labels.shape != (count, 1):
    raise DataError(f'{path}: X holds {count} images but y has shape {labels.shape}, expected '
                    f'({count}, 1): {_REFETCH}')
  if count and not (labels.min() >= 1 and labels.max() <= 10):
    raise DataError(f'{path}: labels range over {labels.min()}..{labels.max()}, expected 1..10 '
                    f'(10 for the digit 0): {_REFETCH}')
  return np.ascontiguousarray(np.moveaxis(images, 3, 0)), labels[:, 0] % 10


def area_weights(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in): row i holds how much of output pixel i each input pixel covers, as a
  share of the output pixel, so each row sums to 1."""
  scale = size_in / size_out
  starts = np.arange(size_out)[:, None] * scale
  pixels = np.arange(size_in)[None, :]
  overlap = np.minimum(starts + scale, pixels + 1) - np.maximum(starts, pixels)
  return np.clip(overlap, 0.0, None) / scale


def to_mnist_format(images: np.ndarray) -> np.ndarray:
  """uint8 (N, 32, 32, 3) colour photographs -> uint8 (N, 28, 28, 1) grey digits (module doc)."""
  if images.dtype != np.uint8 or images.shape[1:] != (PHOTO_SIDE, PHOTO_SIDE, 3):
    raise DataError(f'SVHN images are {images.dtype} {images.shape[1:]}, expected uint8 '
                    '(32, 32, 3): pass the photographs as tfds stores them')
  weights = area_weights(PHOTO_SIDE, IMAGE_SIDE)
  out = np.empty((len(images), IMAGE_SIDE, IMAGE_SIDE, 1), np.uint8)
  for start in range(0, len(images), _CHUNK):
    luma = images[start:start + _CHUNK] @ np.asarray(LUMA_WEIGHTS)
    grey = np.einsum('ij,njk,lk->nil', weights, luma, weights, optimize=True)
    out[start:start + _CHUNK, ..., 0] = np.clip(np.rint(grey), 0, 255)
  return out
