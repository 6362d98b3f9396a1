"""Density-ratio resampling (jaxgan.resampling): the keep rule, the ratio model, the selection
of candidates, the ratio model kept in the run folder, and the scripts' flags."""
from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from jaxgan import data, generate, models, resampling, run_folder, trainer
from jaxgan.evaluation import classifier, run_scores
from jaxgan.state import generator_variables
from tests.test_conditional import conditional_run  # noqa: F401
from tests.test_experiments import cli, data_dirs  # noqa: F401

FAST = resampling.RatioSettings(epochs=1, batch_size=32)


def no_training(*args, **kwargs):
  raise AssertionError('trained again')


def test_keep_mask_keeps_with_probability_ratio_over_the_class_percentile():
  ratios = np.array([0.1, 0.5, 1.0, 2.0])
  # Class 1's ratios are class 0's times 10: the cap is per class, so the same draws keep the
  # same candidates.
  log_r = np.log(np.concatenate([ratios, 10 * ratios]))
  classes = np.repeat([0, 1], 4)
  uniforms = np.tile([0.04, 0.3, 0.49, 0.99], 2)
  # P = 100: the cap is the largest ratio (2): keep probabilities 0.05, 0.25, 0.5, 1.
  kept = resampling.keep_mask(log_r, classes, 100, uniforms)
  np.testing.assert_array_equal(kept, np.tile([True, False, True, True], 2))
  # A lower percentile lowers the cap, and keeps at least as much.
  assert (resampling.keep_mask(log_r, classes, 50, uniforms) >= kept).all()


@pytest.mark.parametrize('percentile', [0, -1, 100.5, float('nan')])
def test_a_percentile_outside_0_100_is_refused(percentile):
  with pytest.raises(ValueError, match=r'percentile must be in \(0, 100\]'):
    resampling.Resampling(percentile)


def test_bad_ratio_settings_are_refused():
  with pytest.raises(ValueError, match='epochs must be >= 1, got 0; binarise_at must be in'):
    resampling.RatioSettings(epochs=0, binarise_at=300)


def test_the_ratio_is_the_real_logit_minus_the_generated_logit_of_the_class():
  settings = resampling.RatioSettings()
  net = resampling.network(3, settings)
  params = classifier.init_params(net, jax.random.key(0))
  images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
  labels = np.array([0, 1, 2, 2, 1])
  logits = classifier.logits(params, resampling.model_inputs(images, settings), model=net)
  expected = logits[np.arange(5), labels] - logits[np.arange(5), 3 + labels]
  np.testing.assert_allclose(resampling.log_ratios(params, images, labels, 3, settings),
                             expected, rtol=1e-6)
  # The model sees binarised pixels: 0 or 255, split at 128.
  seen = resampling.model_inputs(images, settings)
  np.testing.assert_array_equal(seen[..., 0], np.where(images >= 128, 255, 0))
  raw = resampling.RatioSettings(binarise_at=0)
  np.testing.assert_array_equal(resampling.model_inputs(images, raw)[..., 0], images)


def bars(side: str, num: int, seed: int) -> np.ndarray:
  """Digits with a bright vertical bar in the left or right half, at random columns."""
  rng = np.random.default_rng(seed)
  images = np.zeros((num, 28, 28), np.uint8)
  columns = rng.integers(2, 12, num) + (0 if side == 'left' else 14)
  for image, column in zip(images, columns):
    image[4:24, column:column + 2] = 255
  return images


def test_a_fitted_ratio_model_tells_real_from_generated_digits():
  labels = np.arange(256) % 2
  params = resampling.fit(bars('left', 256, 0), labels, bars('right', 256, 1), labels, 2, FAST)
  real = resampling.log_ratios(params, bars('left', 64, 2), labels[:64], 2, FAST)
  fake = resampling.log_ratios(params, bars('right', 64, 3), labels[:64], 2, FAST)
  assert resampling.heldout_accuracy(real, fake) == 1.0
  assert resampling.heldout_accuracy(fake, real) == 0.0


class PixelRatio:
  """A stand-in ratio model: log r is `sharpness` times the centre pixel (in [0, 1])."""
  record = dict(heldout_accuracy=0.5, file='centre pixel')
  settings = resampling.RatioSettings()

  def __init__(self, sharpness: float):
    self.sharpness = sharpness

  def log_ratios(self, images, labels):
    del labels
    return self.sharpness * centre(images) / 255.0


def centre(images: np.ndarray) -> np.ndarray:
  return images[:, 14, 14].astype(np.float32)


@pytest.fixture(scope='module')
def tiny_gan():
  gan = models.build('mlp', num_classes=10)
  variables = gan.generator.init(jax.random.key(0), np.zeros((1, gan.latent_dim), np.float32),
                                 np.zeros(1, np.int32), train=False)
  return gan, variables


