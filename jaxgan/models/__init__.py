"""Generator/discriminator pairs, chosen by name.

Every module is a pure Flax module: `init` returns explicit variables and `apply` takes them,
with `train=True` for batch statistics and dropout. `build(name, axis_name=...)` returns modules
whose batch statistics and per-example randomness are shared over that device axis.
"""
from __future__ import annotations

import dataclasses
from types import ModuleType

import flax.linen as nn

from jaxgan.models import dcgan, kannada, mlp

_MODULES: dict[str, ModuleType] = {'mlp': mlp, 'dcgan': dcgan, 'kannada': kannada}
MODEL_NAMES = tuple(_MODULES)
IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class GAN:
  name: str
  generator: nn.Module
  discriminator: nn.Module
  latent_dim: int
  image_shape: tuple[int, int, int] = IMAGE_SHAPE


def build(name: str, *, axis_name: str | None = None) -> GAN:
  """The named GAN's modules; `axis_name` is the device axis of the data-parallel step."""
  if name not in _MODULES:
    raise ValueError(f'unknown model {name!r}: choose one of {", ".join(MODEL_NAMES)} '
                     '(config field model.name)')
  module = _MODULES[name]
  return GAN(name=name, generator=module.Generator(axis_name=axis_name),
             discriminator=module.Discriminator(axis_name=axis_name),
             latent_dim=module.LATENT_DIM)
