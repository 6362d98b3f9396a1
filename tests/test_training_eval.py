"""Evaluation during training (config.eval_every): figures appended to metrics.jsonl, the
lowest-fcd state kept in RUN/best/ and described by RUN/best.json, resume, bad settings."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments.configs import tiny
from jaxgan import console, generate, provenance, trainer
from jaxgan.checkpoint import BEST, CheckpointStore
from jaxgan.evaluation import classifier, metrics, run_scores, suite, weights
from jaxgan.evaluation.during_training import read_best
from jaxgan.state import generator_variables, init_state
from tests.idx_files import tiny_digits, write_manual_dir
from tests.npz_files import write_damaged_npz

REPO = Path(__file__).resolve().parent.parent
EVAL_EVERY, EVAL_SAMPLES = 4, 64


@pytest.fixture(scope='module')
def config_factory(tmp_path_factory):
  manual = tmp_path_factory.mktemp('manual')
  # 1,200 train images: the real reference of experiments.evaluate is drawn from those outside
  # the 1,000 that augmentation_gain starts from.
  write_manual_dir(manual, {'mnist': {'train': 1200, 'test': 50}})
  data_dir = tmp_path_factory.mktemp('tfds')

  def make(**overrides):
    config = tiny.get_config()
    config.data.manual_dir, config.data.data_dir = str(manual), str(data_dir)
    config.eval_every, config.eval_num_samples = EVAL_EVERY, EVAL_SAMPLES
    config.update(overrides)
    return config

  return make


def eval_lines(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [row for row in map(json.loads, f) if 'eval_fcd' in row]


@pytest.fixture(scope='module')
def evaluated_run(config_factory, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  config = config_factory()  # 2 epochs of 8 steps: evaluations at 4, 8, 12, 16
  trainer.train_and_evaluate(config, workdir)
  return config, workdir


def test_evaluations_are_appended_to_metrics_jsonl(evaluated_run):
  _, workdir = evaluated_run
  rows = eval_lines(workdir)
  assert [row['step'] for row in rows] == [4, 8, 12, 16]
  for row in rows:
    assert row['eval_num_samples'] == EVAL_SAMPLES
    assert row['eval_fcd'] > 0 and 0 <= row['eval_precision'] <= 1
    assert 0 <= row['eval_recall'] <= 1 and 0 <= row['eval_coverage_entropy'] <= 1


def test_best_checkpoint_holds_the_lowest_fcd_state(evaluated_run):
  config, workdir = evaluated_run
  rows = eval_lines(workdir)
  best_row = min(rows, key=lambda row: row['eval_fcd'])
  best = read_best(workdir)
  assert best['step'] == best_row['step'] and best['fcd'] == best_row['eval_fcd']
  assert best['eval_num_samples'] == EVAL_SAMPLES
  assert os.listdir(os.path.join(workdir, BEST)) == [str(best['step'])]

  # The kept state is that step's generator: re-scoring it gives the recorded fcd exactly.
  components, state = trainer.restore_run_state(workdir, config, BEST)
  state = jax.device_get(state)
  assert int(state.step) == best['step']
  rescored = suite.make_periodic_evaluator(config, components.gan)(generator_variables(state))
  assert rescored['fcd'] == best['fcd']


def test_the_periodic_figures_never_read_the_test_split(config_factory, monkeypatch):
  """They choose the best checkpoint, which experiments.evaluate then scores on the test split:
  until 2026-12-07 they compared with that split too, so the choice had seen it. They compare
  with the train split's digits (all 1,200 here, fewer than PERIODIC_REFERENCE_SIZE)."""
  config = config_factory()
  splits_read, load_split = [], suite.data.load_split
  monkeypatch.setattr(suite.data, 'load_split',
                      lambda name, split, **options: splits_read.append(split)
                      or load_split(name, split, **options))
  components = trainer.build_components(config, total_steps=10)
  evaluate = suite.make_periodic_evaluator(config, components.gan)
  variables = generator_variables(jax.jit(lambda key: init_state(
      components.gan, components.g_tx, components.d_tx, key))(jax.random.key(0)))
  figures = evaluate(variables)
  assert splits_read == ['train']
  train_images, _ = load_split('mnist', 'train', manual_dir=config.data.manual_dir,
                               data_dir=config.data.data_dir)
  params, _ = weights.load_shipped('mnist')
  samples = generate.generate(components.gan, variables, generate.latents(
      jax.random.fold_in(jax.random.key(config.seed), suite.EVAL_LATENT_STREAM), EVAL_SAMPLES,
      components.gan.latent_dim))
  sample_stats, train_stats = (
      metrics.GaussianStats.of(classifier.embed_and_predict(params, images)[0])
      for images in (samples, train_images))
  assert figures['fcd'] == pytest.approx(metrics.frechet_distance(
      sample_stats.mean, sample_stats.covariance, train_stats.mean, train_stats.covariance),
      rel=1e-4)


