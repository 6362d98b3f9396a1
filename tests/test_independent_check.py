"""experiments.independent_check: its own IDX reader and FID agree with the closed forms and with
jaxgan's reader, and the script scores .npz files with both evaluators end to end."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import app

from experiments import independent_check
from jaxgan.data import svhn
from jaxgan.data.idx import read_idx_pair
from jaxgan.evaluation import weights
from tests.idx_files import write_manual_dir
from tests.npz_files import write_damaged_npz


def test_reader_matches_jaxgans_reader(tmp_path):
  arrays = write_manual_dir(tmp_path, {'mnist': {'train': 30, 'test': 20}})
  images, labels = independent_check.read_split(str(tmp_path), 'mnist', 'train')
  np.testing.assert_array_equal(images, arrays['mnist']['train'][0])
  np.testing.assert_array_equal(labels, arrays['mnist']['train'][1])
  ours_images, ours_labels = read_idx_pair(tmp_path / 'mnist' / 'train-images-idx3-ubyte.gz',
                                           tmp_path / 'mnist' / 'train-labels-idx1-ubyte.gz')
  np.testing.assert_array_equal(images, ours_images)
  np.testing.assert_array_equal(labels, ours_labels)


def test_emnist_digits_are_read_upright_as_jaxgan_loads_them(tmp_path):
  """EMNIST's files hold transposed digits; both readers turn them upright."""
  arrays = write_manual_dir(tmp_path, {'emnist_digits': {'train': 12, 'test': 6}})
  images, labels = independent_check.read_split(str(tmp_path), 'emnist_digits', 'test')
  stored_images, stored_labels = arrays['emnist_digits']['test']
  np.testing.assert_array_equal(images, stored_images.transpose(0, 2, 1))
  np.testing.assert_array_equal(labels, stored_labels)


def test_svhn_is_read_as_grey_28x28_digits_as_jaxgan_loads_them(tmp_path):
  """The independent reader makes SVHN's photographs grey 28x28 digits with TensorFlow's
  greyscale and area resize, jaxgan with numpy: they agree within one grey level."""
  arrays = write_manual_dir(tmp_path, {'svhn': {'train': 12, 'test': 40}})
  images, labels = independent_check.read_split(str(tmp_path), 'svhn', 'test')
  photos, stored_labels = arrays['svhn']['test']
  assert images.dtype == np.uint8 and images.shape == (40, 28, 28)
  np.testing.assert_array_equal(labels, stored_labels)
  difference = np.abs(images.astype(int) - svhn.to_mnist_format(photos)[..., 0].astype(int))
  assert difference.max() <= 1 and (difference > 0).mean() < 0.05


def test_fid_is_zero_for_one_set_and_closed_form_for_shifted_scaled_gaussians():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(20000, 4))
  assert abs(independent_check.fid(a, a)) < 1e-9
  b = a * 2.0 + 1.0  # covariance 4C, sqrt(C 4C) = 2C: |mean_a + 1|^2 + tr(C + 4C - 2 * 2C)
  expected = np.sum((a.mean(0) + 1.0) ** 2) + np.trace(np.cov(a, rowvar=False))
  np.testing.assert_allclose(independent_check.fid(a, b), expected, rtol=1e-6)


def test_box_blur_keeps_flat_images_and_spreads_a_dot():
  flat = np.full((1, 28, 28), 90, np.uint8)
  np.testing.assert_array_equal(independent_check.box_blur3(flat), flat)
  dot = np.zeros((1, 28, 28), np.uint8)
  dot[0, 10, 10] = 198
  blurred = independent_check.box_blur3(dot)
  assert blurred[0, 9:12, 9:12].tolist() == [[22] * 3] * 3 and blurred.sum() == 22 * 9


def test_matched_epochs_keep_the_evaluators_number_of_batches():
  assert independent_check.matched_epochs(3, 60000, 10000) == 18
  assert independent_check.matched_epochs(3, 60000, 60000) == 3
  assert independent_check.matched_epochs(3, 60000, 1000000) == 1  # never fewer than one pass


