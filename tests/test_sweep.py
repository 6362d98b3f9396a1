"""experiments.sweep: one run per seed, each scored into its eval.json, summarised in sweep.json;
a second call reuses what is done; bad seeds are refused before any work."""
import dataclasses
import json
import os

import numpy as np
import pytest

from experiments import sweep
from jaxgan import resampling
from jaxgan.evaluation import run_scores
from tests.idx_files import write_manual_dir
from tests.test_experiments import cli

NUM_SAMPLES = 64
CLASSIFIER = run_scores.classifier_sha256('mnist')


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
  manual = tmp_path_factory.mktemp('manual')
  # 1,200 train digits: the real reference is drawn from those outside augmentation's 1,000.
  write_manual_dir(manual, {'mnist': {'train': 1200, 'test': 50}})
  data_dir, workdir = tmp_path_factory.mktemp('tfds'), tmp_path_factory.mktemp('sweep')
  args = ('--config=experiments/configs/tiny.py', f'--workdir={workdir}', '--seeds=3,5',
          '--metrics=fcd,precision_recall', f'--num_samples={NUM_SAMPLES}',
          f'--config.data.manual_dir={manual}', f'--config.data.data_dir={data_dir}')
  first = cli('sweep', *args, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  return workdir, args, first


def read_json(path):
  with open(path) as f:
    return json.load(f)


def test_each_seed_trains_its_own_run_and_is_scored(swept):
  workdir, _, first = swept
  summary = read_json(workdir / sweep.SUMMARY_FILE)
  assert summary['seeds'] == [3, 5] and summary['metrics'] == ['fcd', 'precision_recall']
  for seed in (3, 5):
    assert read_json(workdir / f'seed_{seed}' / 'config.json')['seed'] == seed
    record = read_json(workdir / f'seed_{seed}' / 'eval.json')
    assert record['num_samples'] == NUM_SAMPLES and record['step'] == 16
    assert summary['steps'][str(seed)] == 16
  fcd = summary['figures']['fcd']
  values = [read_json(workdir / f'seed_{seed}' / 'eval.json')['model']['fcd'] for seed in (3, 5)]
  assert fcd['values'] == values and fcd['values'][0] != fcd['values'][1]  # other seed, other G
  np.testing.assert_allclose([fcd['mean'], fcd['std'], fcd['min'], fcd['max']],
                             [np.mean(values), np.std(values), min(values), max(values)])
  # One real reference, scored with the first seed and reused for the second.
  reals = [read_json(workdir / f'seed_{seed}' / 'eval.json')['real'] for seed in (3, 5)]
  assert reals[0] == reals[1] and fcd['real'] == reals[0]['fcd']
  first_record = read_json(workdir / 'seed_3' / 'eval.json')
  assert 'real_from' not in first_record
  assert read_json(workdir / 'seed_5' / 'eval.json')['real_from'] == dict(
      path=str(workdir / 'seed_3' / 'eval.json'), machine=first_record['machine'])
  assert set(summary['figures']) == {'fcd', 'precision', 'recall'}
  assert 'mean' in first.stdout and 'seed 5' in first.stdout


def test_a_second_call_reuses_the_finished_runs_and_their_scores(swept):
  workdir, args, _ = swept
  evals = [workdir / f'seed_{seed}' / 'eval.json' for seed in (3, 5)]
  before = [os.stat(path).st_mtime_ns for path in evals]
  summary = read_json(workdir / sweep.SUMMARY_FILE)
  again = cli('sweep', *args, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert [os.stat(path).st_mtime_ns for path in evals] == before
  assert 'reusing' in again.stderr
  assert read_json(workdir / sweep.SUMMARY_FILE)['figures'] == summary['figures']


def test_a_record_of_another_latent_scale_is_not_reused(swept):
  workdir, _, _ = swept
  path = str(workdir / 'seed_3' / 'eval.json')
  record = read_json(path)
  assert record['latent_scale'] == 1.0
  names = tuple(record['metrics'])
  assert sweep.reusable(path, 16, names, NUM_SAMPLES, 0, CLASSIFIER) == record
  assert sweep.reusable(path, 16, names, NUM_SAMPLES, 0, CLASSIFIER, latent_scale=1.2) is None
  # Records written before the option existed were drawn at scale 1.
  del record['latent_scale']
  older = workdir / 'older_eval.json'
  older.write_text(json.dumps(record))
  assert sweep.reusable(str(older), 16, names, NUM_SAMPLES, 0, CLASSIFIER) == record


def test_a_record_of_another_classifier_is_not_reused_and_metric_order_does_not_matter(
    swept, tmp_path):
  """A classifier trained again (emnist, svhn, --replace_shipped) scores otherwise: its old
  records were reused, and their real figures copied into new seeds' records."""
  workdir, _, _ = swept
  path = str(workdir / 'seed_3' / 'eval.json')
  record = read_json(path)
  names = tuple(record['metrics'])
  assert record['classifier']['sha256'] == CLASSIFIER
  assert sweep.reusable(path, 16, names[::-1], NUM_SAMPLES, 0, CLASSIFIER) == record
  assert sweep.reusable(path, 16, names, NUM_SAMPLES, 0, '0' * 64) is None


def test_a_damaged_record_is_scored_again_not_an_error(tmp_path):
  """An eval.json is derived from its run: the sweep scores the run again and rewrites it."""
  for text in ('{"step": 1', '[1, 2]'):
    (tmp_path / 'eval.json').write_text(text)
    assert sweep.reusable(str(tmp_path / 'eval.json'), 16, ('fcd',), NUM_SAMPLES, 0,
                          CLASSIFIER) is None


def test_a_record_resampled_otherwise_is_not_reused(swept, tmp_path):
  workdir, _, _ = swept
  record = read_json(workdir / 'seed_3' / 'eval.json')
  names = tuple(record['metrics'])
  asked = resampling.Resampling(99, 1000)
  assert sweep.reusable(str(workdir / 'seed_3' / 'eval.json'), 16, names, NUM_SAMPLES, 0,
                        CLASSIFIER, resample=asked) is None
  # What evaluate_run records of a resampling (resampling.resample's statistics).
  record['resampling'] = dict(percentile=99.0, candidates_per_class=1000, kept_share_min=0.1,
                              settings=dataclasses.asdict(asked.settings))
  path = tmp_path / 'resampled_eval.json'
  path.write_text(json.dumps(record))
  assert sweep.reusable(str(path), 16, names, NUM_SAMPLES, 0, CLASSIFIER, resample=asked) == record
  assert sweep.reusable(str(path), 16, names, NUM_SAMPLES, 0, CLASSIFIER) is None
  assert sweep.reusable(str(path), 16, names, NUM_SAMPLES, 0, CLASSIFIER,
                        resample=resampling.Resampling(95, 1000)) is None


def test_a_record_of_other_class_proportions_is_not_reused(swept, tmp_path):
  workdir, _, _ = swept
  record = read_json(workdir / 'seed_3' / 'eval.json')
  names = tuple(record['metrics'])
  record['class_proportions'] = 'train'
  path = tmp_path / 'train_eval.json'
  path.write_text(json.dumps(record))
  assert sweep.reusable(str(path), 16, names, NUM_SAMPLES, 0, CLASSIFIER,
                        proportions='train') == record
  assert sweep.reusable(str(path), 16, names, NUM_SAMPLES, 0, CLASSIFIER) is None
  # Records without the field (unconditional models, or written before it) drew balanced.
  assert sweep.reusable(str(workdir / 'seed_3' / 'eval.json'), 16, names, NUM_SAMPLES,
                        0, CLASSIFIER) is not None


def test_real_figures_are_reused_only_from_a_record_scored_on_this_kind_of_machine(swept):
  workdir, _, _ = swept
  path = str(workdir / 'seed_3' / 'eval.json')
  record = read_json(path)
  assert sweep.real_to_reuse({path: record}) == (
      record['real'], dict(path=path, machine=record['machine']),
      dict(num_real_reference=NUM_SAMPLES, num_real_test=record['num_real_test']))
  copied = dict(record, machine=dict(record['machine'], cpu='another processor'))
  older = {key: value for key, value in record.items() if key != 'machine'}
  # Scored here, but with real figures an evaluate --real_from took from another processor.
  passed_on = dict(record, real_from=dict(path='/elsewhere/eval.json', machine=copied['machine']))
  assert sweep.real_to_reuse({}) is None
  assert sweep.real_to_reuse({'a': copied}) is None and sweep.real_to_reuse({'a': older}) is None
  assert sweep.real_to_reuse({'a': passed_on}) is None
  assert sweep.real_to_reuse({'a': copied, path: record}).figures == record['real']


def test_a_tagged_scoring_is_kept_beside_the_default_one(swept):
  workdir, args, _ = swept
  default = [workdir / f'seed_{seed}' / 'eval.json' for seed in (3, 5)]
  before = [path.read_bytes() for path in (*default, workdir / sweep.SUMMARY_FILE)]
  wide = cli('sweep', *args, '--tag=wide', '--latent_scale=1.2', timeout=600)
  assert wide.returncode == 0, wide.stderr[-3000:]
  assert [path.read_bytes() for path in (*default, workdir / sweep.SUMMARY_FILE)] == before
  summary = read_json(workdir / 'sweep_wide.json')
  assert summary['latent_scale'] == 1.2
  for seed in (3, 5):
    record = read_json(workdir / f'seed_{seed}' / 'eval_wide.json')
    assert record['latent_scale'] == 1.2 and record['step'] == 16
  assert summary['figures']['fcd']['values'] != read_json(
      workdir / sweep.SUMMARY_FILE)['figures']['fcd']['values']


@pytest.mark.parametrize('extra, message', [
    (['--seeds=0,x'], 'is not a list of integers'),
    (['--seeds=1,1'], 'each once'),
    (['--seeds=-1'], 'must name at least one seed in 0..9223372036854775807, each once'),
    # Refused when its turn came, after the seeds before it had trained.
    (['--seeds=0,9223372036854775808'], 'must name at least one seed in 0..9223372036854775807'),
    (['--seeds=0', '--config.seed=5'], "--seeds sets each run's config.seed: drop --config.seed"),
    (['--seeds=0', '--config.seed', '5'],
     "--seeds sets each run's config.seed: drop --config.seed"),
])
def test_bad_seeds_are_one_line_errors_before_any_work(tmp_path, extra, message):
  result = cli('sweep', '--config=experiments/configs/tiny.py', f'--workdir={tmp_path / "s"}',
               *extra)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert message in result.stderr
  assert not os.path.exists(tmp_path / 's')


def test_class_proportions_for_an_unconditional_config_are_refused_before_training(tmp_path):
  result = cli('sweep', '--config=experiments/configs/tiny.py', f'--workdir={tmp_path / "s"}',
               '--class_proportions=train')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --class_proportions=train needs a conditional model, but this run's model is "
      'unconditional (model.num_classes = 0): drop it')
  assert not os.path.exists(tmp_path / 's')


def test_a_dataset_without_its_evaluation_classifier_is_refused_before_any_training(
    tmp_path, monkeypatch):
  """emnist and svhn have no shipped classifier: the sweep trained seed 0 (an hour for a real
  config) before it said so."""
  from experiments.configs import tiny  # pylint: disable=g-import-not-at-top
  from jaxgan import trainer  # pylint: disable=g-import-not-at-top
  from jaxgan.evaluation import weights  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(weights, 'weights_path', lambda dataset: tmp_path / f'{dataset}.msgpack')
  monkeypatch.setattr(trainer, 'train_and_evaluate', lambda *args: 1 / 0)
  config = tiny.get_config()
  config.data.name = 'emnist_digits'
  with pytest.raises(FileNotFoundError, match='^no emnist_digits evaluation classifier yet '):
    sweep.run_sweep(config, str(tmp_path / 's'), [0], ['fcd'], num_samples=NUM_SAMPLES)


def test_an_unknown_metric_is_refused_before_any_training(tmp_path):
  result = cli('sweep', '--config=experiments/configs/tiny.py', f'--workdir={tmp_path / "s"}',
               '--metrics=fcd,sharpness')
  assert result.returncode != 0 and 'sharpness' in result.stderr
  assert not os.path.exists(tmp_path / 's')


def test_a_tag_that_cannot_name_a_file_is_refused_before_any_work(tmp_path):
  result = cli('sweep', '--config=experiments/configs/tiny.py', f'--workdir={tmp_path / "s"}',
               '--tag=../x')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --tag=../x names files: use letters, digits and . _ - only, e.g. --tag=resampled')
  assert not os.path.exists(tmp_path / 's')


def test_a_workdir_that_is_a_file_is_refused_before_any_work(tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  result = cli('sweep', '--config=experiments/configs/tiny.py',
               f'--workdir={tmp_path / "notes.txt"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --workdir={tmp_path / "notes.txt"} is a file, not a sweep folder: pass a new '
      'folder or a sweep folder to resume')
  assert (tmp_path / 'notes.txt').read_text() == 'mine'


def test_a_training_run_folder_as_workdir_is_refused_before_any_work(tmp_path):
  """It trained new runs inside the run: hours of unwanted training with a real config."""
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'config.json').write_text('{}')
  result = cli('sweep', '--config=experiments/configs/tiny.py', f'--workdir={tmp_path / "run"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --workdir={tmp_path / "run"} is a training run folder, not a sweep folder: pass a '
      'new folder (the sweep trains DIR/seed_S), or copy the run in as DIR/seed_S to have it '
      'reused')
  assert os.listdir(tmp_path / 'run') == ['config.json']
