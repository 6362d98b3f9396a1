r"""Train and score one config at several seeds: the spread between seeds, in one command.

python -m experiments.sweep --config=experiments/configs/cgan_kannada.py \
    --workdir=runs/cgan_kannada_seeds --seeds=0,1,2 --metrics=fcd,label_accuracy,cas_cnn
  trains (or resumes) DIR/seed_S with --config.seed=S for each seed, scores its newest
  checkpoint with experiments.evaluate's suite into DIR/seed_S/eval.json, and writes
  DIR/sweep.json: each seed's figures and, per figure, their mean, std (numpy's, ddof 0, as
  augmentation_gain's) and range, beside the real digits' figure.

Other --config.FIELD=VALUE overrides apply to every seed. Running the command again resumes
unfinished runs and reuses each eval.json that scored the same step, metrics, samples,
--latent_scale, --resample_percentile and --class_proportions, so adding a seed or raising
--config.num_epochs costs only the new training and scoring.
--tag=NAME keeps a scoring apart: DIR/seed_S/eval_NAME.json and DIR/sweep_NAME.json, so that the
same runs scored another way (e.g. --latent_scale=1.4 --resample_percentile=99) do not replace
the default scoring's records.
Differences between two recipes smaller than the range over seeds are not differences.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from jaxgan import console  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':  # before jax and TensorFlow load, which takes seconds
  console.take_stop_signals()

import copy
import dataclasses
import json
import re

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from jaxgan import (class_proportions, parallel, resampling, rng, run_folder,
                    trainer)
from jaxgan.checkpoint import LATEST
from jaxgan.evaluation import run_scores, suite
from jaxgan.run_folder import write_json_atomic

_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep folder: one run folder per seed in it.')
config_flags.DEFINE_config_file('config', None, 'Training config file.', lock_config=True)
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds (config.seed), one run each.')
_METRICS = flags.DEFINE_list('metrics', None, 'Metrics to compute; default: all applicable.')
console.refuse_empty_metrics()
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 10000, 'Digits generated from each run.',
                                    lower_bound=2)
_EVAL_SEED = flags.DEFINE_integer('eval_seed', 0, "Seed of the scored digits' latents.",
                                  lower_bound=0, upper_bound=rng.MAX_SEED)
_LATENT_SCALE = console.define_latent_scale("Multiplies the scored digits' latents (see "
                                            'experiments.sample); 1: none.')
_RESAMPLE = resampling.define_flags(' of the scored digits')
_PROPORTIONS = class_proportions.define_flag(' for scoring')
_TAG = flags.DEFINE_string('tag', '', "Names this scoring's files: seed_S/eval_TAG.json and "
                           'sweep_TAG.json, beside the default eval.json and sweep.json.')
# Flags that helper modules defined for this script: list them in its --help too.
flags.adopt_module_key_flags(class_proportions)
flags.adopt_module_key_flags(console)
flags.adopt_module_key_flags(resampling)
flags.mark_flags_as_required(['config', 'workdir'])

SUMMARY_FILE = 'sweep.json'


def file_names(tag: str) -> tuple[str, str]:
  """(each seed's record, the summary) of a scoring named `tag` ('': the default scoring)."""
  if not tag:
    return 'eval.json', SUMMARY_FILE
  if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', tag):
    raise ValueError(f'--tag={tag} names files: use letters, digits and . _ - only, e.g. '
                     '--tag=resampled')
  return f'eval_{tag}.json', f'sweep_{tag}.json'


def parse_seeds(values: list[str]) -> list[int]:
  try:
    seeds = [int(value) for value in values]
  except ValueError:
    raise ValueError(f'--seeds={",".join(values)} is not a list of integers: pass e.g. '
                     '--seeds=0,1,2') from None
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) > rng.MAX_SEED:
    raise ValueError(f'--seeds={",".join(values)} must name at least one seed in '
                     f'0..{rng.MAX_SEED}, each once')
  return seeds


def reusable(path: str, step: int, names: tuple[str, ...], num_samples: int,
             eval_seed: int, classifier: str, latent_scale: float = 1.0,
             resample: resampling.Resampling | None = None,
             proportions: str = class_proportions.BALANCED) -> dict | None:
  """The record in `path` if it scored the run's state at `step` the way asked, with the
  evaluation classifier whose SHA-256 is `classifier`, else None."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      record = json.load(f)
    except ValueError:
      record = None
  if not isinstance(record, dict):  # derived from the run: scored again, and rewritten
    logging.warning('%s is not an evaluation record: scoring the run again', path)
    return None
  same = (record.get('step') == step and set(record.get('metrics', ())) == set(names)
          and record.get('num_samples') == num_samples and record.get('seed') == eval_seed
          and record.get('classifier', {}).get('sha256') == classifier
          and record.get('checkpoint') == LATEST and not record.get('truncation')
          and record.get('latent_scale', 1.0) == latent_scale
          and record.get('settings') == run_scores.recorded_settings()
          and resampled_as(record.get('resampling')) == resample
          and record.get('class_proportions', class_proportions.BALANCED) == proportions)
  return record if same else None


def resampled_as(stats: dict | None) -> resampling.Resampling | None:
  """The resampling an eval.json's `resampling` statistics record (None: none)."""
  if stats is None:
    return None
  return resampling.Resampling(stats['percentile'], stats['candidates_per_class'],
                               resampling.RatioSettings(**stats['settings']))


def real_to_reuse(records: dict[str, dict]) -> run_scores.ReusedReal | None:
  """The real figures of an earlier seed's record (`records`: by path) whose real figures were
  scored on this kind of machine, else None. The real reference is the same digits for every
  seed, so it is scored once per sweep; but a reused eval.json copied from another machine
  holds figures this one computes differently in the last digits."""
  for path, record in records.items():
    if not run_scores.real_machine_differences(record):
      return run_scores.reused_real(path, record)
  return None


