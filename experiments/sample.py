r"""Generate digits from a trained run's newest checkpoint (--checkpoint=best: the best one that
evaluation during training kept).

python -m experiments.sample --workdir=DIR --num=1000 --out=digits.npz [--grid=digits.png]
writes `images`, uint8 (N, 28, 28) with 0 = background as in the IDX files.

Conditional models also write `labels`, int32 (N,), the class each digit was generated for:
--labels=3 or --labels=0,1,2 chooses the classes (default: all), --num digits cycling through
them, or --per_class=N digits of each, class by class; or --class_proportions=train draws --num
digits in the real train split's class frequencies (or one weight per class, e.g.
2,1,1,1,1,1,1,1,1,1), the classes interleaved. The grid then has one row per class.

--resample_percentile=P keeps candidates by a density-ratio model of real against generated
digits (jaxgan.resampling; README, Density-ratio resampling): trained the first time for the
run's step, latent scale and truncation (minutes on a CPU) and kept in RUN/resampling/.

The .npz also holds `provenance`, a JSON string (`json.loads(str(npz['provenance']))`): the run
folder, its dataset, step and `num_train_examples` (the real labelled digits it trained on; 0:
the whole split), the settings that drew the digits (seed, batch size, latent scale,
truncation, classes, resampling and its statistics) and the machine
(`jaxgan.provenance.host_record`), since the same command draws other digits on another kind
of processor.
"""
import contextlib
import dataclasses
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from jaxgan import console  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':  # before jax and TensorFlow load, which takes seconds
  console.take_stop_signals()

import jax
import numpy as np
from absl import flags, logging

from jaxgan import (class_proportions, generate, images, parallel, provenance,
                    resampling, rng, run_folder, trainer)
from jaxgan.checkpoint import BEST, LATEST
from jaxgan.run_folder import load_run_config
from jaxgan.state import generator_variables

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder written by experiments.train.')
_NUM = flags.DEFINE_integer('num', 1000, 'How many digits to generate.', lower_bound=1)
_OUT = flags.DEFINE_string('out', None, 'Output .npz path.')
_GRID = flags.DEFINE_string('grid', None, 'Optional PNG of the first digits as a square grid.')
_CHECKPOINT = flags.DEFINE_enum('checkpoint', LATEST, [LATEST, BEST],
                                'Which state of the run: its newest checkpoint, or the best one '
                                'kept by evaluation during training (config.eval_every).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the latent vectors.',
                            lower_bound=0, upper_bound=rng.MAX_SEED)
_BATCH = flags.DEFINE_integer('batch_size', generate.DEFAULT_BATCH, 'Digits generated per call.',
                             lower_bound=1)
_LABELS = flags.DEFINE_list('labels', None, 'Conditional models: classes to generate, e.g. 3 '
                            'or 0,1,2 (default: all).')
_PER_CLASS = flags.DEFINE_integer('per_class', None, 'Conditional models: digits of each class '
                                  '(instead of --num).', lower_bound=1)
_PROPORTIONS = class_proportions.define_flag(' (with --num; not with --labels or --per_class)')
_TRUNCATION = console.define_truncation('Truncation trick: latents drawn from the normal '
                                         'truncated to [-t, t] (e.g. 1.0).')
_LATENT_SCALE = console.define_latent_scale(
    'Multiplies the latents (after any truncation): above 1, e.g. 1.2, wider than training, '
    'for more varied digits (README, Wider latents); 1: none.')
_RESAMPLE = resampling.define_flags()
# The real digits of --class_proportions=train and of a ratio model trained for resampling.
_MANUAL_DIR, _DATA_DIR = console.define_data_location_flags()
# Flags that helper modules defined for this script: list them in its --help too.
flags.adopt_module_key_flags(class_proportions)
flags.adopt_module_key_flags(console)
flags.adopt_module_key_flags(resampling)
_CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 0, 'CPU only: jax devices to generate on, each a share of every batch (the '
    'digits do not depend on the count); 0: one per core, -1: jax\'s default.',
    lower_bound=-1)
