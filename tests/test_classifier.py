"""The evaluation classifiers: shipped weights verified at load, shapes, seeded training."""
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import pytest

from experiments.configs import classifier_mnist
from jaxgan.data.idx import read_idx_pair
from jaxgan.evaluation import classifier, weights

REAL_MANUAL_DIR = os.environ.get('JAXGAN_MANUAL_DIR')
TARGET_TEST_ACCURACY = {'mnist': 0.993, 'kannada_mnist': 0.97}


@pytest.fixture(scope='module')
def mnist_params():
  params, _ = weights.load_shipped('mnist')
  return params


def random_digits(num: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (num, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize('dataset', ['mnist', 'kannada_mnist'])
def test_shipped_weights_load_verified_and_their_manifest_records_the_accuracy(dataset):
  path = weights.weights_path(dataset)
  params, manifest = weights.load_shipped(dataset)
  assert manifest['file'] == path.name and manifest['dataset'] == dataset
  assert manifest['sha256'] == weights.sha256(path.read_bytes())
  assert manifest['accuracy']['test'] >= TARGET_TEST_ACCURACY[dataset]
  if dataset == 'kannada_mnist':
    assert 0 < manifest['accuracy']['dig'] <= 1
  assert manifest['command'] == weights.TRAIN_COMMANDS[dataset]
  assert path.stat().st_size < 2_000_000
  shapes = jax.tree.map(np.shape, params)
  assert shapes['Dense_0']['kernel'][1] == 128  # the embedding layer


def test_a_tampered_weights_file_is_refused_with_the_digests_and_the_fix(tmp_path):
  path = tmp_path / 'mnist.msgpack'
  shutil.copy(weights.weights_path('mnist'), path)
  shutil.copy(weights.manifest_path(weights.weights_path('mnist')), tmp_path / 'mnist.json')
  weights.load(path)  # the copy is intact
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x01
  path.write_bytes(bytes(data))
  expected = json.loads((tmp_path / 'mnist.json').read_text())['sha256']
  with pytest.raises(ValueError) as error:
    weights.load(path)
  message = str(error.value)
  assert '\n' not in message
  for part in (str(path), expected, weights.sha256(bytes(data)), 'experiments.train_classifier',
               'classifier_mnist.py'):
    assert part in message


def test_weights_without_a_manifest_or_of_another_model_are_refused(tmp_path):
  path = tmp_path / 'mnist.msgpack'
  shutil.copy(weights.weights_path('mnist'), path)
  with pytest.raises(FileNotFoundError, match='mnist.json not found'):
    weights.load(path)
  small = classifier.init_params(classifier.SmallClassifier(), jax.random.key(0))
  weights.save(small, path, command='python -m experiments.train_classifier --config=X')
  with pytest.raises(ValueError, match='does not hold Classifier weights.*--config=X'):
    weights.load(path)
  assert weights.load(path, model=classifier.SmallClassifier())[1]['file'] == 'mnist.msgpack'
  # Weights of the right shapes but another dtype (bfloat16) are not the model's either.
  weights.save(jax.tree.map(lambda x: x.astype(jax.numpy.bfloat16), small), path)
  with pytest.raises(ValueError, match='holds weights of other shapes or dtypes than '
                     'SmallClassifier'):
    weights.load(path, model=classifier.SmallClassifier())
  manifest = json.loads(weights.manifest_path(path).read_text())
  del manifest['sha256']  # a manifest cut short: refused as a changed file, not a KeyError
  weights.manifest_path(path).write_text(json.dumps(manifest))
  # A shipped dataset's file: training it again over the file needs --replace_shipped.
  with pytest.raises(ValueError, match='the file is damaged or was changed.* --replace_shipped$'):
    weights.load(path, model=classifier.SmallClassifier())


def test_an_unshipped_classifier_names_the_command_that_trains_it_until_it_exists(
    tmp_path, monkeypatch, mnist_params):
  assert weights.NOT_SHIPPED == {'emnist_digits', 'svhn'}
  # This checkout may hold a user's EMNIST classifier: look elsewhere.
  monkeypatch.setattr(weights, 'weights_path', lambda dataset: tmp_path / f'{dataset}.msgpack')
  with pytest.raises(FileNotFoundError) as error:
    weights.load_shipped('emnist_digits')
  assert str(error.value) == (
      'no emnist_digits evaluation classifier yet (jaxgan ships none for it): train it once '
      'with python -m experiments.train_classifier --config=experiments/configs/'
      f'classifier_emnist.py, which writes {tmp_path / "emnist_digits.msgpack"}')
  weights.save(mnist_params, tmp_path / 'emnist_digits.msgpack', dataset='emnist_digits')
  weights.check_available('emnist_digits')
  params, manifest = weights.load_shipped('emnist_digits')
  assert manifest['dataset'] == 'emnist_digits'
  assert flax.serialization.to_bytes(params) == flax.serialization.to_bytes(mnist_params)


def test_save_writes_msgpack_that_flax_reads_back(tmp_path):
  params = classifier.init_params(classifier.SmallClassifier(), jax.random.key(1))
  manifest = weights.save(params, tmp_path / 'w.msgpack', dataset='mnist')
  raw = flax.serialization.msgpack_restore((tmp_path / 'w.msgpack').read_bytes())
  jax.tree.map(np.testing.assert_array_equal, raw, jax.device_get(params))
  assert manifest == json.loads((tmp_path / 'w.json').read_text())


def test_embeddings_and_probabilities_have_the_documented_shapes(mnist_params):
  images = random_digits(7)
  embeddings, probs = classifier.embed_and_predict(mnist_params, images, batch_size=3)
  assert embeddings.shape == (7, 128) and embeddings.dtype == np.float32
  assert probs.shape == (7, 10)
  np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
  assert (embeddings >= 0).all()  # ReLU embeddings
  # Batching and the trailing channel axis change nothing.
  whole_embeddings, whole_probs = classifier.embed_and_predict(mnist_params, images[..., None])
  np.testing.assert_allclose(whole_embeddings, embeddings, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(whole_probs, probs, rtol=1e-5, atol=1e-6)


def test_images_must_be_uint8_digits():
  with pytest.raises(ValueError, match=r'images must be uint8 \(N, 28, 28\[, 1\]\)'):
    classifier.as_batch(np.zeros((2, 28, 28), np.float32))
  with pytest.raises(ValueError, match='got uint8 \\(2, 32, 32\\)'):
    classifier.as_batch(np.zeros((2, 32, 32), np.uint8))


def test_accuracy_takes_one_integer_label_per_image(mnist_params):
  """Labels (N, 1) or a single label broadcast against the N predictions gave about 0.1 for
  digits read at 99%."""
  images = random_digits(6)
  labels = classifier.embed_and_predict(mnist_params, images)[1].argmax(axis=1)
  assert classifier.accuracy(mnist_params, images, labels) == 1.0
  for wrong, described in ((labels[:, None], r'int64 \(6, 1\)'), (labels[:1], r'int64 \(1,\)'),
                           (labels.astype(np.float32), r'float32 \(6,\)')):
    with pytest.raises(ValueError, match=(
        rf'^labels must be 6 integers, one per image, got {described}: pass class ids of '
        r'shape \(6,\)$')):
      classifier.accuracy(mnist_params, images, wrong)


def test_training_is_reproducible_from_its_seed():
  images, labels = random_digits(50), np.arange(50) % 10
  fit = lambda seed: classifier.fit(classifier.SmallClassifier(), images, labels, seed=seed,
                                    num_steps=4, batch_size=16, learning_rate=1e-3,
                                    max_shift=2)
  first, again, other = fit(0), fit(0), fit(1)
  assert flax.serialization.to_bytes(first) == flax.serialization.to_bytes(again)
  assert flax.serialization.to_bytes(first) != flax.serialization.to_bytes(other)


def test_a_classifier_config_that_cannot_train_is_refused_before_reading_data():
  config = classifier_mnist.get_config()
  config.num_epochs, config.batch_size = -1, 0
  config.manual_dir = config.data_dir = '/nonexistent'  # never read
  with pytest.raises(ValueError) as excinfo:
    classifier.train_classifier(config)
  assert str(excinfo.value) == ('bad config: num_epochs must be >= 1, got -1; batch_size must '
                                'be >= 1, got 0')


@pytest.mark.parametrize('field, value, problem', [
    ('learning_rate', float('nan'), 'learning_rate must be finite and > 0, got nan'),
    ('learning_rate', float('inf'), 'learning_rate must be finite and > 0, got inf'),
    ('learning_rate', 0.0, 'learning_rate must be finite and > 0, got 0.0'),
    ('learning_rate', -1e-3, 'learning_rate must be finite and > 0, got -0.001'),
    ('dropout_rate', 1.0, 'dropout_rate must be in [0, 1) (0: no dropout), got 1.0'),
    ('dropout_rate', 1.5, 'dropout_rate must be in [0, 1) (0: no dropout), got 1.5'),
    ('dropout_rate', -0.1, 'dropout_rate must be in [0, 1) (0: no dropout), got -0.1'),
    ('dropout_rate', float('nan'), 'dropout_rate must be in [0, 1) (0: no dropout), got nan'),
    ('max_shift', -1, 'max_shift must be in 0..27 pixels (0: no shifts), got -1'),
    ('max_shift', 28, 'max_shift must be in 0..27 pixels (0: no shifts), got 28'),
    ('seed', -1, 'seed must be in 0..9223372036854775807, got -1'),
    ('seed', 2**63, 'seed must be in 0..9223372036854775807, got 9223372036854775808'),
    ('dataset', 'cifar10',
     "dataset must be one of mnist, kannada_mnist, emnist_digits, svhn, got 'cifar10'"),
])
def test_each_classifier_config_field_is_checked_before_reading_data(field, value, problem):
  """Each of these trained a useless classifier without an error (test accuracy ~0.1), or
  failed after the data was read with a message that named no field."""
  config = classifier_mnist.get_config()
  config.manual_dir = config.data_dir = '/nonexistent'  # never read
  with config.unlocked():
    config[field] = value
  with pytest.raises(ValueError) as excinfo:
    classifier.train_classifier(config)
  assert str(excinfo.value) == f'bad config: {problem}'


def test_the_shipped_recipes_and_the_field_bounds_pass_validation():
  for name in ('mnist', 'kannada', 'emnist', 'svhn'):
    config = importlib.import_module(f'experiments.configs.classifier_{name}').get_config()
    assert set(config) == set(classifier.CONFIG_FIELDS)
    classifier.validate_config(config)
  config = classifier_mnist.get_config()
  config.max_shift, config.dropout_rate, config.seed = 27, 0.0, 2**63 - 1
  classifier.validate_config(config)
  del config['dropout_rate']
  with pytest.raises(ValueError, match='^bad config: it has no dropout_rate: start from '
                                       'experiments/configs/classifier_mnist.py$'):
    classifier.validate_config(config)


def test_a_batch_larger_than_the_train_split_names_the_field_and_the_split_size(monkeypatch):
  monkeypatch.setattr(classifier.data, 'load_split',
                      lambda *args, **kwargs: (random_digits(30), np.arange(30) % 10))
  config = classifier_mnist.get_config()
  config.batch_size = 100_000_000
  with pytest.raises(ValueError) as excinfo:
    classifier.train_classifier(config)
  assert str(excinfo.value) == ('bad config: batch_size must be <= 30, the size of the mnist '
                                'train split, got 100000000')


@pytest.mark.parametrize('flags, line', [
    (['--replace_shipped', '--config.learning_rate=nan'],
     'error: bad config: learning_rate must be finite and > 0, got nan'),
    (['--out_dir='],
     'error: --out_dir is empty: name the folder to write the weights to, e.g. '
     '--out_dir=classifiers, or leave the flag out for the shipped folder'),
])
def test_the_script_refuses_bad_input_before_training_and_keeps_the_shipped_weights(
    flags, line, tmp_path):
  repo, shipped = Path(__file__).parent.parent, weights.weights_path('mnist')
  before = shipped.read_bytes(), weights.manifest_path(shipped).read_bytes()
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.train_classifier',
       f'--config={repo / "experiments/configs/classifier_mnist.py"}', '--config.num_epochs=1',
       '--config.manual_dir=/nonexistent', *flags],  # never read: refused first
      cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=os.pathsep.join(
          [str(repo), *filter(None, [os.environ.get('PYTHONPATH')])])))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == line
  assert (shipped.read_bytes(), weights.manifest_path(shipped).read_bytes()) == before
  assert not list(tmp_path.iterdir())  # nothing written where the command ran