def test_keeping_every_candidate_returns_each_class_s_candidates_in_order(tiny_gan):
  gan, variables = tiny_gan
  key = jax.random.key(7)
  labels = np.array([3, 3, 0, 9, 3])
  digits, stats = resampling.resample(gan, variables, PixelRatio(0.0), labels, 5, key=key,
                                      candidates_per_class=4, percentile=50)
  assert stats['kept_share_min'] == stats['kept_share_max'] == 1.0
  # Candidate j has class j mod 10 and latent row j of the first chunk's key: class 3's first
  # two are candidates 3 and 13, class 0's is 0, class 9's is 9.
  latent_key, _ = jax.random.split(key)
  z = np.asarray(generate.latents(jax.random.fold_in(latent_key, 0), 40, gan.latent_dim))
  expected = generate.generate(gan, variables, z[[3, 13, 0, 9, 23]], labels)
  np.testing.assert_array_equal(digits, expected)


def test_resampling_moves_the_digits_towards_high_ratios_and_is_deterministic(tiny_gan):
  gan, variables = tiny_gan
  labels = generate.balanced_labels(100, 10)
  args = dict(key=jax.random.key(1), candidates_per_class=200, percentile=90)
  plain, _ = resampling.resample(gan, variables, PixelRatio(0.0), labels, 100, **args)
  chosen, stats = resampling.resample(gan, variables, PixelRatio(50.0), labels, 100, **args)
  assert centre(chosen).mean() > centre(plain).mean() + centre(plain).std()
  assert 0.05 < stats['kept_share_min'] <= stats['kept_share_max'] < 0.5
  again, _ = resampling.resample(gan, variables, PixelRatio(50.0), labels, 100, **args)
  np.testing.assert_array_equal(again, chosen)


def test_too_few_kept_candidates_is_an_error_naming_the_fix(tiny_gan):
  gan, variables = tiny_gan
  with pytest.raises(ValueError, match=r'resampling kept \d+ of 20 class-0 candidates but 10 '
                     r'are wanted: raise --resample_candidates to at least \d+ or lower '
                     '--resample_percentile'):
    resampling.resample(gan, variables, PixelRatio(1e4), np.zeros(10, np.int32), 10,
                        key=jax.random.key(0), candidates_per_class=20, percentile=100)


def test_the_run_s_ratio_model_is_trained_once_and_kept_in_the_run_folder(
    conditional_run, monkeypatch):  # noqa: F811
  workdir = str(conditional_run)
  config = run_folder.load_run_config(workdir)
  components, state = trainer.restore_run_state(workdir, config)
  args = (workdir, config, components.gan, generator_variables(state), int(state.step))
  ratio = resampling.ratio_model_for_run(*args, latent_scale=1.2, settings=FAST)
  files = sorted(p.name for p in (conditional_run / 'resampling').iterdir())
  assert files == [ratio.record['file'].replace('.msgpack', '.json'), ratio.record['file']]
  assert ratio.record['step'] == 16 and ratio.record['latent_scale'] == 1.2
  assert 0.0 <= ratio.record['heldout_accuracy'] <= 1.0

  with monkeypatch.context() as patch:
    patch.setattr(resampling, 'fit', no_training)
    again = resampling.ratio_model_for_run(*args, latent_scale=1.2, settings=FAST)
  assert jax.tree.all(jax.tree.map(np.array_equal, again.params, ratio.params))
  # Another latent scale is another model; a damaged file is trained again, the same.
  other = resampling.ratio_model_for_run(*args, latent_scale=1.0, settings=FAST)
  assert other.record['file'] != ratio.record['file']
  path = conditional_run / 'resampling' / ratio.record['file']
  path.write_bytes(path.read_bytes()[:-10])
  mended = resampling.ratio_model_for_run(*args, latent_scale=1.2, settings=FAST)
  assert jax.tree.all(jax.tree.map(np.array_equal, mended.params, ratio.params))


def test_the_ratio_model_learns_real_digits_from_the_split_the_run_trained_on(
    conditional_run, monkeypatch):  # noqa: F811
  """data.split and data.num_train_examples pick the real digits, as in training (it read the
  whole train split), and the split is part of the model's key."""
  workdir = str(conditional_run)
  config = run_folder.load_run_config(workdir)
  components, state = trainer.restore_run_state(workdir, config)
  config.unlock()
  config.data.split, config.data.num_train_examples = 'train[:200]', 64
  fitted, fit = {}, resampling.fit

  def fit_and_note(real_images, real_labels, *args, **kwargs):
    fitted.update(images=real_images, labels=real_labels)
    return fit(real_images, real_labels, *args, **kwargs)

  monkeypatch.setattr(resampling, 'fit', fit_and_note)
  ratio = resampling.ratio_model_for_run(workdir, config, components.gan,
                                         generator_variables(state), int(state.step),
                                         settings=FAST)
  images, labels = data.load_split('mnist', 'train[:200]', data_dir=config.data.data_dir,
                                   manual_dir=config.data.manual_dir, num_examples=64)
  np.testing.assert_array_equal(fitted['images'], images)
  np.testing.assert_array_equal(fitted['labels'], labels)
  assert (ratio.record['split'], ratio.record['num_train_examples']) == ('train[:200]', 64)