def test_a_damaged_best_json_is_named_and_the_run_left_alone(evaluated_run, config_factory,
                                                             tmp_path):
  _, workdir = evaluated_run
  config = config_factory(num_epochs=3)
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  (copy / 'best.json').write_text('{"step": ')
  before = {p: p.read_bytes() for p in copy.rglob('*') if p.is_file()}
  with pytest.raises(ValueError, match=rf'^{re.escape(str(copy / "best.json"))} is damaged '
                                       r'\(not JSON: .*\): restore it from a copy of the run '
                                       rf'folder, or move it and {re.escape(str(copy / BEST))} '
                                       'away to track the best state anew from the next '
                                       'evaluation$'):
    trainer.train_and_evaluate(config, str(copy))
  assert {p: p.read_bytes() for p in copy.rglob('*') if p.is_file()} == before


def test_resumed_run_evaluates_as_the_straight_run(evaluated_run, config_factory, tmp_path):
  _, straight = evaluated_run
  trainer.train_and_evaluate(config_factory(num_epochs=1), str(tmp_path))
  trainer.train_and_evaluate(config_factory(), str(tmp_path))
  drop_time = lambda rows: [{k: v for k, v in row.items() if k != 'eval_seconds'}
                            for row in rows]
  assert drop_time(eval_lines(tmp_path)) == drop_time(eval_lines(straight))
  assert read_best(tmp_path) == read_best(straight)


def test_conditional_evaluations_draw_the_configured_class_mix(config_factory, tmp_path,
                                                               monkeypatch):
  scored_labels = []

  def score_images(params, images, labels=None, **kwargs):
    if kwargs.get('name') == 'generated digits':
      scored_labels.append(labels)
    return real_score_images(params, images, labels, **kwargs)

  real_score_images = metrics.score_images
  monkeypatch.setattr(metrics, 'score_images', score_images)
  conditional = dict(model=dict(num_classes=10, conditioning='auxiliary'))
  # The first epoch drawn balanced, the second, resumed, in the train split's proportions.
  trainer.train_and_evaluate(config_factory(num_epochs=1, **conditional), str(tmp_path))
  trainer.train_and_evaluate(config_factory(eval_class_proportions='train', **conditional),
                             str(tmp_path))
  rows = eval_lines(tmp_path)
  assert [(row['step'], row['eval_class_proportions']) for row in rows] == [
      (4, 'balanced'), (8, 'balanced'), (12, 'train'), (16, 'train')]
  # The config_factory's train split, as write_manual_dir drew it: not balanced.
  train_counts = np.bincount(tiny_digits(1200, seed=1200)[1], minlength=10)
  assert len(set(train_counts)) > 1
  np.testing.assert_array_equal(scored_labels[0], np.arange(EVAL_SAMPLES) % 10)
  np.testing.assert_array_equal(scored_labels[-1],
                                generate.class_labels(EVAL_SAMPLES, train_counts))
  # A best state scored on the other mix is not comparable: the first evaluation after the
  # change replaces it, whatever its fcd.
  best = read_best(tmp_path)
  assert best['eval_class_proportions'] == 'train' and best['step'] in (12, 16)
  assert best['fcd'] == min(row['eval_fcd'] for row in rows[2:])


@pytest.mark.parametrize('overrides, message', [
    (dict(eval_every=-1), 'eval_every must be >= 0'),
    (dict(eval_num_samples=3), r'eval_num_samples must be >= 4 \(the periodic metrics need '
     r'that many\), got 3'),
    (dict(eval_class_proportions='train'),
     "eval_class_proportions=train needs a conditional model, but this run's model is "
     'unconditional'),
    (dict(eval_class_proportions='1,2', model=dict(num_classes=10)),
     'eval_class_proportions=1,2 has 2 weights but the model has 10 classes: give balanced, '
     'train or 10 weights'),
])
def test_bad_evaluation_settings_are_refused(config_factory, overrides, message):
  with pytest.raises(ValueError, match=message):
    trainer.validate(config_factory(**overrides))