def test_no_recipe_may_overwrite_the_shipped_weights_unasked(tmp_path, monkeypatch):
  shipped = weights.weights_path('mnist')
  config = classifier_mnist.get_config()
  config.manual_dir, config.data_dir = '/elsewhere', '/tmp/x'  # where data lives: not the recipe
  # The shipped recipe itself: on another kind of processor it writes other bytes.
  with pytest.raises(ValueError, match=re.escape(
      f'{shipped} is the shipped classifier, which every fcd, label_accuracy and cas figure '
      'depends on, and another kind of processor may train other bytes by its recipe: train it '
      'into --out_dir=FOLDER and compare the sha256 with the shipped manifest\'s, or '
      'pass --replace_shipped to replace it on purpose')):
    weights.check_shipped_recipe(shipped, json.loads(config.to_json()))
  # A user's own classifier (not shipped) in that folder is theirs to train again.
  own = tmp_path / 'weights' / 'emnist_digits.msgpack'
  own.parent.mkdir()
  shutil.copy(shipped, own)
  shutil.copy(weights.manifest_path(shipped), weights.manifest_path(own))
  monkeypatch.setattr(weights, 'SHIPPED_DIR', own.parent)
  weights.check_shipped_recipe(own, json.loads(config.to_json()))
  monkeypatch.undo()
  config.num_epochs, config.learning_rate = 3, 1e-3
  with pytest.raises(ValueError) as excinfo:
    weights.check_shipped_recipe(shipped, json.loads(config.to_json()))
  message = str(excinfo.value)
  assert f'changes the recipe of the shipped {shipped} (learning_rate 0.002 -> 0.001, ' \
         'num_epochs 8 -> 3)' in message
  assert '--out_dir=FOLDER' in message and '--replace_shipped' in message
  # Another folder takes any recipe, a file already there included.
  shutil.copy(shipped, tmp_path / 'mnist.msgpack')
  shutil.copy(weights.manifest_path(shipped), tmp_path / 'mnist.json')
  weights.check_shipped_recipe(tmp_path / 'mnist.msgpack', json.loads(config.to_json()))


