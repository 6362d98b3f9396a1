r"""Multi-digit images from a conditional run: digit strings for testing OCR.

python -m experiments.sample_strings --workdir=DIR --num=1000 --length=5 --out=strings.npz \
    [--grid=strings.png]                       # 1,000 random 5-digit strings
python -m experiments.sample_strings --workdir=DIR --texts=90210,1234 --out=strings.npz

Each digit is generated for its class, cropped to its ink and set after the previous one with
a random gap and a small vertical shift (jaxgan.strings). The .npz holds `images`, uint8
(N, 28, W) with 0 = background and W = canvas_width(longest length); `texts`, the strings;
`labels`, int32 (N, L), each string's classes padded with -1; `lengths` (N,); and `boxes`,
int32 (N, L, 2), each digit's [start, stop) ink columns in its image (-1 for padding); and
`provenance`, a JSON string of the run, step, settings and machine that drew them (as
experiments.sample writes).
"""
import contextlib
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from jaxgan import console  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':  # before jax and TensorFlow load, which takes seconds
  console.take_stop_signals()

import jax
import numpy as np
from absl import flags, logging

from jaxgan import (generate, images, parallel, provenance, rng, run_folder,
                    strings, trainer)
from jaxgan.run_folder import load_run_config
from jaxgan.state import generator_variables

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder of a conditional model, written by '
                               'experiments.train.')
_NUM = flags.DEFINE_integer('num', 100, 'How many random strings to make.', lower_bound=1)
_LENGTH = flags.DEFINE_integer('length', 5, 'Digits per random string.', lower_bound=1)
_TEXTS = flags.DEFINE_list('texts', None, 'Strings to make instead of random ones, e.g. '
                           '90210,1234 (lengths may differ).')
_OUT = flags.DEFINE_string('out', None, 'Output .npz path.')
_GRID = flags.DEFINE_string('grid', None, 'Optional PNG of the first 20 strings, one per row.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random strings, latents and layout.',
                            lower_bound=0, upper_bound=rng.MAX_SEED)
_MIN_GAP = flags.DEFINE_integer('min_gap', -2, 'Smallest gap between the ink of neighbouring '
                                'digits, in pixels (negative: they touch or overlap).')
_MAX_GAP = flags.DEFINE_integer('max_gap', 4, 'Largest gap between neighbouring digits.')
_JITTER = flags.DEFINE_integer('jitter', 2, 'Each digit moves up or down by up to this many '
                               'rows, as far as its blank rows allow.', lower_bound=0)
_TRUNCATION = console.define_truncation('Truncation trick, as experiments.sample: latents '
                                         'drawn within [-t, t].')
_LATENT_SCALE = console.define_latent_scale('Multiplies the latents, as experiments.sample; '
                                            '1: none.')
flags.adopt_module_key_flags(console)  # the flag above is this script's: list it in --help
_BATCH = flags.DEFINE_integer('batch_size', generate.DEFAULT_BATCH, 'Digits generated per call.',
                              lower_bound=1)
_CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 0, 'CPU only: jax devices to generate on (the images do not depend on the '
    'count); 0: one per core, -1: jax\'s default.', lower_bound=-1)
_GRID_ROWS = 20
flags.mark_flags_as_required(['workdir'])


def string_classes(num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(classes (N, L) padded with -1, lengths (N,)) from --texts, or random ones."""
  if _TEXTS.value is not None:
    if _NUM.present or _LENGTH.present:
      raise ValueError('--texts gives the strings, so neither --num nor --length applies: drop '
                       'them')
    return strings.parse_strings(_TEXTS.value, num_classes)
  classes = strings.random_strings(rng, _NUM.value, _LENGTH.value, num_classes)
  return classes, np.full(_NUM.value, _LENGTH.value, np.int32)


def main(argv):
  del argv  # flags only: console.run refuses other arguments
  console.check_export_args(_OUT.value, _GRID.value)
  console.setup_logging()
  parallel.configure_cpu_devices(_CPU_DEVICES.value, divides=_BATCH.value)
  config = load_run_config(_WORKDIR.value)
  num_classes = config.model.get('num_classes', 0)
  if not num_classes:
    raise ValueError('digit strings need a conditional model, but this run\'s model is '
                     'unconditional (model.num_classes = 0): train a cgan_* or acgan_* config')
  rng = np.random.default_rng(_SEED.value)
  classes, lengths = string_classes(num_classes, rng)
  components, state = trainer.restore_run_state(_WORKDIR.value, config)
  layout = dict(min_gap=_MIN_GAP.value, max_gap=_MAX_GAP.value, jitter=_JITTER.value)
  strings.check_layout(components.gan.image_shape[:2], **layout)  # before generating
  used = classes >= 0
  latent_scale = run_folder.latent_scale(config, _LATENT_SCALE.value)
  z = generate.latents(jax.random.key(_SEED.value), int(used.sum()), components.gan.latent_dim,
                       _TRUNCATION.value, latent_scale)
  flat = generate.generate(components.gan, generator_variables(state), z, classes[used],
                           batch_size=_BATCH.value, step=int(state.step))
  digits = np.zeros(classes.shape + flat.shape[1:], np.uint8)
  digits[used] = flat
  composed, boxes = strings.compose(digits, lengths, rng, **layout)
  texts = np.asarray([''.join(map(str, row[:n])) for row, n in zip(classes, lengths)])
  with contextlib.ExitStack() as outputs:  # the strings and their grid: both, or neither
    if _OUT.value:
      drawn = provenance.export_field(
          workdir=os.path.abspath(_WORKDIR.value), dataset=config.data.name,
          step=int(state.step), num=len(composed),
          num_train_examples=config.data.get('num_train_examples', 0), seed=_SEED.value,
          batch_size=_BATCH.value, latent_scale=latent_scale, truncation=_TRUNCATION.value,
          texts=_TEXTS.value, length=None if _TEXTS.value else _LENGTH.value, **layout)
      outputs.enter_context(generate.npz_written(
          _OUT.value, images=composed, texts=texts, labels=classes, lengths=lengths, boxes=boxes,
          provenance=drawn))
    if _GRID.value:
      rows = min(len(composed), _GRID_ROWS)
      outputs.enter_context(images.picture_written(
          images.grid(composed, rows, 1, scale=config.sample_grid_scale), _GRID.value))
  if _OUT.value:
    logging.info('wrote %d strings (%d digits) to %s', len(composed), len(flat), _OUT.value)
  if _GRID.value:
    logging.info('wrote the grid to %s', _GRID.value)


if __name__ == '__main__':
  console.run(main)
