"""Multi-digit images: single digits set side by side into one image per digit string.

For OCR tests (postal codes, cheque amounts, form fields): each digit is cropped to its ink
columns and placed after the previous one with a random gap (negative gaps make digits touch
or overlap, as handwriting does), shifted up or down by a few pixels, and the string is placed
at a random offset in a canvas whose width depends only on the string length, so strings of
one length stack into one array. Overlapping ink is combined with a maximum (0 = background,
as in the IDX files). Every digit's ink columns in the result are returned as its box.
"""
from __future__ import annotations

import numpy as np

INK_THRESHOLD = 32  # uint8 level from which a column counts as ink when cropping a digit


def canvas_width(length: int, digit_width: int, max_gap: int) -> int:
  """Width of the image of a `length`-digit string: room for uncropped digits and the widest
  gaps, so every string fits."""
  return length * digit_width + (length - 1) * max(max_gap, 0)


def _ink_columns(digit: np.ndarray) -> tuple[int, int]:
  """[start, stop) of the columns holding ink; the middle half of a blank digit."""
  columns = np.flatnonzero((digit >= INK_THRESHOLD).any(axis=0))
  if columns.size == 0:
    width = digit.shape[1]
    return width // 4, width - width // 4
  return int(columns[0]), int(columns[-1]) + 1


def _room_above_and_below(digit: np.ndarray) -> tuple[int, int]:
  """Rows `digit` can move up and down without its ink leaving the image."""
  rows = np.flatnonzero((digit >= INK_THRESHOLD).any(axis=1))
  if rows.size == 0:
    return digit.shape[0], digit.shape[0]
  return int(rows[0]), digit.shape[0] - 1 - int(rows[-1])


def _shifted_rows(digit: np.ndarray, shift: int) -> np.ndarray:
  """`digit` moved down by `shift` rows (up when negative), blank rows coming in."""
  out = np.zeros_like(digit)
  if shift >= 0:
    out[shift:] = digit[:digit.shape[0] - shift]
  else:
    out[:shift] = digit[-shift:]
  return out


def check_layout(digit_shape: tuple[int, int], min_gap: int, max_gap: int, jitter: int) -> None:
  """Raise a one-line ValueError for gaps or a jitter that `compose` cannot lay out."""
  height, width = digit_shape
  if min_gap > max_gap:
    raise ValueError(f'min_gap={min_gap} is above max_gap={max_gap}: swap them')
  if min_gap <= -width:
    raise ValueError(f'min_gap={min_gap} would overlap neighbouring digits by a whole digit '
                     f'width: keep it above -{width}')
  if not 0 <= jitter < height:
    raise ValueError(f'jitter={jitter} is outside 0..{height - 1} rows (the digit height)')


