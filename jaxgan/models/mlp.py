"""The papers' MLP GAN: one hidden layer of 128 units in each network."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxgan.layers import keras_kernel_init, spectral_normalised

LATENT_DIM = 100


class Generator(nn.Module):
  """z -> Dense(128, relu) -> Dense(784, tanh) -> 28x28x1 in [-1, 1] (the data range)."""
  image_shape: tuple[int, int, int] = (28, 28, 1)
  hidden: int = 128
  axis_name: str | None = None  # no cross-device statistics here; kept for a uniform interface

  @nn.compact
  def __call__(self, z, *, train: bool):
    del train  # no batch statistics or dropout in this model
    x = nn.relu(nn.Dense(self.hidden, kernel_init=keras_kernel_init)(z))
    size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
    x = jnp.tanh(nn.Dense(size, kernel_init=keras_kernel_init)(x))
    return x.reshape((z.shape[0],) + tuple(self.image_shape))


class Discriminator(nn.Module):
  """x -> Flatten -> Dense(128, relu) -> Dense(1): one logit per image; `spectral_norm=True`
  spectrally normalises both layers (`jaxgan.layers.spectral_normalised`)."""
  hidden: int = 128
  axis_name: str | None = None
  spectral_norm: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool):
    phi = self.features(x, train=train)  # first: layer names follow creation order
    return self.layer(nn.Dense(1, kernel_init=keras_kernel_init), phi, train=train)[:, 0]

  def layer(self, module: nn.Module, x, *, train: bool):
    return spectral_normalised(module, x, train=train) if self.spectral_norm else module(x)

  def features(self, x, *, train: bool):
    """The hidden layer's output (see jaxgan.models.conditional)."""
    x = x.reshape((x.shape[0], -1))
    return nn.relu(self.layer(nn.Dense(self.hidden, kernel_init=keras_kernel_init), x,
                              train=train))