def test_the_script_refuses_another_recipe_for_the_shipped_weights_before_training():
  shipped = weights.weights_path('mnist')
  before = shipped.read_bytes(), weights.manifest_path(shipped).read_bytes()
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.train_classifier',
       '--config=experiments/configs/classifier_mnist.py', '--config.num_epochs=1',
       '--config.manual_dir=/nonexistent'],  # never read: refused first
      cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: this config changes the recipe of the shipped {shipped} (num_epochs 8 -> 1), and '
      'every fcd, label_accuracy and cas figure would change with it: write it elsewhere with '
      '--out_dir=FOLDER, or pass --replace_shipped to replace the shipped classifier on purpose')
  assert (shipped.read_bytes(), weights.manifest_path(shipped).read_bytes()) == before


def test_the_script_refuses_an_out_dir_that_is_a_file_before_training(tmp_path):
  (tmp_path / 'taken').write_text('a file')
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.train_classifier',
       '--config=experiments/configs/classifier_mnist.py', '--config.manual_dir=/nonexistent',
       f'--out_dir={tmp_path / "taken"}'],
      cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --out_dir={tmp_path / "taken"} is a file, not a folder: name a folder for '
      'mnist.msgpack')
  assert (tmp_path / 'taken').read_text() == 'a file'


def test_index_batches_visit_every_example_once_per_epoch_in_fixed_size_batches():
  batches = classifier.index_batches(5, 4, seed=0)
  first_ten = np.concatenate([next(batches) for _ in range(5)])  # 20 indices: 4 epochs
  for epoch in range(4):
    assert sorted(first_ten[5 * epoch:5 * epoch + 5]) == list(range(5))


