"""Sampling weights that show the discriminator more of the rare writing styles.

A conditional GAN draws each class's common styles and too few of its rare ones (open loops,
thin 9s, crossed 7s): a recogniser trained on its digits then misses exactly those test digits
(README, Results: where the CAS gap lies). Drawing D's real digits with these weights puts more
of the rare styles in front of it, so G is pushed to draw them too; the price is a generated
distribution further from the real one (fcd).

A digit's rarity is the distance, in the evaluation classifier's unit embedding, to its k-th
nearest digit of the same class, divided by the median of that distance over its class. Its
weight is min(rarity ** power, cap), scaled so that every class keeps its share of the split.
"""
from __future__ import annotations

import numpy as np

from jaxgan.evaluation import classifier, metrics, weights

NEIGHBOURS = 10  # k: a digit with fewer than k close neighbours in its class is a rare style
_ROWS_PER_CHUNK = 2048  # distance rows at a time: 2048 x 6,000 float32 is 49 MB


def rarity(embeddings: np.ndarray, labels: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
  """Each row's distance to its `neighbours`-th nearest same-class row (unit vectors),
  relative to its class's median; a class of n rows uses neighbour min(k, n - 1), and a class
  of one row (or whose median is 0) gets 1."""
  units = metrics.unit_vectors(np.asarray(embeddings, np.float32))
  relative = np.ones(len(labels), np.float64)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    k = min(neighbours, len(members) - 1)
    if k == 0:
      continue
    distance = np.empty(len(members), np.float64)
    for start in range(0, len(members), _ROWS_PER_CHUNK):
      rows = units[members[start:start + _ROWS_PER_CHUNK]]
      squared = 2.0 - 2.0 * rows @ units[members].T  # column of the row itself: ~0, rank 0
      kth = np.partition(squared, k, axis=1)[:, k]
      distance[start:start + len(rows)] = np.sqrt(np.maximum(kth, 0.0))
    median = np.median(distance)
    if median > 0:
      relative[members] = distance / median
  return relative


def sampling_weights(rarities: np.ndarray, labels: np.ndarray, power: float,
                     cap: float) -> np.ndarray:
  """Probabilities (sum 1) proportional to min(rarity ** power, cap) within each class, each
  class keeping its share of the examples."""
  with np.errstate(over='ignore'):  # a large power overflows to inf, which the cap then caps
    raw = np.minimum(np.asarray(rarities, np.float64) ** power, cap)
  probabilities = np.empty_like(raw)
  for label in np.unique(labels):
    members = labels == label
    probabilities[members] = raw[members] * (members.mean() / raw[members].sum())
  return probabilities / probabilities.sum()


def rarity_weights(dataset: str, images: np.ndarray, labels: np.ndarray, *, power: float,
                   cap: float) -> np.ndarray:
  """`sampling_weights` of a split's uint8 images (N, 28, 28, 1), in the embedding of the
  evaluation classifier shipped for `dataset`."""
  params, _ = weights.load_shipped(dataset)
  embeddings, _ = classifier.embed_and_predict(params, images)
  return sampling_weights(rarity(embeddings, labels), labels, power, cap)
