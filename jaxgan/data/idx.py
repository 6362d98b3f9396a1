"""Read and validate IDX files (the MNIST file format), gzip-compressed or plain.

An IDX images file is a 16-byte big-endian header (magic 2051, count, rows, cols)
followed by count*rows*cols uint8 pixels; a labels file is an 8-byte header
(magic 2049, count) followed by count uint8 labels. Every check raises DataError
with a one-line message naming the file, the problem and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIDE = 28

_GZIP_SIGNATURE = b'\x1f\x8b'
_REFETCH = 'copy or download the file again'


class DataError(ValueError):
  """A dataset file or folder is missing, malformed or inconsistent."""


def find_files(folder: str | os.PathLike, file_names: list[str]) -> list[Path]:
  """Paths of `file_names` inside `folder`, in the same order.

  Raises DataError if the folder or any of the files is missing.
  """
  folder = Path(folder)
  expected = ', '.join(file_names)
  if not folder.is_dir():
    raise DataError(f'folder {folder} not found: put {expected} in it, or point the scripts at '
                    'the folder that holds <dataset>/ with them (JAXGAN_MANUAL_DIR, '
                    '--config.data.manual_dir, --manual_dir) or at a data folder where the '
                    'dataset is prepared (TFDS_DATA_DIR, --config.data.data_dir, --data_dir)')
  missing = [name for name in file_names if not (folder / name).is_file()]
  if missing:
    raise DataError(
        f"folder {folder} is missing {', '.join(missing)} (expected all of: {expected}): "
        'copy the missing files there'
    )
  return [folder / name for name in file_names]


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
  """All images of an IDX images file as a uint8 array of shape (N, 28, 28)."""
  path = Path(path)
  data = _read_bytes(path)
  _, count, rows, cols = _header(path, data, IMAGES_MAGIC, '>IIII')
  if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
    raise DataError(
        f'{path}: images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}: '
        'use a file of a 28x28 digits dataset'
    )
  _check_size(
      path,
      data,
      header_size=16,
      payload_size=count * rows * cols,
      what=f'{count} images of {rows}x{cols}',
  )
  return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols).copy()


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
  """All labels of an IDX labels file as a uint8 array of shape (N,)."""
  path = Path(path)
  data = _read_bytes(path)
  _, count = _header(path, data, LABELS_MAGIC, '>II')
  _check_size(path, data, header_size=8, payload_size=count, what=f'{count} labels')
  return np.frombuffer(data, np.uint8, offset=8).copy()


def read_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
  """(images (N, 28, 28) uint8, labels (N,) uint8) of one split; the counts must match."""
  images = read_idx_images(images_path)
  labels = read_idx_labels(labels_path)
  if len(images) != len(labels):
    raise DataError(
        f'{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels: '
        'use the images and labels files of the same split'
    )
  return images, labels


def content_sha256(path: str | os.PathLike) -> str:
  """The SHA-256 of the file's IDX content (decompressed if gzip), which does not depend on how
  it was compressed."""
  return hashlib.sha256(_read_bytes(Path(path))).hexdigest()


def _read_bytes(path: Path) -> bytes:
  """The file's content, decompressed if it is gzip (detected by its signature, not its name)."""
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    raise DataError(f'{path}: file not found: check the path or copy the file there') from None
  except (PermissionError, IsADirectoryError) as error:
    raise DataError(f'{path}: cannot read it ({error.strerror.lower()}): make it a file this '
                    f'user can read, or {_REFETCH} to a folder of yours') from None
  if not data.startswith(_GZIP_SIGNATURE):
    return data
  try:
    return gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as error:
    raise DataError(f'{path}: corrupt gzip data ({error}): {_REFETCH}') from None


def _header(path: Path, data: bytes, magic: int, layout: str) -> tuple[int, ...]:
  header_size = struct.calcsize(layout)
  if len(data) < header_size:
    raise DataError(
        f'{path}: truncated: found {len(data)} bytes, shorter than the {header_size}-byte IDX '
        f'header: {_REFETCH}'
    )
  fields = struct.unpack_from(layout, data)
  if fields[0] != magic:
    kind = 'images' if magic == IMAGES_MAGIC else 'labels'
    raise DataError(
        f'{path}: wrong magic number {fields[0]}, expected {magic} for an IDX {kind} file: '
        f'pass the {kind} file of the split (or {_REFETCH} if it is corrupt)'
    )
  return fields


def _check_size(path: Path, data: bytes, *, header_size: int, payload_size: int, what: str) -> None:
  expected = header_size + payload_size
  if len(data) < expected:
    problem = 'truncated'
  elif len(data) > expected:
    problem = 'too long'
  else:
    return
  raise DataError(f'{path}: {problem}: header announces {what}, i.e. {expected} bytes '
                  f'(uncompressed), found {len(data)}: {_REFETCH}')