def test_a_resume_at_another_latent_scale_replaces_the_best_state(config_factory, tmp_path):
  trainer.train_and_evaluate(config_factory(num_epochs=1), str(tmp_path))
  assert read_best(tmp_path)['eval_latent_scale'] == 1.0
  trainer.train_and_evaluate(config_factory(sample_latent_scale=1.5), str(tmp_path))
  rows = eval_lines(tmp_path)
  assert [(row['step'], row['eval_latent_scale']) for row in rows] == [
      (4, 1.0), (8, 1.0), (12, 1.5), (16, 1.5)]
  best = read_best(tmp_path)  # scored at 1.5, against those at 1.5 alone
  assert best['eval_latent_scale'] == 1.5 and best['step'] in (12, 16)
  assert best['fcd'] == min(row['eval_fcd'] for row in rows[2:])
  assert os.listdir(tmp_path / BEST) == [str(best['step'])]


def test_a_best_state_chosen_against_the_test_split_is_replaced_on_resume(config_factory,
                                                                          tmp_path):
  """A best.json from before eval_reference was recorded was measured against the test split:
  its fcd is not comparable with the train-digit figures, so the next evaluation replaces it
  even when its own fcd is higher."""
  trainer.train_and_evaluate(config_factory(num_epochs=1), str(tmp_path))
  best = read_best(tmp_path)
  assert best['eval_reference'] == 'train' and best['step'] in (4, 8)
  del best['eval_reference']
  best['fcd'] = 0.0  # no later evaluation could beat it on its own terms
  (tmp_path / 'best.json').write_text(json.dumps(best))
  trainer.train_and_evaluate(config_factory(), str(tmp_path))
  rows = eval_lines(tmp_path)
  best = read_best(tmp_path)
  assert best['eval_reference'] == 'train' and best['step'] in (12, 16)
  assert best['fcd'] == min(row['eval_fcd'] for row in rows[2:])


def test_a_best_state_saved_at_an_earlier_step_replaces_the_newer_one(config_factory, tmp_path):
  """A run resumed from a checkpoint before its best step, and evaluated otherwise, finds a
  new best at an earlier step: best/ must then hold that one (orbax saves nothing at or below
  its newest step on its own), as best.json says."""
  components = trainer.build_components(config_factory(), total_steps=16)
  state = jax.jit(lambda key: init_state(components.gan, components.g_tx, components.d_tx,
                                         key))(jax.random.key(0))
  store = CheckpointStore(str(tmp_path), keep=1, folder=BEST)
  for step in (16, 12):
    store.save(state.replace(step=jax.numpy.asarray(step, jax.numpy.int32)))
    store.wait()
  assert os.listdir(tmp_path / BEST) == ['12']
  assert int(store.restore(jax.eval_shape(lambda: state)).step) == 12
  store.close()


def test_best_checkpoint_is_missing_without_evaluation(tmp_path):
  with pytest.raises(FileNotFoundError, match='eval_every'):
    CheckpointStore(str(tmp_path), folder=BEST).restore(None)


