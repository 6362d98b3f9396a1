"""Generator/discriminator pairs, chosen by name.

Every module is a pure Flax module: `init` returns explicit variables and `apply` takes them,
with `train=True` for batch statistics and dropout. `build(name, axis_name=...)` returns modules
whose batch statistics and per-example randomness are shared over that device axis.
"""
from __future__ import annotations

import dataclasses
from types import ModuleType

import flax.linen as nn

from jaxgan.models import conditional, dcgan, kannada, mlp

_MODULES: dict[str, ModuleType] = {'mlp': mlp, 'dcgan': dcgan, 'kannada': kannada}
MODEL_NAMES = tuple(_MODULES)
CONDITIONINGS = conditional.CONDITIONINGS
IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class GAN:
  """With num_classes > 0 the generator is called as G(z, labels) and the discriminator as
  D(x, labels) (projection) or D(x) -> (logit, class logits) (auxiliary)."""
  name: str
  generator: nn.Module
  discriminator: nn.Module
  latent_dim: int
  image_shape: tuple[int, int, int] = IMAGE_SHAPE
  num_classes: int = 0  # 0: unconditional
  conditioning: str = ''  # with num_classes > 0: projection | auxiliary

  @property
  def auxiliary_classifier(self) -> bool:
    return self.conditioning == 'auxiliary'

  def generator_inputs(self, z, labels) -> tuple:
    return (z, labels) if self.num_classes else (z,)

  def discriminator_inputs(self, images, labels) -> tuple:
    return (images, labels) if self.conditioning == 'projection' else (images,)


def build(name: str, *, num_classes: int = 0, conditioning: str = 'projection',
          label_embed_dim: int = 50, axis_name: str | None = None) -> GAN:
  """The named GAN's modules; `axis_name` is the device axis of the data-parallel step.

  `num_classes` > 0 makes it class-conditional (see jaxgan.models.conditional), its
  discriminator conditioned by `conditioning`.
  """
  if name not in _MODULES:
    raise ValueError(f'unknown model {name!r}: choose one of {", ".join(MODEL_NAMES)} '
                     '(config field model.name)')
  module = _MODULES[name]
  generator = module.Generator(axis_name=axis_name)
  if not num_classes:
    return GAN(name=name, generator=generator,
               discriminator=module.Discriminator(axis_name=axis_name),
               latent_dim=module.LATENT_DIM)
  if num_classes < 2:
    raise ValueError(f'model.num_classes must be 0 (unconditional) or >= 2, got {num_classes}')
  if conditioning not in CONDITIONINGS:
    raise ValueError(f'unknown conditioning {conditioning!r}: choose one of '
                     f'{", ".join(CONDITIONINGS)} (config field model.conditioning)')
  if label_embed_dim < 1:
    raise ValueError(f'model.label_embed_dim must be >= 1, got {label_embed_dim}')
  head = conditional.projection if conditioning == 'projection' else conditional.auxiliary
  return GAN(name=name,
             generator=conditional.Generator(generator, num_classes, label_embed_dim),
             discriminator=head(module.Discriminator)(axis_name=axis_name,
                                                      num_classes=num_classes),
             latent_dim=module.LATENT_DIM, num_classes=num_classes, conditioning=conditioning)