def compose(digits: np.ndarray, lengths: np.ndarray, rng: np.random.Generator, *,
            min_gap: int = -2, max_gap: int = 4,
            jitter: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """Set each string's digits side by side.

  `digits`: uint8 (N, L, H, W), string n's digits in order; only its first `lengths[n]` are
  used (the rest is padding). `min_gap`..`max_gap`: pixels between the ink of neighbouring
  digits, drawn uniformly per pair; a negative gap overlaps two digits by at most the narrower
  one's ink width less a column, so that both edges of each box lie right of its left
  neighbour's and the boxes keep the string's order (a thin 1 is never drawn inside or before
  the digit before it). `jitter`: each digit moves up or down by up to this many rows,
  as far as its blank rows allow (a larger draw stops where its ink reaches the edge: a digit
  of a string for OCR never loses ink it is labelled by).
  Returns images uint8 (N, H, canvas_width(L, W, max gap)) and boxes int32 (N, L, 2), each
  digit's [start, stop) ink columns in its image ((-1, -1) for padding).
  """
  digits = np.asarray(digits)
  if digits.ndim != 4 or digits.dtype != np.uint8:
    raise ValueError(f'digits must be uint8 (strings, length, height, width), got '
                     f'{digits.dtype} {digits.shape}')
  num, max_length, height, width = digits.shape
  lengths = np.asarray(lengths)
  if (lengths.shape != (num,) or not np.issubdtype(lengths.dtype, np.integer)
      or (lengths < 1).any() or (lengths > max_length).any()):
    raise ValueError(f'lengths must hold one integer length in 1..{max_length} per string, got '
                     f'{lengths.dtype} {lengths.shape}')
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f'rng must be a numpy Generator, got {type(rng).__name__}: pass '
                     'np.random.default_rng(seed)')
  check_layout((height, width), min_gap, max_gap, jitter)
  canvas = canvas_width(max_length, width, max_gap)
  images = np.zeros((num, height, canvas), np.uint8)
  boxes = np.full((num, max_length, 2), -1, np.int32)
  for n in range(num):
    crops = [digits[n, i][:, slice(*_ink_columns(digits[n, i]))] for i in range(lengths[n])]
    gaps = rng.integers(min_gap, max_gap, size=len(crops) - 1, endpoint=True)
    shifts = rng.integers(-jitter, jitter, size=len(crops), endpoint=True)
    widths = np.asarray([crop.shape[1] for crop in crops])
    gaps = np.maximum(gaps, 1 - np.minimum(widths[:-1], widths[1:]))
    starts = np.concatenate([[0], np.cumsum(widths[:-1] + gaps)])
    used = int((starts + widths).max())
    starts += rng.integers(0, canvas - used, endpoint=True)
    for i, (start, crop, shift) in enumerate(zip(starts, crops, shifts)):
      above, below = _room_above_and_below(crop)
      region = images[n, :, start:start + widths[i]]
      np.maximum(region, _shifted_rows(crop, int(np.clip(shift, -above, below))), out=region)
      boxes[n, i] = start, start + widths[i]
  return images, boxes


def cut_out(images: np.ndarray, boxes: np.ndarray, width: int = 28) -> np.ndarray:
  """Each digit of composed strings back as a single digit: the columns of its box (with any
  ink a neighbour left there) centred in `width` columns. uint8 (number of boxes, H, width),
  string by string, padding boxes skipped."""
  images, boxes = np.asarray(images), np.asarray(boxes)
  if images.ndim != 3 or boxes.ndim != 3 or boxes.shape[::2] != (len(images), 2):
    raise ValueError(f'images must be (strings, height, width) and boxes (strings, length, 2), '
                     f'got {images.shape} and {boxes.shape}: pass the arrays compose returned')
  cells = []
  for image, string_boxes in zip(images, boxes):
    for start, stop in string_boxes:
      if start < 0:
        continue
      cell = np.zeros((image.shape[0], width), np.uint8)
      columns = min(stop - start, width)
      left = (width - columns) // 2
      cell[:, left:left + columns] = image[:, start:start + columns]
      cells.append(cell)
  return np.stack(cells) if cells else np.zeros((0, images.shape[1], width), np.uint8)


def random_strings(rng: np.random.Generator, num: int, length: int,
                   num_classes: int = 10) -> np.ndarray:
  """int32 (num, length) digit classes, uniform and independent."""
  return rng.integers(0, num_classes, size=(num, length)).astype(np.int32)


def parse_strings(texts: list[str], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """Digit strings such as '90210' -> (int32 classes (N, L) padded with -1, lengths (N,))."""
  if isinstance(texts, str):  # its characters would be read as one-digit strings
    raise ValueError(f'texts must be a list of digit strings, got the string {texts!r}: pass '
                     f'[{texts!r}]')
  if not texts:
    raise ValueError('no strings given: pass digit strings, e.g. 90210,1234')
  for text in texts:
    if not text.isdigit() or not text.isascii():
      raise ValueError(f'{text!r} is not a string of digits 0-9: pass e.g. 90210')
    if max(int(c) for c in text) >= num_classes:
      raise ValueError(f'{text!r}: the model has classes 0..{num_classes - 1} only')
  lengths = np.asarray([len(text) for text in texts], np.int32)
  classes = np.full((len(texts), lengths.max()), -1, np.int32)
  for n, text in enumerate(texts):
    classes[n, :len(text)] = [int(c) for c in text]
  return classes, lengths
