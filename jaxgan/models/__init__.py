"""Generator/discriminator pairs, chosen by name.

Every module is a pure Flax module: `init` returns explicit variables and `apply` takes them,
with `train=True` for batch statistics and dropout. `build(name, axis_name=...)` returns modules
whose batch statistics and per-example randomness are shared over that device axis.
"""
from __future__ import annotations

import dataclasses
from types import ModuleType

import flax.linen as nn
import ml_collections

from jaxgan.models import conditional, dcgan, kannada, mlp, progressive

_MODULES: dict[str, ModuleType] = {'mlp': mlp, 'dcgan': dcgan, 'kannada': kannada,
                                   'progressive': progressive}
MODEL_NAMES = tuple(_MODULES)
CONDITIONINGS = conditional.CONDITIONINGS
IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class GAN:
  """With num_classes > 0 the generator is called as G(z, labels) and the discriminator as
  D(x, labels) (projection), D(x) -> (logit, class logits) (auxiliary) or
  D(x, labels) -> (logit, class logits) (projection_auxiliary)."""
  name: str
  generator: nn.Module
  discriminator: nn.Module
  latent_dim: int
  image_shape: tuple[int, int, int] = IMAGE_SHAPE
  # Progressive growing (model 'progressive'): the 28x28 layers fade in from generator step
  # grow_step over fade_steps steps.
  grow_step: int | None = None
  fade_steps: int = 0
  num_classes: int = 0  # 0: unconditional
  conditioning: str = ''  # with num_classes > 0: one of CONDITIONINGS
  axis_name: str | None = None  # the device axis its batch statistics are averaged over

  def network_kwargs(self, step, *, before_growth: bool = False) -> dict:
    """Extra keyword arguments of both networks at generator step `step` (traced or not).

    `before_growth`: for a program that only ever runs steps before `grow_step`; progressive
    networks then skip their 28x28 layers, which are faded out there (alpha = 0) anyway.
    """
    if self.grow_step is None:
      return {}
    alpha = progressive.growth_alpha(step, self.grow_step, self.fade_steps)
    return dict(alpha=alpha, grown=False) if before_growth else dict(alpha=alpha)

  @property
  def auxiliary_classifier(self) -> bool:
    return bool(self.num_classes) and conditional.HEADS[self.conditioning].classifier

  def generator_inputs(self, z, labels) -> tuple:
    return (z, labels) if self.num_classes else (z,)

  def discriminator_inputs(self, images, labels) -> tuple:
    with_labels = bool(self.num_classes) and conditional.HEADS[self.conditioning].projection
    return (images, labels) if with_labels else (images,)


GENERATOR_NORMS = ('batch', 'instance', 'conditional_batch')
# Models whose networks take the normalisation options of `build`.
_SPECTRAL_NORM = ('mlp', 'dcgan', 'progressive')
_GENERATOR_NORM = ('dcgan', 'progressive')
DCGAN_DROPOUT = dcgan.Discriminator.dropout_rate  # the papers' rate, 0.3


