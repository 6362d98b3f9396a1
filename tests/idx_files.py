"""Writers of tiny IDX files (and SVHN .mat files) and manual dirs, for tests that need data on
disk."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import scipy.io

from jaxgan.data import builders, svhn
from jaxgan.data.idx import IMAGES_MAGIC, LABELS_MAGIC


def write_idx(
    path: Path,
    array: np.ndarray,
    *,
    magic: int | None = None,
    truncate: int = 0,
    compress: bool = True,
) -> Path:
  """Write uint8 images (N, rows, cols) or labels (N,) as an IDX file, gzipped if `compress`.

  `magic` overrides the magic number and `truncate` drops that many bytes from the
  end of the (uncompressed) content, to produce broken files.
  """
  array = np.asarray(array, dtype=np.uint8)
  if magic is None:
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
  content = struct.pack(f'>{array.ndim + 1}I', magic, *array.shape) + array.tobytes()
  content = content[: len(content) - truncate]
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(gzip.compress(content) if compress else content)
  return path


def tiny_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
  return images, rng.integers(0, 10, count, dtype=np.uint8)


def tiny_photos(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """uint8 (count, 32, 32, 3) colour images and uint8 labels in 0..9, as SVHN's."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
  return images, rng.integers(0, 10, count, dtype=np.uint8)


def write_svhn_mat(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
  """An SVHN .mat file as the official ones are: X (32, 32, 3, N), y (N, 1) with 10 for 0."""
  path.parent.mkdir(parents=True, exist_ok=True)
  labels = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
  scipy.io.savemat(path, {'X': np.moveaxis(images, 0, 3), 'y': labels})
  return path


def write_manual_dir(root: Path, sizes: dict[str, dict[str, int]]) -> dict:
  """Tiny versions of the official files under root/<dataset>/, with their file names.

  `sizes` maps dataset -> split -> example count; returns dataset -> split -> (images, labels)
  as the files hold them (SVHN: the colour photographs).
  """
  arrays = {}
  for dataset_index, (name, splits) in enumerate(sizes.items()):
    arrays[name] = {}
    for split, count in splits.items():
      if name == 'svhn':
        photos, labels = tiny_photos(count, seed=100 * dataset_index + count)
        write_svhn_mat(Path(root) / name / svhn.MAT_FILES[split], photos, labels)
        arrays[name][split] = (photos, labels)
        continue
      images, labels = tiny_digits(count, seed=100 * dataset_index + count)
      images_file, labels_file = builders.IDX_FILES[name][split]
      write_idx(Path(root) / name / images_file, images)
      write_idx(Path(root) / name / labels_file, labels)
      arrays[name][split] = (images, labels)
  return arrays