def _block_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Noisy digits whose class is where a bright 6x6 block sits: easy to learn, so a recogniser
  trained on them scores high on more of the same and chance with the labels shuffled."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, count)
  images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
  for image, label in zip(images, labels):
    row, col = divmod(int(label), 5)
    image[2 + 12 * row:8 + 12 * row, 2 + 5 * col:8 + 5 * col] = 255
  return images, labels


def test_keras_cas_is_high_for_informative_labels_and_chance_for_shuffled_ones():
  images, labels = _block_digits(600, seed=0)
  test_images, test_labels = _block_digits(300, seed=1)
  # No translations: the class is the block's position.
  informative = independent_check.keras_cas(images, labels, test_images, test_labels, epochs=4,
                                            seed=0, max_translation=0.0)
  shuffled = independent_check.keras_cas(images, np.random.default_rng(2).permutation(labels),
                                         test_images, test_labels, epochs=4, seed=0,
                                         max_translation=0.0)
  assert informative > 0.95, informative
  assert shuffled < 0.3, shuffled


def test_keras_recogniser_translates_its_training_digits_reproducibly_and_only_in_training():
  import keras  # pylint: disable=import-outside-toplevel
  images, labels = _block_digits(256, seed=0)

  def translations(classifier):
    return [layer for layer in classifier.layers
            if isinstance(layer, keras.layers.RandomTranslation)]

  plain = independent_check.keras_classifier(images, labels, epochs=1, seed=0)
  assert not translations(plain)  # the architecture of the figures measured before the option
  first, second = (independent_check.keras_classifier(images, labels, epochs=1, seed=0,
                                                      max_translation=0.1) for _ in range(2))
  (layer,) = translations(first)
  assert (layer.height_factor, layer.width_factor, layer.fill_mode) == (0.1, 0.1, 'constant')
  for a, b in zip(first.get_weights(), second.get_weights()):  # seeded draws: same recogniser
    np.testing.assert_array_equal(a, b)
  # The translations change what it learns.
  assert any(not np.array_equal(a, b) for a, b in zip(plain.get_weights(), first.get_weights()))
  predict = lambda: first.predict(images[:64, ..., None], verbose=0)
  np.testing.assert_array_equal(predict(), predict())  # no translation at inference


def test_script_scores_samples_with_both_evaluators(tmp_path):
  arrays = write_manual_dir(tmp_path / 'idx', {'mnist': {'train': 300, 'test': 100}})
  images, labels = arrays['mnist']['test']
  np.savez(tmp_path / 'model.npz', images=images[:50], labels=labels[:50].astype(np.int32))
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.independent_check', '--dataset=mnist',
       f'--idx_dir={tmp_path / "idx"}', f'--samples={tmp_path / "model.npz"}', '--num_real=100',
       '--epochs=1', '--cas_seeds=2', f'--out={tmp_path / "results" / "check.json"}'],
      capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)),
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  record = json.loads((tmp_path / 'results' / 'check.json').read_text())  # its folder made
  assert set(record['sets']) == {'real', 'real_blur3', 'model'}
  model = record['sets']['model']
  assert model['num'] == 50
  for key in ('ours_fcd', 'keras_fid', 'ours_classifier_score', 'keras_score',
              'ours_label_accuracy', 'keras_label_accuracy', 'keras_cas'):
    assert np.isfinite(model[key]), key
  assert 0.0 <= model['keras_cas'] <= 1.0
  # keras_cas is the mean of one recogniser per seed (--seed, --seed + 1), each reproducible.
  first, second = model['keras_cas_per_seed']
  assert model['keras_cas'] == pytest.approx((first + second) / 2)
  assert model['keras_cas_std'] == pytest.approx(abs(first - second) / 2)
  test_images, test_labels = arrays['mnist']['test']
  assert first == independent_check.keras_cas(
      images[:50], labels[:50].astype(np.int32), test_images, test_labels, epochs=6, seed=0,
      max_translation=0.1)
  # 1 epoch over the 300 train digits is 6 epochs over the 50 samples, 3 over the 100 real ones.
  assert model['keras_cas_epochs'] == 6 and record['sets']['real']['keras_cas_epochs'] == 3
  assert 'ours_label_accuracy' in record['sets']['real']
  assert -1.0 <= record['spearman_fcd_vs_fid'] <= 1.0