_COMPRESS = flags.DEFINE_bool('compress', False, 'Write a compressed .npz: about 40% of the size, '
                               'but ~10 s more for 60,000 digits on a 2-core CPU.')
_GRID_COLUMNS = 10  # digits per class row in --grid
flags.mark_flags_as_required(['workdir'])


def parse_labels(values: list[str] | None, num_classes: int) -> list[int]:
  """--labels as class ids, checked against the model (all classes when not given)."""
  if num_classes == 0:
    if values is not None or _PER_CLASS.value is not None:
      raise ValueError('--labels and --per_class need a conditional model, but this run\'s '
                       'model is unconditional (model.num_classes = 0): drop them')
    return []
  if _PER_CLASS.value is not None and _NUM.present:
    raise ValueError('--per_class=N draws N digits of each class instead of --num: drop --num')
  if values is None:
    return list(range(num_classes))
  if not values:
    raise ValueError(f'--labels is empty: give classes in 0..{num_classes - 1}, e.g. --labels=3')
  try:
    classes = [int(value) for value in values]
  except ValueError:
    raise ValueError(f'--labels={",".join(values)}: give integer classes in '
                     f'0..{num_classes - 1}, e.g. --labels=0,1,2') from None
  bad = [c for c in classes if not 0 <= c < num_classes]
  if bad:
    raise ValueError(f'--labels={",".join(values)}: class {bad[0]} is out of range, the model '
                     f'has classes 0..{num_classes - 1}')
  repeated = sorted({c for c in classes if classes.count(c) > 1})
  if repeated:  # --per_class drew them twice over, --num twice as often
    raise ValueError(f'--labels={",".join(values)}: class {repeated[0]} is given more than once: '
                     'give each class once (--per_class or --class_proportions set how many)')
  return classes


def sample_labels(classes: list[int], class_weights: np.ndarray | None) -> np.ndarray | None:
  """One label per digit: --per_class of each class in turn, --num in `class_weights`
  (--class_proportions), or --num cycling the classes."""
  if not classes:
    return None
  if class_weights is not None:
    return generate.class_labels(_NUM.value, class_weights)
  if _PER_CLASS.value is not None:
    return np.repeat(np.asarray(classes, np.int32), _PER_CLASS.value)
  return np.asarray(classes, np.int32)[generate.balanced_labels(_NUM.value, len(classes))]


def class_grid(digits: np.ndarray, labels: np.ndarray, classes: list[int], scale: int):
  """One row per class that has digits: its first digits (up to _GRID_COLUMNS)."""
  rows = [digits[labels == c][:_GRID_COLUMNS] for c in dict.fromkeys(classes)
          if np.any(labels == c)]  # classes that got no digits (--num < classes) get no row
  cols = max(len(row) for row in rows)
  cells = np.zeros((len(rows) * cols,) + digits.shape[1:], np.uint8)
  for r, row in enumerate(rows):
    cells[r * cols:r * cols + len(row)] = row
  return images.grid(cells, len(rows), cols, scale=scale)