def test_a_ratio_model_that_cannot_be_kept_is_used_with_a_warning(conditional_run, tmp_path,
                                                                   caplog):  # noqa: F811
  """A run folder this process may not write (a shared, read-only one): the model trained for
  minutes is used, not thrown away by the failed write."""
  workdir = tmp_path / 'run'
  shutil.copytree(conditional_run, workdir, ignore=shutil.ignore_patterns('resampling'))
  (workdir / 'resampling').write_text('a file where the folder goes')  # mkdir fails there
  config = run_folder.load_run_config(str(workdir))
  components, state = trainer.restore_run_state(str(workdir), config)
  ratio = resampling.ratio_model_for_run(str(workdir), config, components.gan,
                                         generator_variables(state), int(state.step),
                                         settings=FAST)
  assert ratio.record['step'] == 16 and len(ratio.record['sha256']) == 64
  assert 'the ratio model is used but not kept ([Errno 17] File exists: ' in caplog.text


def test_sample_and_evaluate_resample_through_the_run_s_ratio_model(
    conditional_run, tmp_path, monkeypatch):  # noqa: F811
  out, grid = tmp_path / 'kept.npz', tmp_path / 'kept.png'
  settings = resampling.RatioSettings(epochs=1, max_shift=2)
  flags = ('--resample_percentile=90', '--resample_candidates=100', '--resample_ratio_epochs=1',
           '--resample_ratio_shift=2')
  result = cli('sample', f'--workdir={conditional_run}', '--per_class=3', f'--out={out}',
               f'--grid={grid}', *flags)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resampled 30 digits from 1000 candidates' in result.stderr
  assert 'training the ratio model on' in result.stderr and '(1 epochs)' in result.stderr
  shifted = [json.loads(path.read_text())['settings']
             for path in (conditional_run / 'resampling').glob('ratio_*.json')]
  assert [s for s in shifted if s['max_shift'] == 2 and s['epochs'] == 1] == [
      dataclasses.asdict(settings)]
  with np.load(out) as npz:
    np.testing.assert_array_equal(npz['labels'], np.repeat(np.arange(10), 3))
    kept = npz['images']
    drawn = json.loads(str(npz['provenance']))
  # The file says how it was drawn: the resampling asked for and what it did.
  assert drawn['resampling']['percentile'] == 90
  assert drawn['resampling']['candidates_per_class'] == 100
  assert drawn['resampling']['settings'] == dataclasses.asdict(settings)
  assert drawn['per_class'] == 3 and drawn['num'] == 30 and drawn['seed'] == 0
  plain = tmp_path / 'plain.npz'
  cli('sample', f'--workdir={conditional_run}', '--per_class=3', f'--out={plain}')
  with np.load(plain) as npz:
    assert (npz['images'] != kept).any()
  assert grid.is_file()
  # The scoring path draws the same way, and records how.
  config = run_folder.load_run_config(str(conditional_run))
  asked = resampling.Resampling(90, 100, settings)
  with monkeypatch.context() as patch:  # the model the CLI trained, found by its settings
    patch.setattr(resampling, 'fit', no_training)
    digits = run_scores.generate_from_run(str(conditional_run), config, 30, 0, resample=asked)
  assert digits.resampling['percentile'] == 90 and digits.resampling['candidates_per_class'] == 100
  assert json.dumps(digits.resampling)  # goes into eval.json as it is


def test_too_few_candidates_stops_sample_with_one_line_and_writes_nothing(
    conditional_run, tmp_path):  # noqa: F811
  out = tmp_path / 'kept.npz'
  result = cli('sample', f'--workdir={conditional_run}', '--per_class=61', f'--out={out}',
               '--resample_percentile=100', '--resample_candidates=60')
  assert result.returncode != 0
  assert 'raise --resample_candidates to at least' in result.stderr.strip().splitlines()[-1]
  assert not out.exists()


def test_the_ratio_model_flags_without_a_percentile_are_refused(tmp_path):
  out = tmp_path / 'digits.npz'
  # Refused before the run is read: the folder need not hold one.
  result = cli('sample', f'--workdir={tmp_path}', '--per_class=3', f'--out={out}',
               '--resample_ratio_shift=2', '--resample_candidates=100')
  assert result.returncode == 1 and not out.exists()
  assert result.stderr.strip().splitlines()[-1] == (
      'error: without --resample_percentile=P nothing is resampled: add it (e.g. 99) or drop '
      '--resample_candidates, --resample_ratio_shift')
  # Scoring a file draws nothing: the flags are refused there too, not ignored.
  result = cli('evaluate', f'--samples={out}', '--dataset=mnist', '--resample_ratio_epochs=1')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: without --resample_percentile=P nothing is resampled: add it (e.g. 99) or drop '
      '--resample_ratio_epochs')