def test_a_run_scored_by_a_classifier_not_trained_yet_stops_before_writing(tmp_path,
                                                                           monkeypatch):
  # jaxgan ships no EMNIST classifier; this checkout may hold a user's: look elsewhere.
  monkeypatch.setattr(weights, 'weights_path',
                      lambda dataset: tmp_path / 'weights' / f'{dataset}.msgpack')
  config = tiny.get_config()
  config.data.name, config.data.manual_dir = 'emnist_digits', str(tmp_path / 'never_read')
  for overrides in (dict(eval_every=4), dict(data=dict(rarity_power=0.5))):
    config_with = config.copy_and_resolve_references()
    config_with.update(overrides)
    with pytest.raises(FileNotFoundError) as error:
      trainer.train_and_evaluate(config_with, str(tmp_path / 'run'))
    assert str(error.value) == (
        'no emnist_digits evaluation classifier yet (jaxgan ships none for it): train it once '
        'with python -m experiments.train_classifier --config=experiments/configs/'
        f'classifier_emnist.py, which writes {tmp_path / "weights" / "emnist_digits.msgpack"}')
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('dataset', ['emnist_digits', 'svhn'])
def test_a_gan_trains_on_a_dataset_without_a_shipped_classifier(tmp_path, dataset,
                                                                monkeypatch):
  write_manual_dir(tmp_path / 'manual', {dataset: {'train': 256, 'test': 10}})
  config = tiny.get_config()
  config.data.name, config.num_epochs = dataset, 1
  config.data.manual_dir, config.data.data_dir = str(tmp_path / 'manual'), str(tmp_path / 'tfds')
  state = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 8  # tiny.py's 256 digits, batch 32
  assert (tmp_path / 'run' / 'samples' / 'final.png').is_file()
  # Scoring it needs the classifier, which is asked for before any digit is generated.
  monkeypatch.setattr(weights, 'weights_path',
                      lambda dataset: tmp_path / 'weights' / f'{dataset}.msgpack')
  monkeypatch.setattr(run_scores, 'generate_from_run', lambda *args, **kwargs: 1 / 0)
  with pytest.raises(FileNotFoundError, match=f'^no {dataset} evaluation classifier yet '):
    run_scores.evaluate_run(str(tmp_path / 'run'), ['fcd'], num_samples=16)


def test_no_evaluation_by_default(config_factory, tmp_path):
  trainer.train_and_evaluate(config_factory(eval_every=0, num_epochs=1), str(tmp_path))
  assert eval_lines(tmp_path) == [] and read_best(str(tmp_path)) is None
  assert not os.path.exists(tmp_path / BEST)
  np.testing.assert_equal(tiny.get_config().eval_every, 0)


def test_evaluate_scores_the_best_checkpoint(evaluated_run, tmp_path):
  _, workdir = evaluated_run
  out = tmp_path / 'eval.json'
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}', '--checkpoint=best',
       '--num_samples=64', '--metrics=fcd', f'--out={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(out.read_text())
  assert record['checkpoint'] == BEST and record['step'] == read_best(workdir)['step']
  # The machine that scored it, as the run's machine.jsonl records the one that trained it.
  here = provenance.host_record()
  assert {k: record['machine'][k] for k in ('cpu', 'cpu_family', 'isa', 'jax', 'backend')} == {
      k: here[k] for k in ('cpu', 'cpu_family', 'isa', 'jax', 'backend')}


def test_sample_exports_the_best_checkpoint(evaluated_run, config_factory, tmp_path):
  """evaluate could score the best state but sample could not export it."""
  _, evaluated = evaluated_run
  workdir = tmp_path / 'run'
  shutil.copytree(evaluated, workdir)
  config = config_factory(num_epochs=3, eval_every=0)  # newer checkpoints, the best kept
  trainer.train_and_evaluate(config, str(workdir))
  out = tmp_path / 'best.npz'
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.sample', f'--workdir={workdir}', '--checkpoint=best',
       '--num=16', f'--out={out}'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  best = read_best(workdir)
  with np.load(out) as data:
    drawn = json.loads(str(data['provenance']))
    exported = data['images']
  assert (drawn['checkpoint'], drawn['step']) == (BEST, best['step'])
  assert best['step'] < trainer.trained_steps(str(workdir)) == 24
  components, state = trainer.restore_run_state(str(workdir), config, BEST)
  np.testing.assert_array_equal(exported, generate.generate(
      components.gan, generator_variables(state),
      generate.latents(jax.random.key(0), 16, components.gan.latent_dim)))


