"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image the
discriminator sees, real and generated alike, in both the discriminator and generator updates,
so the discriminator cannot memorise a small training set and the generator still gets
gradients through the augmentation.

`make(policy, axis_name)` returns `augment(images, key)`; each example's draw comes from
`fold_in(key, global_example_index)` (jaxgan.rng), so results do not depend on the device
count. Pixels moved in from outside the image or cut out take the data's background value -1
(images are in [-1, 1], background black), so augmented digits still look like digits.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxgan import rng

POLICIES = ('translation', 'cutout')
BACKGROUND = -1.0
# The DiffAugment paper's defaults: shifts up to 1/8 of the image size, a square of half the
# image size cut out.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5

Augment = Callable[[jax.Array, jax.Array], jax.Array]


def parse_policy(policy: str) -> tuple[str, ...]:
  """'translation,cutout' -> ('translation', 'cutout'); '' -> () (augmentation off)."""
  names = tuple(name.strip() for name in policy.split(',') if name.strip())
  unknown = [name for name in names if name not in POLICIES]
  if unknown:
    raise ValueError(f'unknown augment.policy entries {", ".join(map(repr, unknown))}: use a '
                     f'comma-separated subset of {", ".join(POLICIES)}, or "" for none')
  if len(set(names)) < len(names):  # each would be applied again, twice as strong
    raise ValueError(f'augment.policy={policy!r} names an augmentation twice: name each once')
  return names


def translate(images: jax.Array, key: jax.Array, axis_name: str | None = None,
              ratio: float = TRANSLATION_RATIO) -> jax.Array:
  """Shift each image by whole pixels, independently in y and x, uniformly in [-s, s] with
  s = round(ratio * size); vacated pixels become BACKGROUND."""
  batch, height, width = images.shape[:3]
  pad_y, pad_x = round(ratio * height), round(ratio * width)
  u = rng.uniform(key, batch, (2,), axis_name)
  # Offsets into the padded image: 0 .. 2*pad, i.e. shifts of pad .. -pad.
  offsets = jnp.floor(u * jnp.array([2 * pad_y + 1, 2 * pad_x + 1])).astype(jnp.int32)
  padded = jnp.pad(images, ((0, 0), (pad_y, pad_y), (pad_x, pad_x), (0, 0)),
                   constant_values=BACKGROUND)
  return jax.vmap(lambda image, offset: jax.lax.dynamic_slice(
      image, (offset[0], offset[1], 0), (height, width, image.shape[-1])))(padded, offsets)


def cutout(images: jax.Array, key: jax.Array, axis_name: str | None = None,
           ratio: float = CUTOUT_RATIO) -> jax.Array:
  """Set a square of side round(ratio * size), centred uniformly in the image (clipped at the
  border, as in DiffAugment), to BACKGROUND in each image."""
  batch, height, width = images.shape[:3]
  size_y, size_x = round(ratio * height), round(ratio * width)
  u = rng.uniform(key, batch, (2,), axis_name)
  low_y = jnp.floor(u[:, 0] * (height + 1 - size_y % 2)).astype(jnp.int32) - size_y // 2
  low_x = jnp.floor(u[:, 1] * (width + 1 - size_x % 2)).astype(jnp.int32) - size_x // 2
  ys, xs = jnp.arange(height), jnp.arange(width)
  in_y = (ys[None, :] >= low_y[:, None]) & (ys[None, :] < low_y[:, None] + size_y)
  in_x = (xs[None, :] >= low_x[:, None]) & (xs[None, :] < low_x[:, None] + size_x)
  cut = (in_y[:, :, None] & in_x[:, None, :])[..., None]
  return jnp.where(cut, BACKGROUND, images)


_FUNCTIONS = {'translation': translate, 'cutout': cutout}


def make(policy: str, axis_name: str | None = None) -> Augment | None:
  """The augmentation of `policy` (None when the policy is empty: augmentation off)."""
  names = parse_policy(policy)
  if not names:
    return None

  def augment(images, key):
    for index, name in enumerate(names):
      images = _FUNCTIONS[name](images, jax.random.fold_in(key, index), axis_name)
    return images

  augment.axis_name = axis_name  # checked against the step's by train_step.make_train_step
  return augment
