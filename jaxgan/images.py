"""Pixels into the networks' range, sample grids, and atomic image and GIF writes."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Sequence

import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxgan import atomic


# x / 127.5 - 1 for every pixel value x, rounded once by numpy. XLA compiles a division by a
# constant as a multiplication by its reciprocal, which rounds 205 of the 256 values one ulp
# differently; looking them up keeps the floats, and so every trained value, as they were.
_PIXEL_FLOATS = np.arange(256, dtype=np.float32) / 127.5 - 1.0


def from_pixels(pixels):
  """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1), the range the networks work in.

  The input pipeline ships pixels and the train step converts them on the device: a quarter of
  the bytes to gather and copy per batch, and no float arithmetic on the host.
  """
  return jnp.asarray(_PIXEL_FLOATS)[pixels]


# GIF stores each side, and each frame's duration in hundredths of a second, in 16 bits.
GIF_MAX_SIDE = 65535
GIF_MAX_FRAME_MS = 655350


def grid_size(rows: int, cols: int, cell: tuple[int, int], *, scale: int = 1,
              pad: int = 1) -> tuple[int, int]:
  """(width, height) in pixels of `grid`'s picture of rows x cols cells of `cell` (H, W)."""
  height, width = cell
  return (cols * (width + pad) + pad) * scale, (rows * (height + pad) + pad) * scale


def grid(images: np.ndarray, rows: int, cols: int | None = None, *, scale: int = 1,
         pad: int = 1) -> Image.Image:
  """Tile uint8 images (N, H, W) row-major into a grayscale picture, white gaps between cells."""
  cols = rows if cols is None else cols
  images = np.asarray(images)[: rows * cols]
  height, width = images.shape[1:3]
  canvas_width, canvas_height = grid_size(rows, cols, (height, width), pad=pad)
  canvas = np.full((canvas_height, canvas_width), 255, np.uint8)
  for index, image in enumerate(images):
    r, c = divmod(index, cols)
    top, left = pad + r * (height + pad), pad + c * (width + pad)
    canvas[top:top + height, left:left + width] = image
  picture = Image.fromarray(canvas)  # 2-D uint8 -> 8-bit grayscale
  return picture.resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)


def save_atomic(picture: Image.Image, path: str, **save_kwargs) -> None:
  """Write next to `path`, then rename: a killed run never leaves a half-written image."""
  save_together([(picture, path, save_kwargs)])


def gif_settings(frames: Sequence[Image.Image], duration_ms: int = 400) -> tuple[Image.Image,
                                                                                dict]:
  """(first frame, save settings) of an animated GIF of `frames`, looping."""
  first, *rest = frames
  return first, dict(save_all=True, append_images=rest, duration=duration_ms, loop=0)


def save_gif_atomic(frames: Sequence[Image.Image], path: str, *, duration_ms: int = 400) -> None:
  first, settings = gif_settings(frames, duration_ms)
  save_atomic(first, path, **settings)


def save_together(pictures: Sequence[tuple[Image.Image, str, dict]]) -> None:
  """Write each (picture, path, save settings) next to its path, then rename them all: files
  that belong together (a strip and its GIF) are all replaced or, when one fails (a full
  disk), none is."""
  with contextlib.ExitStack() as renames:
    for picture, path, settings in pictures:
      renames.enter_context(picture_written(picture, path, **settings))


@contextlib.contextmanager
def picture_written(picture: Image.Image, path: str, **save_kwargs) -> Iterator[None]:
  """Write `picture` next to `path`; renamed onto it when the block ends, or removed if the
  block fails (see save_together)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic.replacing(path) as tmp:
    picture.save(tmp, format=os.path.splitext(path)[1][1:].upper() or 'PNG', **save_kwargs)
    yield