def test_random_shift_moves_whole_images_within_the_limit():
  image = np.zeros((1, 28, 28, 1), np.uint8)
  image[0, 10:14, 12:15] = 200
  shifted = np.asarray(classifier.random_shift(jax.random.key(0), np.repeat(image, 64, 0), 2))
  for moved in shifted:
    rows, cols = np.nonzero(moved[..., 0])
    assert moved.sum() == image.sum()  # nothing falls off: the blob is away from the border
    assert abs(rows.min() - 10) <= 2 and abs(cols.min() - 12) <= 2
  assert len({(np.nonzero(m)[0].min(), np.nonzero(m)[1].min()) for m in shifted}) > 5
  np.testing.assert_array_equal(classifier.random_shift(jax.random.key(0), image, 0), image)


@pytest.mark.real_data
@pytest.mark.skipif(not REAL_MANUAL_DIR, reason='set JAXGAN_MANUAL_DIR to the IDX files')
def test_shipped_mnist_classifier_is_accurate_on_real_test_digits(mnist_params):
  folder = Path(REAL_MANUAL_DIR) / 'mnist'
  images, labels = read_idx_pair(folder / 't10k-images-idx3-ubyte.gz',
                                 folder / 't10k-labels-idx1-ubyte.gz')
  assert classifier.accuracy(mnist_params, images[:2000], labels[:2000]) >= 0.99