def build(name: str, *, axis_name: str | None = None, spectral_norm: bool = False,
          generator_norm: str = 'batch', grow_step: int = 0, fade_steps: int = 0,
          num_classes: int = 0, conditioning: str = 'projection',
          label_embed_dim: int = 50, generator_width: int = 1,
          discriminator_width: int = 1, generator_depth: int = 0,
          minibatch_std_group: int = 0, discriminator_dropout: float = DCGAN_DROPOUT) -> GAN:
  """The named GAN's modules; `axis_name` is the device axis of the data-parallel step.

  `spectral_norm` normalises the discriminator's layers; `generator_norm` (batch | instance |
  conditional_batch) is the generator's normalisation (instance: dcgan and progressive only;
  conditional_batch, class-conditional BN: conditional dcgan only); `grow_step` and
  `fade_steps` schedule the progressive model's growth (`progressive.growth_alpha`).
  `num_classes` > 0 makes it class-conditional (see jaxgan.models.conditional), its
  discriminator conditioned by `conditioning`. `generator_width` and
  `discriminator_width` multiply the dcgan networks' hidden channels; `generator_depth` adds
  3x3 conv blocks to the dcgan generator and `minibatch_std_group` the minibatch
  standard-deviation feature to its discriminator (see jaxgan.models.dcgan);
  `discriminator_dropout` is the dropout rate after each of its convolutions (the papers' 0.3).
  """
  if name not in _MODULES:
    raise ValueError(f'unknown model {name!r}: choose one of {", ".join(MODEL_NAMES)} '
                     '(config field model.name)')
  if generator_norm not in GENERATOR_NORMS:
    raise ValueError(f'unknown model.generator_norm {generator_norm!r}: choose one of '
                     f'{", ".join(GENERATOR_NORMS)}')
  options_g, options_d = {}, {}
  if spectral_norm:
    if name not in _SPECTRAL_NORM:
      raise ValueError(f'model.spectral_norm is implemented for {", ".join(_SPECTRAL_NORM)}, '
                       f'not {name!r}: set it to False')
    options_d['spectral_norm'] = True
  if generator_norm == 'conditional_batch' and (name != 'dcgan' or not num_classes):
    raise ValueError('model.generator_norm=conditional_batch needs a class-conditional dcgan: set '
                     'model.name=dcgan and model.num_classes > 0, or generator_norm=batch')
  if generator_norm != 'batch':
    if name not in _GENERATOR_NORM:
      raise ValueError(f'model.generator_norm is implemented for {", ".join(_GENERATOR_NORM)}, '
                       f'not {name!r}: set it to batch')
    options_g['norm'] = generator_norm
  # The dcgan networks' integer shape options: (config field, value, network, keyword, default).
  for field, value, options, key, default in (
      ('generator_width', generator_width, options_g, 'width', 1),
      ('discriminator_width', discriminator_width, options_d, 'width', 1),
      ('generator_depth', generator_depth, options_g, 'depth', 0),
      ('minibatch_std_group', minibatch_std_group, options_d, 'minibatch_std_group', 0)):
    if value != default:
      if name != 'dcgan' or not isinstance(value, int) or value < default:
        raise ValueError(f'model.{field} must be an integer >= {default} and is implemented for '
                         f'dcgan only, got {value} for {name!r}: set it to {default}')
      options[key] = value
  if discriminator_dropout != DCGAN_DROPOUT:
    if name != 'dcgan' or not 0.0 <= discriminator_dropout < 1.0:
      raise ValueError(f'model.discriminator_dropout must be in [0, 1) and is implemented for '
                       f'dcgan only, got {discriminator_dropout} for {name!r}: set it to '
                       f'{DCGAN_DROPOUT}')
    options_d['dropout_rate'] = discriminator_dropout
  # Checked for unconditional models too: a typo there was silently ignored.
  if conditioning not in CONDITIONINGS:
    raise ValueError(f'unknown conditioning {conditioning!r}: choose one of '
                     f'{", ".join(CONDITIONINGS)} (config field model.conditioning)')
  if grow_step < 0 or fade_steps < 0:
    raise ValueError(f'model.grow_step and model.fade_steps must be >= 0, got {grow_step} and '
                     f'{fade_steps}')
  module = _MODULES[name]
  unconditional = GAN(name=name, generator=module.Generator(axis_name=axis_name, **options_g),
                      discriminator=module.Discriminator(axis_name=axis_name, **options_d),
                      latent_dim=module.LATENT_DIM,
                      grow_step=grow_step if name == 'progressive' else None,
                      fade_steps=fade_steps, axis_name=axis_name)
  if not num_classes:
    return unconditional
  if num_classes < 2:
    raise ValueError(f'model.num_classes must be 0 (unconditional) or >= 2, got {num_classes}')
  if label_embed_dim < 1:
    raise ValueError(f'model.label_embed_dim must be >= 1, got {label_embed_dim}')
  if name == 'progressive':
    raise ValueError('class-conditional models (model.num_classes > 0) are implemented without '
                     'progressive growing: set model.num_classes=0, or use '
                     'model.name=dcgan|kannada|mlp')
  return dataclasses.replace(
      unconditional,
      generator=conditional.Generator(unconditional.generator, num_classes, label_embed_dim),
      discriminator=conditional.conditioned(module.Discriminator, conditioning)(
          axis_name=axis_name, num_classes=num_classes, **options_d),
      num_classes=num_classes, conditioning=conditioning)


def from_config(model: ml_collections.ConfigDict, *, axis_name: str | None = None) -> GAN:
  """`build` from the config's `model` section (fields added later default to old behaviour)."""
  return build(model.name, axis_name=axis_name, spectral_norm=model.get('spectral_norm', False),
               generator_norm=model.get('generator_norm', 'batch'),
               grow_step=model.get('grow_step', 0), fade_steps=model.get('fade_steps', 0),
               num_classes=model.get('num_classes', 0),
               conditioning=model.get('conditioning', 'projection'),
               label_embed_dim=model.get('label_embed_dim', 50),
               generator_width=model.get('generator_width', 1),
               discriminator_width=model.get('discriminator_width', 1),
               generator_depth=model.get('generator_depth', 0),
               minibatch_std_group=model.get('minibatch_std_group', 0),
               discriminator_dropout=model.get('discriminator_dropout', DCGAN_DROPOUT))