@pytest.mark.skipif(weights.weights_path('emnist_digits').is_file(),
                    reason='an EMNIST evaluation classifier was trained in this checkout')
def test_a_dataset_without_an_evaluation_classifier_stops_before_training(tmp_path):
  write_manual_dir(tmp_path / 'idx', {'emnist_digits': {'train': 12, 'test': 6}})
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.independent_check', '--dataset=emnist_digits',
       f'--idx_dir={tmp_path / "idx"}'],
      capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(__file__)), check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      'error: no emnist_digits evaluation classifier yet (jaxgan ships none for it): train it '
      'once with python -m experiments.train_classifier')
  assert 'training the independent Keras classifier' not in result.stderr


def test_missing_idx_dir_is_a_one_line_usage_error(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'JAXGAN_MANUAL_DIR'}
  result = subprocess.run([sys.executable, '-m', 'experiments.independent_check'],
                          capture_output=True, text=True, env=env, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(__file__)), check=False)
  assert result.returncode != 0
  assert '--idx_dir (or JAXGAN_MANUAL_DIR) must name the folder' in result.stderr


def test_a_missing_official_file_is_named_with_the_flag_to_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape(
      f'{tmp_path}/mnist/train-images-idx3-ubyte.gz not found: --idx_dir (or JAXGAN_MANUAL_DIR) '
      'must name the folder holding mnist/ with its official files (README, Data)')):
    independent_check.read_split(str(tmp_path), 'mnist', 'train')


def test_sample_files_that_are_missing_damaged_or_not_npz_are_named(tmp_path):
  for missing in (tmp_path / 'none.npz', tmp_path):  # no file; a folder
    with pytest.raises(FileNotFoundError, match=f'{missing} not found: pass .npz files'):
      independent_check.load_npz(str(missing), 'mnist')
  not_npz = tmp_path / 'digits.npz'
  not_npz.write_text('not a zip archive')
  with pytest.raises(ValueError, match=f'{not_npz} is not an .npz file'):
    independent_check.load_npz(str(not_npz), 'mnist')
  for compressed in (False, True):
    write_damaged_npz(not_npz, compressed)
    with pytest.raises(ValueError, match=f'^{not_npz} is damaged \\((BadZipFile|error): .*\\): '
                                         'write it again with experiments.sample$'):
      independent_check.load_npz(str(not_npz), 'mnist')
  np.savez(not_npz, images=np.zeros((1, 28, 28), np.uint8))
  with pytest.raises(ValueError, match=f'^{not_npz} holds 1 digits: a covariance \\(FID\\) '
                                       'needs at least 2; pass more digits$'):
    independent_check.load_npz(str(not_npz), 'mnist')
  digits = np.zeros((3, 28, 28), np.uint8)
  np.savez(tmp_path / 'ok.npz', images=digits, labels=np.arange(3))
  images, labels = independent_check.load_npz(str(tmp_path / 'ok.npz'), 'mnist')
  np.testing.assert_array_equal(images, digits)
  np.testing.assert_array_equal(labels, np.arange(3))
  for images, labels, problem in (
      (digits.astype(np.float32), None, 'holds float32 images, not uint8 pixels'),
      (digits, np.arange(2), 'holds labels that are not 3 classes in 0..9, one per image'),
      (digits, np.array([0, 1, 10]), 'holds labels that are not 3 classes in 0..9, one per image'),
      (digits, np.array([0.0, 1.0, 2.0]), 'holds labels that are not 3 classes in 0..9')):
    np.savez(tmp_path / 'bad.npz', images=images,
             **({} if labels is None else {'labels': labels}))
    with pytest.raises(ValueError, match=re.escape(f'{tmp_path / "bad.npz"} {problem}')):
      independent_check.load_npz(str(tmp_path / 'bad.npz'), 'mnist')
  np.savez(tmp_path / 'strings.npz', images=np.zeros((2, 28, 156), np.uint8))
  with pytest.raises(ValueError, match=re.escape(
      f'{tmp_path / "strings.npz"} holds images of shape (2, 28, 156), not 28x28 digits')):
    independent_check.load_npz(str(tmp_path / 'strings.npz'), 'mnist')


