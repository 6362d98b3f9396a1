"""The Kannada-MNIST paper's convolutional GAN, adapted to 28x28x1.

Adaptation (the paper's network was written for its own image pipeline): the generator maps a
128-d latent to a 7x7x128 map, then two stages of (nearest-neighbour upsample x2 -> 3x3 conv ->
LeakyReLU 0.2) reach 28x28, and a 7x7 conv to one channel with tanh gives the image. The
discriminator is three 3x3 stride-2 convs (64, 128, 256; 28 -> 14 -> 7 -> 4) with LeakyReLU 0.2,
then Flatten -> Dense(1). No normalisation layers, so the same critic serves WGAN-GP.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.layers import keras_kernel_init

LATENT_DIM = 128
LEAKY_SLOPE = 0.2


def _upsample2x(x):
  batch, height, width, channels = x.shape
  return jax.image.resize(x, (batch, 2 * height, 2 * width, channels), method='nearest')


class Generator(nn.Module):
  axis_name: str | None = None  # no cross-device statistics here; kept for a uniform interface

  @nn.compact
  def __call__(self, z, *, train: bool):
    del train
    x = nn.Dense(7 * 7 * 128, kernel_init=keras_kernel_init)(z)
    x = nn.leaky_relu(x, LEAKY_SLOPE).reshape((-1, 7, 7, 128))
    for features in (128, 64):
      x = nn.Conv(features, (3, 3), padding='SAME', kernel_init=keras_kernel_init)(_upsample2x(x))
      x = nn.leaky_relu(x, LEAKY_SLOPE)
    x = nn.Conv(1, (7, 7), padding='SAME', kernel_init=keras_kernel_init)(x)
    return jnp.tanh(x)


class Discriminator(nn.Module):
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool):
    phi = self.features(x, train=train)  # first: layer names follow creation order
    return nn.Dense(1, kernel_init=keras_kernel_init)(phi)[:, 0]

  def features(self, x, *, train: bool):
    """The flattened features before the output layer (see jaxgan.models.conditional)."""
    del train
    for features in (64, 128, 256):
      x = nn.Conv(features, (3, 3), (2, 2), 'SAME', kernel_init=keras_kernel_init)(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
    return x.reshape((x.shape[0], -1))
