"""Class-conditional versions of the unconditional networks.

Generator: a learned label embedding joined to the latent, fed to the unconditional generator
(Mirza & Osindero 2014); a base generator with class-conditional normalisation
(`norm='conditional_batch'`) also gets the embedding at each normalisation layer. `labels` are
int class ids (B,), or float class weights (B, C) whose embedding is the weighted mix of the
class embeddings (how experiments.interpolate morphs one class into another).

Discriminators reuse an unconditional discriminator's `features` phi(x) and its Dense(1) head:
- projection (Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>;
- auxiliary classifier (AC-GAN, Odena et al. 2017): D(x) = (psi(phi(x)), class logits of
  phi(x)); the train step adds the class cross-entropy on real and fake images to D's loss and
  on fake images to G's.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxgan.layers import keras_kernel_init, spectral_normalised

CONDITIONINGS = ('projection', 'auxiliary')


def _head_layer(discriminator: nn.Module, module: nn.Module, x, *, train: bool):
  """`module(x)`, spectrally normalised like the base discriminator's layers when it is (the
  projection's label embedding too, as in Miyato & Koyama's SNGAN-projection)."""
  if getattr(discriminator, 'spectral_norm', False):
    return spectral_normalised(module, x, train=train)
  return module(x)


class Generator(nn.Module):
  base: nn.Module  # an unconditional generator taking (latent + label_embed_dim) inputs
  num_classes: int
  label_embed_dim: int = 50

  @nn.compact
  def __call__(self, z, labels, *, train: bool):
    table = self.param('label_embedding', nn.initializers.normal(1.0),
                       (self.num_classes, self.label_embed_dim))
    embedded = labels @ table if jnp.issubdtype(labels.dtype, jnp.floating) else table[labels]
    embedded = embedded.astype(z.dtype)
    extra = {'condition': embedded} if getattr(self.base, 'norm', '') == 'conditional_batch' else {}
    return self.base(jnp.concatenate([z, embedded], axis=-1), train=train, **extra)


def projection(base: type[nn.Module]) -> type[nn.Module]:
  """`base`'s discriminator with a projection head: called as D(x, labels, train=...)."""

  class ProjectionDiscriminator(base):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, labels, *, train: bool):
      phi = self.features(x, train=train)
      out = _head_layer(self, nn.Dense(1, kernel_init=keras_kernel_init), phi, train=train)[:, 0]
      embedded = _head_layer(self, nn.Embed(self.num_classes, phi.shape[-1],
                                            embedding_init=keras_kernel_init,
                                            name='label_projection'), labels, train=train)
      return out + jnp.sum(embedded.astype(phi.dtype) * phi, axis=-1)

  ProjectionDiscriminator.__name__ = f'Projection{base.__name__}'
  return ProjectionDiscriminator


def auxiliary(base: type[nn.Module]) -> type[nn.Module]:
  """`base`'s discriminator with an extra class-logits head: D(x) -> (logit, class logits)."""

  class AuxiliaryDiscriminator(base):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, train: bool):
      phi = self.features(x, train=train)
      out = _head_layer(self, nn.Dense(1, kernel_init=keras_kernel_init), phi, train=train)[:, 0]
      return out, _head_layer(self, nn.Dense(self.num_classes, kernel_init=keras_kernel_init,
                                             name='class_logits'), phi, train=train)

  AuxiliaryDiscriminator.__name__ = f'Auxiliary{base.__name__}'
  return AuxiliaryDiscriminator
