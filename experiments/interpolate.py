r"""Walk the latent space of a trained run between two random latents.

python -m experiments.interpolate --workdir=RUN --steps=10 [--method=slerp|lerp] [--rows=4]
    [--latent_scale=S]
  writes RUN/interpolation.png (a strip: --rows walks, one per row, --steps digits each) and
  RUN/interpolation.gif (frame t: digit t of every walk).
Conditional models also morph the class: --from_label=A --to_label=B (default: 0 and 1) mix
the two class embeddings with the same weights as the latents.
Spherical interpolation (the default) keeps the latents near the norm a Gaussian latent has;
straight lines between two Gaussian latents pass through less likely, shorter vectors.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from jaxgan import console  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':  # before jax and TensorFlow load, which takes seconds
  console.take_stop_signals()

import jax
import numpy as np
from absl import app, flags, logging

from jaxgan import generate, images, rng, run_folder, trainer
from jaxgan.models import IMAGE_SHAPE
from jaxgan.run_folder import load_run_config
from jaxgan.state import generator_variables

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder written by experiments.train.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Digits per walk, ends included.', lower_bound=2)
_ROWS = flags.DEFINE_integer('rows', 4, 'Independent walks (rows of the strip).', lower_bound=1)
_METHOD = flags.DEFINE_enum('method', 'slerp', ['slerp', 'lerp'],
                            'Spherical or linear interpolation of the latents.')
_FROM = flags.DEFINE_integer('from_label', None, 'Conditional models: class at the start.')
_TO = flags.DEFINE_integer('to_label', None, 'Conditional models: class at the end.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the end-point latents.',
                            lower_bound=0, upper_bound=rng.MAX_SEED)
_LATENT_SCALE = console.define_latent_scale(
    'Multiplies the end-point latents (README, Wider latents).')
flags.adopt_module_key_flags(console)  # --latent_scale, defined there: in this --help too
_OUT = flags.DEFINE_string('out', None, 'Output path without extension; default: '
                           'RUN/interpolation (writes .png and .gif).')
_FRAME_MS = flags.DEFINE_integer('frame_ms', 200, 'GIF frame duration (GIF counts it in tens of '
                                 'milliseconds, so it is rounded down to them; browsers play a '
                                 'frame of 10 ms or less for 100 ms, so the least is 20).',
                                 lower_bound=20, upper_bound=images.GIF_MAX_FRAME_MS)
flags.mark_flags_as_required(['workdir'])


def class_labels(num_classes: int) -> tuple[int, int] | None:
  """(from, to) classes for a conditional model, checked; None for an unconditional one."""
  given = [label for label in (_FROM.value, _TO.value) if label is not None]
  if not num_classes:
    if given:
      raise ValueError('--from_label/--to_label need a conditional model, but this run\'s '
                       'model is unconditional (model.num_classes = 0): drop them')
    return None
  start = 0 if _FROM.value is None else _FROM.value
  end = 1 if _TO.value is None else _TO.value
  for name, label in (('from_label', start), ('to_label', end)):
    if not 0 <= label < num_classes:
      raise ValueError(f'--{name}={label} is out of range: the model has classes '
                       f'0..{num_classes - 1}')
  return start, end


def check_picture_sizes(scale: int) -> None:
  """The strip and the GIF's frames within the sides a GIF can hold (image viewers open no
  wider PNG either), before the work."""
  cell = IMAGE_SHAPE[:2]
  strip = images.grid_size(_ROWS.value, _STEPS.value, cell, scale=scale)
  frame = images.grid_size(1, _ROWS.value, cell, scale=scale)
  if max(*strip, *frame) > images.GIF_MAX_SIDE:
    raise app.UsageError(
        f'--rows={_ROWS.value} and --steps={_STEPS.value} make pictures of up to '
        f'{max(*strip, *frame):,} pixels a side at the run\'s scale of {scale}, more than the '
        f'{images.GIF_MAX_SIDE:,} a GIF holds: lower them')


def main(argv):
  del argv  # flags only: console.run refuses other arguments
  if _OUT.value is not None and (not os.path.basename(_OUT.value)
                                 or os.path.splitext(_OUT.value)[1] in ('.png', '.gif')):
    raise app.UsageError(f'--out={_OUT.value} must be a file name without extension (.png and '
                         '.gif are added), e.g. --out=runs/walk')
  if _OUT.value is not None and os.path.isdir(_OUT.value):
    raise app.UsageError(f'--out={_OUT.value} is a folder: name the files to write in it, e.g. '
                         f'--out={os.path.join(_OUT.value, "walk")}')
  out = _OUT.value or os.path.join(_WORKDIR.value, 'interpolation')
  for extension in ('.png', '.gif'):  # both, before writing either
    console.check_file_to_write('out', out + extension)
  console.setup_logging()
  config = load_run_config(_WORKDIR.value)
  # Flags are checked against the config before the (slower) restore.
  classes = class_labels(config.model.get('num_classes', 0))
  check_picture_sizes(config.sample_grid_scale)
  components, state = trainer.restore_run_state(_WORKDIR.value, config)
  gan = components.gan
  earlier = [out + extension for extension in ('.png', '.gif') if os.path.isfile(out + extension)]
  if earlier:  # said once the flags and the run are known good, while Ctrl-C loses nothing
    logging.warning('%s: replaced by this interpolation when it is done', ' and '.join(earlier))

  steps, rows = _STEPS.value, _ROWS.value
  scale = run_folder.latent_scale(config, _LATENT_SCALE.value)
  ends = np.asarray(generate.latents(jax.random.key(_SEED.value), 2 * rows, gan.latent_dim,
                                     scale=scale))
  t = np.linspace(0.0, 1.0, steps)
  path = generate.slerp if _METHOD.value == 'slerp' else generate.lerp
  z = np.concatenate([path(ends[2 * r], ends[2 * r + 1], t) for r in range(rows)])
  labels = None
  if classes is not None:  # class weights (1 - t) * onehot(from) + t * onehot(to), per row
    one_hot = np.eye(gan.num_classes, dtype=np.float32)
    labels = np.tile(generate.lerp(one_hot[classes[0]], one_hot[classes[1]], t), (rows, 1))
  # The step sets a progressive generator's growth: a checkpoint taken during the fade-in
  # is drawn as it trained, not through its unfinished 28x28 layers.
  digits = generate.generate(gan, generator_variables(state), z.astype(np.float32), labels,
                             step=int(state.step))

  zoom = config.sample_grid_scale
  walks = digits.reshape((rows, steps) + digits.shape[1:])
  frames = [images.grid(walks[:, i], 1, rows, scale=zoom) for i in range(steps)]
  first, gif = images.gif_settings(frames + frames[-2:0:-1], _FRAME_MS.value)
  images.save_together([(images.grid(digits, rows, steps, scale=zoom), out + '.png', {}),
                        (first, out + '.gif', gif)])
  logging.info('wrote %s.png and %s.gif: %d %s walks of %d steps from step %d at latent scale '
               '%g%s', out, out, rows, _METHOD.value, steps, int(state.step), scale,
               '' if classes is None else f', class {classes[0]} to {classes[1]}')


if __name__ == '__main__':
  console.run(main)
