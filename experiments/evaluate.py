r"""Score generated digits against real ones, next to the same scores for real data.

python -m experiments.evaluate --workdir=RUN --num_samples=10000 \
    --metrics=fcd,classifier_score,precision_recall,coverage
  generates --num_samples digits from RUN's newest checkpoint (conditional models: every
  class equally often, labelled, or --class_proportions=train in the real train split's class
  frequencies; --resample_percentile: kept by a density-ratio model, see experiments.sample)
  and writes RUN/eval.json.
python -m experiments.evaluate --samples=digits.npz --dataset=mnist
  scores an existing .npz (`images` uint8 (N, 28, 28), optional `labels`) and writes
  digits.eval.json beside it.
--real_from=EVAL.json reuses the real digits' figures of an earlier record of the same dataset,
number of digits and metrics (cas_cnn's alone take minutes) instead of scoring them again.

Metrics (default: all that the samples allow): fcd, classifier_score, precision_recall,
coverage, and with labels label_accuracy, cas, cas_cnn, augmentation_gain; memorisation only when
asked for; see jaxgan.evaluation.metrics.
The real reference is a real train subset of the same size, scored against the same test split.
"""
import os
import zipfile
import zlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from jaxgan import console  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':  # before jax and TensorFlow load, which takes seconds
  console.take_stop_signals()

import numpy as np
from absl import app, flags, logging

from jaxgan import class_proportions, provenance, resampling, rng
from jaxgan.checkpoint import BEST, LATEST
from jaxgan.evaluation import run_scores, suite, weights
from jaxgan.run_folder import load_run_config, write_json_atomic

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder written by experiments.train.')
_SAMPLES = flags.DEFINE_string('samples', None, '.npz of digits to score instead of a run.')
_DATASET = flags.DEFINE_enum('dataset', None, list(weights.TRAIN_COMMANDS),
                             'Real data to compare --samples with (a run knows its own).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 10000,
                                    'Digits generated from the run (--workdir only).',
                                    lower_bound=2)
_TRUNCATION = console.define_truncation('Truncation trick for the generated latents '
                                         '(--workdir only; see experiments.sample).')
_LATENT_SCALE = console.define_latent_scale('Multiplies the generated latents (--workdir only; '
                                            'see experiments.sample); 1: none.')
_RESAMPLE = resampling.define_flags(' (--workdir only)')
_PROPORTIONS = class_proportions.define_flag(' (--workdir only)')
_CHECKPOINT = flags.DEFINE_enum('checkpoint', LATEST, [LATEST, BEST],
                                'Which state of the run: its newest checkpoint, or the best one '
                                'kept by evaluation during training (config.eval_every).')
_METRICS = flags.DEFINE_list('metrics', None, 'Metrics to compute; default: all applicable.')
console.refuse_empty_metrics()
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the latent vectors (--workdir only).',
                            lower_bound=0, upper_bound=rng.MAX_SEED)
_OUT = flags.DEFINE_string('out', None, 'Where to write the results; default: RUN/eval.json '
                           'or FILE.eval.json beside --samples.')
_REAL_FROM = flags.DEFINE_string('real_from', None, "An earlier eval.json of the same dataset, "
                                 "number of digits and metrics: its real digits' figures are "
                                 'reused, not computed again.')
_MANUAL_DIR, _DATA_DIR = console.define_data_location_flags()
# Flags that helper modules defined for this script: list them in its --help too.
flags.adopt_module_key_flags(class_proportions)
flags.adopt_module_key_flags(console)
flags.adopt_module_key_flags(resampling)


def load_samples(path: str) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
  """(images, labels or None, provenance or None: what experiments.sample records of how it
  drew them)."""
  if not os.path.isfile(path):
    what = 'is a folder' if os.path.isdir(path) else 'not found'
    raise FileNotFoundError(f'--samples={path} {what}: pass an .npz written by experiments.sample '
                            'or one holding images uint8 (N, 28, 28) and optional labels')
  if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and say so
    raise ValueError(f'{path} is not an .npz file: pass one written by experiments.sample or '
                     'np.savez(images=uint8 (N, 28, 28), labels=...)')
  try:
    with np.load(path) as npz:
      if 'images' not in npz:
        raise ValueError(f'{path} holds {", ".join(npz.files) or "nothing"}, no images array: '
                         'save the digits as images=uint8 (N, 28, 28)')
      drawn = provenance.from_export(npz, path)
      try:
        return npz['images'], npz['labels'] if 'labels' in npz else None, drawn
      except ValueError:  # numpy refuses object arrays (pickles) without allow_pickle
        raise ValueError(f'{path} holds Python objects, not arrays of numbers: save the digits '
                         'as images=uint8 (N, 28, 28) and labels as integers') from None
  except (zipfile.BadZipFile, zlib.error, EOFError) as error:  # damaged inside the zip
    raise ValueError(f'{path} is damaged ({type(error).__name__}: {error}): write it again, '
                     'e.g. with experiments.sample') from None