def summarise(records: dict[int, dict]) -> dict:
  """Per scalar figure of the generated digits: each seed's value, their mean, std (ddof 0),
  min and max, and the real digits' value."""
  first = next(iter(records.values()))
  figures = {}
  for name, value in first['model'].items():
    if not isinstance(value, (int, float)):
      continue  # e.g. class_shares, a list per run
    values = np.array([records[seed]['model'][name] for seed in records], np.float64)
    figures[name] = dict(values=values.tolist(), mean=float(values.mean()),
                         std=float(values.std()), min=float(values.min()),
                         max=float(values.max()), real=first.get('real', {}).get(name))
  return figures


def format_summary(seeds: list[int], figures: dict) -> str:
  header = ['figure', *(f'seed {seed}' for seed in seeds), 'mean', 'std', 'real']
  rows = [header]
  for name, figure in figures.items():
    real = figure['real']
    rows.append([name, *(f'{v:.4f}' for v in figure['values']), f'{figure["mean"]:.4f}',
                 f'{figure["std"]:.4f}', '-' if real is None else f'{real:.4f}'])
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  return '\n'.join('  '.join(cell.rjust(width) if i else cell.ljust(width)
                             for i, (cell, width) in enumerate(zip(row, widths)))
                   for row in rows)


def run_sweep(config, workdir: str, seeds: list[int], names: list[str] | None, *,
              num_samples: int = 10000, eval_seed: int = 0,
              latent_scale: float | None = None,
              resample: resampling.Resampling | None = None, tag: str = '',
              proportions: str = class_proportions.BALANCED) -> dict:
  """Train (or resume) and score one run per seed in `workdir`; write and return the summary.
  `latent_scale` None: the config's sample_latent_scale; `resample`: see
  `run_scores.generate_from_run`; `tag`: see `file_names`; `proportions`: see
  `run_scores.evaluate_run`."""
  eval_name, summary_name = file_names(tag)
  latent_scale = run_folder.latent_scale(config, latent_scale)
  names = suite.resolve_metric_names(names, has_labels=config.model.get('num_classes', 0) > 0,
                                     num_samples=num_samples)
  class_proportions.parse(proportions, config.model.get('num_classes', 0))  # before training
  classifier = run_scores.classifier_sha256(config.data.name)  # refused before any training
  records, scored = {}, {}  # by seed; by eval.json path
  for seed in seeds:
    run_config = copy.deepcopy(config)
    run_config.seed = seed
    run_dir = os.path.join(workdir, f'seed_{seed}')
    logging.info('seed %d: training %s', seed, run_dir)
    state = trainer.train_and_evaluate(run_config, run_dir)
    eval_path = os.path.join(run_dir, eval_name)
    record = reusable(eval_path, int(state.step), names, num_samples, eval_seed, classifier,
                      latent_scale, resample, proportions)
    if record is None:
      record = run_scores.evaluate_run(run_dir, list(names), num_samples=num_samples,
                                       seed=eval_seed, latent_scale=latent_scale,
                                       resample=resample, real_results=real_to_reuse(scored),
                                       proportions=proportions)
      write_json_atomic(record, eval_path)
      print(suite.format_table(record), flush=True)  # after the record: see evaluate.py
    else:
      logging.info('seed %d: reusing %s (step %d)', seed, eval_path, record['step'])
    records[seed] = scored[eval_path] = record
  figures = summarise(records)
  summary = dict(seeds=seeds, metrics=list(names), num_samples=num_samples, eval_seed=eval_seed,
                 latent_scale=latent_scale,
                 resampling=None if resample is None else dataclasses.asdict(resample),
                 class_proportions=proportions,
                 steps={str(seed): records[seed]['step'] for seed in seeds},
                 config=json.loads(config.to_json()), figures=figures)
  write_json_atomic(summary, os.path.join(workdir, summary_name))
  print(format_summary(seeds, figures), flush=True)
  return summary


def main(argv):
  del argv  # flags only: console.run refuses other arguments
  if 'seed' in config_flags.get_override_values(flags.FLAGS['config']):
    raise app.UsageError('--seeds sets each run\'s config.seed: drop --config.seed')
  if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
    raise app.UsageError(f'--workdir={_WORKDIR.value} is a file, not a sweep folder: pass a new '
                         'folder or a sweep folder to resume')
  if os.path.isfile(os.path.join(_WORKDIR.value, 'config.json')):  # its runs would nest in it
    raise app.UsageError(f'--workdir={_WORKDIR.value} is a training run folder, not a sweep '
                         'folder: pass a new folder (the sweep trains DIR/seed_S), or copy the '
                         'run in as DIR/seed_S to have it reused')
  console.setup_logging()
  seeds = parse_seeds(_SEEDS.value)
  summary_name = file_names(_TAG.value)[1]
  config = console.config_from_flag(console.GAN_CONFIG)
  # CPU: config.cpu_devices jax devices, as experiments.train sets them (before any jax call).
  parallel.configure_cpu_devices(config.get('cpu_devices', -1), divides=config.batch_size)
  run_sweep(config, _WORKDIR.value, seeds, _METRICS.value, num_samples=_NUM_SAMPLES.value,
            eval_seed=_EVAL_SEED.value, latent_scale=_LATENT_SCALE.value,
            resample=_RESAMPLE.resampling(), tag=_TAG.value, proportions=_PROPORTIONS.value)
  logging.info('wrote %s', os.path.join(_WORKDIR.value, summary_name))


if __name__ == '__main__':
  console.run(main)