def test_samples_of_a_run_trained_on_another_dataset_are_refused(tmp_path):
  """experiments.sample records the run's dataset: Kannada digits were scored as MNIST ones
  under the default --dataset=mnist."""
  path = tmp_path / 'digits.npz'
  digits = np.zeros((3, 28, 28), np.uint8)
  np.savez(path, images=digits, provenance=json.dumps({'dataset': 'kannada_mnist'}))
  with pytest.raises(ValueError, match=re.escape(
      f'--dataset=mnist but {path} holds digits of a run trained on kannada_mnist (its '
      'provenance): pass --dataset=kannada_mnist')):
    independent_check.load_npz(str(path), 'mnist')
  images, _ = independent_check.load_npz(str(path), 'kannada_mnist')
  np.testing.assert_array_equal(images, digits)
  # A provenance without the dataset (or of the user's own) says nothing about it.
  for own in ({'seed': 3}, ['made', 'by', 'hand']):
    np.savez(path, images=digits, provenance=json.dumps(own))
    independent_check.load_npz(str(path), 'mnist')
  np.savez(path, images=digits, provenance='not json')
  with pytest.raises(ValueError, match=re.escape(
      f'{path} holds a provenance array that is not the JSON experiments.sample writes')):
    independent_check.load_npz(str(path), 'mnist')


def test_sample_sets_are_named_by_file_and_names_must_differ():
  assert independent_check.set_names(['a/s0.npz', 'b/s1.npz']) == ['s0', 's1']
  with pytest.raises(app.UsageError, match=re.escape(
      '--samples files a/digits.npz and b/digits.npz would both be scored as set '
      "'digits' (sets are named by file name): rename one")):
    independent_check.set_names(['a/digits.npz', 'b/digits.npz'])
  with pytest.raises(app.UsageError, match=re.escape(
      "--samples file runs/real.npz would be scored as the anchor set 'real': rename the file")):
    independent_check.set_names(['runs/real.npz'])


@pytest.mark.parametrize('flag, line', [
    # NaN passes the flag's bounds (every comparison with it is false): it ran for minutes and
    # wrote NaN into the record.
    ('--cas_translation=nan', 'error: flag --cas_translation=nan: --cas_translation must be a '
     'finite number in [0, 0.5] (0: none); see --helpshort'),
    ('--cas_translation=inf', 'error: flag --cas_translation=inf: inf is not a number in the '
     'range [0.0, 0.5]; see --helpshort'),
    # Keras seeds numpy's 32-bit generator: a larger seed failed late, naming no flag.
    ('--seed=9223372036854775807', 'error: flag --seed=9223372036854775807: '
     '9223372036854775807 is not an integer in the range [0, 4294967295]; see --helpshort'),
    ('--seed=4294967295', "error: flags seed=4294967295, cas_seeds=3: --seed + --cas_seeds - 1 "
     "(the last recogniser's seed) must be <= 4294967295, keras's largest seed: pass a smaller "
     '--seed; see --helpshort'),
    ('--seed=4294967293',  # the largest with 3 recognisers: accepted, then --idx_dir is missing
     'error: --idx_dir (or JAXGAN_MANUAL_DIR) must name the folder holding mnist/ with its '
     'official files'),
])
def test_bad_flag_values_are_refused_at_parsing_with_the_flag_named(flag, line):
  env = {k: v for k, v in os.environ.items() if k != 'JAXGAN_MANUAL_DIR'}
  result = subprocess.run([sys.executable, '-m', 'experiments.independent_check', flag],
                          capture_output=True, text=True, env=env, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(__file__)), check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == line