def known_real(dataset: str, num_samples: int, names) -> run_scores.ReusedReal | None:
  """--real_from's real figures, checked against what this call scores; None without it."""
  if _REAL_FROM.value is None:
    return None
  return run_scores.real_results_from(_REAL_FROM.value, dataset, num_samples, names)


def default_out() -> str:
  """Where the record goes without --out: RUN/eval.json, or FILE.eval.json beside the digits."""
  if _WORKDIR.value:
    return os.path.join(_WORKDIR.value, 'eval.json')
  return os.path.splitext(_SAMPLES.value)[0] + '.eval.json'


def main(argv):
  del argv  # flags only: console.run refuses other arguments
  if (_WORKDIR.value is None) == (_SAMPLES.value is None):
    raise app.UsageError('give exactly one of --workdir=RUN and --samples=FILE.npz')
  resample = _RESAMPLE.resampling()
  if _SAMPLES.value and (resample is not None or any(
      flag.present for flag in (_NUM_SAMPLES, _SEED, _CHECKPOINT, _TRUNCATION, _LATENT_SCALE,
                                _PROPORTIONS))):
    raise app.UsageError('--num_samples, --seed, --checkpoint, --truncation, --latent_scale, '
                         '--resample_percentile and --class_proportions draw a run\'s digits: '
                         'they need --workdir=RUN, not --samples (whose digits are scored as '
                         'they are)')
  if _SAMPLES.value and not _DATASET.value:
    raise app.UsageError(f'--samples needs --dataset={"|".join(weights.TRAIN_COMMANDS)}: the '
                         'real data to compare with')
  if _OUT.value:
    console.check_record_out(_OUT.value, 'metrics', 'classifier', 'settings')  # not a sweep's
  else:  # the record's place by default: a read-only run folder says so before the work
    console.check_file_to_write('out', default_out())
  console.setup_logging()
  out = _OUT.value or default_out()
  if os.path.isfile(out):  # scoring can take minutes: say so now, while Ctrl-C loses nothing
    logging.warning('%s holds an earlier record, which this one replaces when it is done (pass '
                    '--out=FILE to keep both)', out)
  if _WORKDIR.value:
    config = load_run_config(_WORKDIR.value)
    if _DATASET.value and _DATASET.value != config.data.name:
      raise ValueError(f'--dataset={_DATASET.value} but the run trained on {config.data.name}: '
                       'drop --dataset')
    names = suite.resolve_metric_names(_METRICS.value,
                                       has_labels=config.model.get('num_classes', 0) > 0)
    record = run_scores.evaluate_run(
        _WORKDIR.value, list(names), num_samples=_NUM_SAMPLES.value, seed=_SEED.value,
        checkpoint=_CHECKPOINT.value, truncation=_TRUNCATION.value,
        latent_scale=_LATENT_SCALE.value, resample=resample,
        manual_dir=_MANUAL_DIR.value, data_dir=_DATA_DIR.value,
        real_results=known_real(config.data.name, _NUM_SAMPLES.value, names),
        proportions=_PROPORTIONS.value)
  else:
    images, labels, drawn = load_samples(_SAMPLES.value)
    provenance.check_export_dataset(drawn, _DATASET.value, _SAMPLES.value)
    names = suite.resolve_metric_names(_METRICS.value, has_labels=labels is not None)
    run_scores.warn_of_labels_seen(provenance.recorded(drawn, 'num_train_examples'), names,
                                   provenance.recorded(drawn, 'split'))
    record = dict(samples=_SAMPLES.value, samples_provenance=drawn, **run_scores.score_digits(
        images, labels, _DATASET.value, list(names), manual_dir=_MANUAL_DIR.value,
        data_dir=_DATA_DIR.value,
        real_results=known_real(_DATASET.value, len(images), names)))
  write_json_atomic(record, out)
  logging.info('wrote %s (%.0f s)', out, record['seconds'])
  # After the record is written: a reader that stops early (| head) then costs nothing.
  print(suite.format_table(record), flush=True)


if __name__ == '__main__':
  console.run(main)