def main(argv):
  del argv  # flags only: console.run refuses other arguments
  console.check_export_args(_OUT.value, _GRID.value)
  resample = _RESAMPLE.resampling()
  console.setup_logging()
  # 60,000 dcgan digits on the 2-core CPU: 9.7 s on jax's one device, 5.8 s on two.
  parallel.configure_cpu_devices(_CPU_DEVICES.value, divides=_BATCH.value)
  config = load_run_config(_WORKDIR.value)
  # Flags are checked against the config before the (slower) restore.
  num_classes = config.model.get('num_classes', 0)
  classes = parse_labels(_LABELS.value, num_classes)
  class_weights = None
  if _PROPORTIONS.present:
    if _LABELS.value is not None or _PER_CLASS.value is not None:
      raise ValueError('--class_proportions draws --num digits of every class: drop --labels '
                       'and --per_class, or give a weight of 0 to the classes to leave out')
    class_weights = class_proportions.weights(
        _PROPORTIONS.value, num_classes, config.data.name,
        manual_dir=_MANUAL_DIR.value or config.data.manual_dir,
        data_dir=_DATA_DIR.value or config.data.data_dir)
  components, state = trainer.restore_run_state(_WORKDIR.value, config, _CHECKPOINT.value)
  gan = components.gan
  step = int(state.step)
  labels = sample_labels(classes, class_weights)
  num = _NUM.value if labels is None else len(labels)
  latent_scale = run_folder.latent_scale(config, _LATENT_SCALE.value)
  # Once the flags and the run are known good (a bad one is then the only line), before the
  # generation, while Ctrl-C loses nothing.
  if _OUT.value and os.path.isfile(_OUT.value):
    record = os.path.splitext(_OUT.value)[0] + '.eval.json'  # experiments.evaluate's default
    logging.warning('%s holds earlier digits, which these replace when they are done%s', _OUT.value,
                    f'; {record} scored those, not these: run experiments.evaluate '
                    f'--samples={_OUT.value} again' if os.path.isfile(record) else '')
  if _GRID.value and os.path.isfile(_GRID.value):
    logging.warning('%s holds an earlier grid, which these digits\' grid replaces when it is done',
                    _GRID.value)
  resampled = None
  if resample is None:
    z = generate.latents(jax.random.key(_SEED.value), num, gan.latent_dim, _TRUNCATION.value,
                         latent_scale)
    digits = generate.generate(gan, generator_variables(state), z, labels,
                               batch_size=_BATCH.value, step=step)
  else:
    digits, resampled = resampling.resample_run(
        _WORKDIR.value, config, gan, generator_variables(state), step, labels, num, resample,
        seed=_SEED.value, latent_scale=latent_scale, truncation=_TRUNCATION.value,
        manual_dir=_MANUAL_DIR.value, data_dir=_DATA_DIR.value, batch_size=_BATCH.value)
  # The digits and their grid: both replaced, or neither when one cannot be written.
  with contextlib.ExitStack() as outputs:
    write_outputs(outputs, config, digits, labels, classes, step=step, num=num,
                  latent_scale=latent_scale, resample=resample, resampled=resampled)
  if _OUT.value:
    logging.info('wrote %d digits from step %d to %s', len(digits), step, _OUT.value)
  if _GRID.value:
    logging.info('wrote the grid to %s', _GRID.value)


def write_outputs(outputs: contextlib.ExitStack, config, digits, labels, classes, *, step, num,
                  latent_scale, resample, resampled) -> None:
  """Write --out and --grid beside their paths; `outputs` renames them when it closes."""
  if _OUT.value:
    arrays = dict(images=digits) if labels is None else dict(images=digits, labels=labels)
    arrays['provenance'] = provenance.export_field(
        workdir=os.path.abspath(_WORKDIR.value), dataset=config.data.name,
        checkpoint=_CHECKPOINT.value, step=step, num=num,
        split=config.data.split, num_train_examples=config.data.get('num_train_examples', 0),
        seed=_SEED.value, batch_size=_BATCH.value,
        latent_scale=latent_scale, truncation=_TRUNCATION.value,
        labels=None if _LABELS.value is None else classes,
        per_class=_PER_CLASS.value,
        class_proportions=_PROPORTIONS.value if _PROPORTIONS.present else None,
        resampling=None if resample is None else dict(dataclasses.asdict(resample),
                                                      statistics=resampled))
    outputs.enter_context(generate.npz_written(_OUT.value, compress=_COMPRESS.value, **arrays))
  if _GRID.value:
    if labels is None:
      rows = max(1, int(np.sqrt(min(len(digits), 100))))
      picture = images.grid(digits, rows, scale=config.sample_grid_scale)
    else:
      picture = class_grid(digits, labels, classes, config.sample_grid_scale)
    outputs.enter_context(images.picture_written(picture, _GRID.value))


if __name__ == '__main__':
  console.run(main)
