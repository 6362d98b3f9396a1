"""Class-conditional versions of the unconditional networks.

Generator: a learned label embedding joined to the latent, fed to the unconditional generator
(Mirza & Osindero 2014); a base generator with class-conditional normalisation
(`norm='conditional_batch'`) also gets the embedding at each normalisation layer. `labels` are
int class ids (B,), or float class weights (B, C) whose embedding is the weighted mix of the
class embeddings (how experiments.interpolate morphs one class into another).

Discriminators reuse an unconditional discriminator's `features` phi(x) and its Dense(1) head:
- projection (Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>;
- auxiliary classifier (AC-GAN, Odena et al. 2017): D(x) = (psi(phi(x)), class logits of
  phi(x)); the train step adds the class cross-entropy on real and fake images (real only with
  `loss.class_loss_on_fakes=False`) to D's loss and on fake images to G's;
- projection_auxiliary: both, D(x, y) = (the projection logit, class logits of phi(x)).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from jaxgan.layers import FeatureDense, keras_kernel_init, spectral_normalised


class Heads(NamedTuple):
  projection: bool  # D takes the labels and adds <embed(y), phi(x)> to its logit
  classifier: bool  # D also returns class logits, trained with a class cross-entropy


HEADS = {'projection': Heads(projection=True, classifier=False),
         'auxiliary': Heads(projection=False, classifier=True),
         'projection_auxiliary': Heads(projection=True, classifier=True)}
CONDITIONINGS = tuple(HEADS)


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


def _dense(features: int, phi, name: str | None = None) -> nn.Module:
  """A Dense layer over phi: nn.Dense for flat features, FeatureDense (nn.Dense's parameters,
  phi not flattened) for feature maps."""
  if phi.ndim == 2:
    return nn.Dense(features, kernel_init=keras_kernel_init, name=name)
  return FeatureDense(features, kernel_init=keras_kernel_init, name=name)


def _real_fake_logit(discriminator: nn.Module, phi, *, train: bool):
  """psi(phi(x)): the base discriminator's Dense(1) output layer. Bases that give feature maps
  (dcgan) hold no Dense before it, so it takes nn.Dense's first name, as in the base."""
  return _head_layer(discriminator, _dense(1, phi, None if phi.ndim == 2 else 'Dense_0'), phi,
                     train=train)[:, 0]


def _projection_term(discriminator: nn.Module, phi, labels, *, train: bool):
  """<embed(y), phi(x)>."""
  embedded = _head_layer(discriminator, nn.Embed(discriminator.num_classes,
                                                 math.prod(phi.shape[1:]),
                                                 embedding_init=keras_kernel_init,
                                                 name='label_projection'), labels, train=train)
  return jnp.sum(embedded.reshape(phi.shape).astype(phi.dtype) * phi,
                 axis=tuple(range(1, phi.ndim)))


def _class_logits(discriminator: nn.Module, phi, *, train: bool):
  return _head_layer(discriminator, _dense(discriminator.num_classes, phi, 'class_logits'), phi,
                     train=train)


def conditioned(base: type[nn.Module], conditioning: str) -> type[nn.Module]:
  """`base`'s discriminator with the heads of `conditioning`: called as D(x, labels, train=...)
  when it projects the label, D(x, train=...) otherwise; returns the logit, and with a class
  head (logit, class logits)."""
  heads = HEADS[conditioning]

  class ConditionalDiscriminator(base):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, labels=None, *, train: bool):
      if (labels is None) == heads.projection:
        raise ValueError(f'a {conditioning} discriminator takes labels exactly when it projects '
                         f'them: call it with gan.discriminator_inputs(images, labels)')
      phi = self.features(x, train=train)
      out = _real_fake_logit(self, phi, train=train)
      if heads.projection:
        out = out + _projection_term(self, phi, labels, train=train)
      return (out, _class_logits(self, phi, train=train)) if heads.classifier else out

  ConditionalDiscriminator.__name__ = f'{conditioning.title().replace("_", "")}{base.__name__}'
  return ConditionalDiscriminator