def test_evaluate_writes_its_record_before_printing_the_table(evaluated_run, tmp_path):
  """`evaluate ... | head -1`: a reader that stops early lost the record (the table was printed
  first, and the write never came), and the script then ended with errno's line, status 1."""
  _, workdir = evaluated_run
  out = tmp_path / 'eval.json'
  process = subprocess.Popen(
      [sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}',
       '--num_samples=64', '--metrics=fcd', f'--out={out}'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  process.stdout.close()  # the reader is gone before the first line
  stderr = process.communicate(timeout=300)[1]
  assert process.returncode == 141, stderr[-3000:]  # 128 + SIGPIPE, as `head`'s writers end
  assert 'error:' not in stderr
  assert json.loads(out.read_text())['metrics'] == ['fcd']


def test_evaluate_records_and_applies_the_latent_scale(evaluated_run, tmp_path):
  _, workdir = evaluated_run
  plain, wide = (run_scores.evaluate_run(workdir, ['fcd'], num_samples=EVAL_SAMPLES,
                                         latent_scale=scale) for scale in (1.0, 1.5))
  assert plain['latent_scale'] == 1.0 and wide['latent_scale'] == 1.5
  assert wide['model']['fcd'] != plain['model']['fcd'] and wide['real'] == plain['real']
  # Without a scale, the run's config field decides: 1 here; a copy of the run whose config
  # says 1.5 scores as the explicit 1.5 did, and an explicit scale still wins.
  assert run_scores.evaluate_run(workdir, ['fcd'], num_samples=EVAL_SAMPLES)['model'] == (
      plain['model'])
  wide_run = tmp_path / 'wide_run'
  shutil.copytree(workdir, wide_run)
  config = json.loads((wide_run / 'config.json').read_text())
  config['sample_latent_scale'] = 1.5
  (wide_run / 'config.json').write_text(json.dumps(config))
  by_config = run_scores.evaluate_run(str(wide_run), ['fcd'], num_samples=EVAL_SAMPLES)
  assert by_config['latent_scale'] == 1.5 and by_config['model'] == wide['model']
  assert run_scores.evaluate_run(str(wide_run), ['fcd'], num_samples=EVAL_SAMPLES,
                                 latent_scale=1.0)['model'] == plain['model']


def test_evaluate_refuses_an_out_file_it_would_destroy_before_any_work(tmp_path):
  samples, config = tmp_path / 'digits.npz', tmp_path / 'config.json'
  np.savez(samples, images=np.zeros((4, 28, 28), np.uint8))
  config.write_text('{"batch_size": 64}')
  (tmp_path / 'earlier.json').write_text('{"metrics": ["fcd"], "classifier": {}, "settings": {}}')
  sweep = tmp_path / 'sweep.json'
  sweep.write_text('{"metrics": ["fcd"], "seeds": [0, 1]}')
  for out, problem in ((samples, 'must end in .json'),
                       (config, f'is where the training of the run {tmp_path} writes its own '
                        'files: name a file elsewhere'),
                       (sweep, 'exists and is not a record this script wrote: name another '
                        'file (it is left as it is)'),
                       (tmp_path, 'is a folder: name a file to write')):
    result = subprocess.run(
        [sys.executable, '-m', 'experiments.evaluate', f'--samples={samples}', '--dataset=mnist',
         f'--out={out}'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == f'error: --out={out} {problem}'
  assert config.read_text() == '{"batch_size": 64}'
  assert sweep.read_text() == '{"metrics": ["fcd"], "seeds": [0, 1]}'
  keys = ('metrics', 'classifier', 'settings')
  console.check_record_out(str(tmp_path / 'earlier.json'), *keys)  # a record: replaceable
  console.check_record_out(str(tmp_path / 'new' / 'eval.json'), *keys)


def test_drawing_options_of_evaluate_need_a_run_and_metrics_are_named(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate', f'--workdir={tmp_path}', '--latent_scale=0'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert ('flag --latent_scale=0.0: --latent_scale must be finite and > 0 (1: the training '
          'distribution)' in result.stderr)
  result = subprocess.run(  # NaN passes absl's bounds
      [sys.executable, '-m', 'experiments.evaluate', f'--workdir={tmp_path}', '--truncation=nan'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.stderr.strip().splitlines()[-1] == (
      'error: flag --truncation=nan: --truncation must be finite and >= 0 (0: none); see '
      '--helpshort')
  for drawing in ('--latent_scale=1.2', '--num_samples=50', '--seed=3', '--checkpoint=best'):
    result = subprocess.run(
        [sys.executable, '-m', 'experiments.evaluate', f'--samples={tmp_path / "x.npz"}',
         '--dataset=mnist', drawing],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --num_samples, --seed, --checkpoint, --truncation, --latent_scale, "
        "--resample_percentile and --class_proportions draw a run's digits: they need "
        "--workdir=RUN, not --samples (whose digits are scored as they are)"), drawing
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate', f'--workdir={tmp_path}', '--metrics='],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert ('flag --metrics=[]: --metrics is empty: name the metrics to compute, or leave the flag '
          'out for all that apply') in result.stderr


def _write_text(path):
  path.write_text('not a zip archive')


def _write_bad_provenance(path):
  np.savez(path, images=np.zeros((4, 28, 28), np.uint8), provenance=np.asarray('seed 0'))


def _write_objects(path):
  np.savez(path, images=np.asarray([np.zeros((28, 28)), 'a digit'], dtype=object))


@pytest.mark.parametrize('write,problem', [
    (write_damaged_npz, "is damaged (BadZipFile: Bad CRC-32 for file 'images.npy'): write it "
     'again, e.g. with experiments.sample'),
    (_write_objects, 'holds Python objects, not arrays of numbers: save the digits as '
     'images=uint8 (N, 28, 28) and labels as integers'),
    (_write_text, 'is not an .npz file: pass one written by experiments.sample or '
     'np.savez(images=uint8 (N, 28, 28), labels=...)'),
    (_write_bad_provenance, 'holds a provenance array that is not the JSON experiments.sample '
     'writes: drop it from the file (or write the file again)')])
def test_evaluate_says_what_is_wrong_with_the_samples_file(tmp_path, write, problem):
  path = tmp_path / 'digits.npz'
  write(path)
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate', f'--samples={path}', '--dataset=mnist'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == f'error: {path} {problem}'


def test_evaluate_scores_samples_whose_provenance_is_the_user_s_own(tmp_path):
  """A provenance that is JSON but not an object (a list of the user's) records nothing jaxgan
  reads: scored, and kept in the record (it was an AttributeError)."""
  path = tmp_path / 'digits.npz'
  np.savez(path, images=np.zeros((8, 28, 28), np.uint8), provenance=np.asarray('[1, 2]'))
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate', f'--samples={path}', '--dataset=mnist',
       '--metrics=classifier_score'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'digits.eval.json') as f:
    assert json.load(f)['samples_provenance'] == [1, 2]


def test_evaluate_names_a_samples_path_that_is_missing_or_a_folder(tmp_path):
  for path, what in ((tmp_path / 'none.npz', 'not found'), (tmp_path, 'is a folder')):
    result = subprocess.run(
        [sys.executable, '-m', 'experiments.evaluate', f'--samples={path}', '--dataset=mnist'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: --samples={path} {what}: pass an .npz written by experiments.sample or one '
        'holding images uint8 (N, 28, 28) and optional labels')


def test_evaluate_reuses_the_real_figures_of_an_earlier_record(evaluated_run, tmp_path, caplog):
  _, workdir = evaluated_run
  names = ['fcd', 'classifier_score']
  earlier = run_scores.evaluate_run(workdir, names, num_samples=EVAL_SAMPLES)
  # A real figure no scoring would give: found in the new record only if reused.
  earlier['real']['fcd'] = 1234.5
  earlier_path, out = tmp_path / 'earlier.json', tmp_path / 'eval.json'
  earlier_path.write_text(json.dumps(earlier))
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}',
       f'--num_samples={EVAL_SAMPLES}', '--metrics=classifier_score,fcd',
       f'--real_from={earlier_path}', f'--out={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(out.read_text())
  assert record['real'] == earlier['real'] and record['model'] == earlier['model']
  assert 'another kind of machine' not in result.stderr
  # The new record says where its real figures came from, and that record's machine scored them.
  assert record['real_from'] == dict(path=str(earlier_path), machine=earlier['machine'])
  # Reused from another processor, or a record naming none, with a warning that says so; another
  # device count changes no score (a sweep scores on the trainer's devices): no warning.
  dataset = earlier['dataset']
  machine = earlier['machine']
  for record, difference in (
      (earlier | {'machine': machine | {'devices': 99}}, None),
      (earlier | {'machine': machine | {'cpu_family': 'x'}}, "cpu_family: 'x' ->"),
      ({k: v for k, v in earlier.items() if k != 'machine'}, 'the record names none')):
    earlier_path.write_text(json.dumps(record))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      assert run_scores.real_results_from(str(earlier_path), dataset, EVAL_SAMPLES,
                                          names).figures == earlier['real']
    if difference is None:
      assert 'another kind of machine' not in caplog.text
    else:
      assert (f'{earlier_path} may have been scored on another kind of machine ({difference}'
              in caplog.text)
  # A record that reused figures scored on another processor passes that machine on: reusing
  # them again warns of it, though the record itself was scored here.
  earlier_path.write_text(json.dumps(record | {
      'real_from': dict(path='/elsewhere/eval.json', machine=machine | {'cpu_family': 'x'})}))
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    reused = run_scores.real_results_from(str(earlier_path), dataset, EVAL_SAMPLES, names)
  assert reused.origin == dict(path=str(earlier_path), machine=machine | {'cpu_family': 'x'})
  assert "another kind of machine (cpu_family: 'x' ->" in caplog.text
  earlier_path.write_text(json.dumps(earlier))
  # A record that scored something else is refused, naming the difference.
  with pytest.raises(ValueError, match=f'scored {EVAL_SAMPLES} digits, not 32: pass a record'):
    run_scores.real_results_from(str(earlier_path), dataset, 32, names)
  with pytest.raises(ValueError, match='scored fcd,classifier_score, not fcd: pass a record'):
    run_scores.real_results_from(str(earlier_path), dataset, EVAL_SAMPLES, ['fcd'])
  earlier['settings']['nearest_k'] = 5
  earlier_path.write_text(json.dumps(earlier))
  with pytest.raises(ValueError, match='was scored with other metric settings: pass a record'):
    run_scores.real_results_from(str(earlier_path), dataset, EVAL_SAMPLES, names)
  earlier_path.write_text('{"model": {}}')
  with pytest.raises(ValueError, match='holds no real reference figures'):
    run_scores.real_results_from(str(earlier_path), dataset, EVAL_SAMPLES, names)
  not_json = tmp_path / 'digits.npz'
  np.savez(not_json, images=np.zeros((2, 28, 28), np.uint8))
  for path, error, problem in ((not_json, ValueError, 'is not JSON'),
                               (tmp_path / 'none.json', FileNotFoundError, 'not found')):
    with pytest.raises(error, match=re.escape(
        f'--real_from={path} {problem}: pass an eval.json written by experiments.evaluate')):
      run_scores.real_results_from(str(path), dataset, EVAL_SAMPLES, names)


def test_reused_real_figures_must_come_from_the_same_real_data(config_factory, evaluated_run,
                                                               monkeypatch):
  """Reused real figures need no reference digits drawn; a record that counted other real
  digits than the real data loaded now (another manual folder under the same dataset name) is
  refused, by evaluate_run before it generates any digit."""
  config = config_factory()
  images = tiny_digits(EVAL_SAMPLES, seed=3)[0]
  figures = dict(classifier_score=1.5)
  reused = run_scores.ReusedReal(figures, dict(path='/runs/a/eval.json', machine=None),
                                 dict(num_real_reference=EVAL_SAMPLES, num_real_test=50))
  record = run_scores.score_digits(images, None, 'mnist', ['classifier_score'],
                                   manual_dir=config.data.manual_dir,
                                   data_dir=config.data.data_dir, real_results=reused)
  assert record['real'] == figures and record['num_real_reference'] == EVAL_SAMPLES
  assert record['num_real_test'] == 50
  for counts, problem in ((dict(num_real_reference=EVAL_SAMPLES, num_real_test=40), '40 real test'),
                          (dict(num_real_reference=12, num_real_test=50), '12 real reference')):
    with pytest.raises(ValueError, match=re.escape(
        f'/runs/a/eval.json scored {problem} digits, this real data gives ')):
      run_scores.score_digits(images, None, 'mnist', ['classifier_score'],
                              manual_dir=config.data.manual_dir, data_dir=config.data.data_dir,
                              real_results=reused._replace(counts=counts))
  _, workdir = evaluated_run

  def generate_from_run(*args, **kwargs):
    raise AssertionError('digits generated before the reused figures were checked')

  monkeypatch.setattr(run_scores, 'generate_from_run', generate_from_run)
  with pytest.raises(ValueError, match='scored 40 real test digits, this real data gives 50'):
    run_scores.evaluate_run(workdir, ['classifier_score'], num_samples=EVAL_SAMPLES,
                            real_results=reused._replace(counts=dict(num_real_reference=None,
                                                                      num_real_test=40)))
