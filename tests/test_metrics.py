"""Metrics: closed forms, invariants, and the ordering real < blurred < noise on real digits."""
import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import pytest

from jaxgan.data.idx import read_idx_pair
from jaxgan.evaluation import classifier, metrics, run_scores, suite, weights

REAL_MANUAL_DIR = os.environ.get('JAXGAN_MANUAL_DIR')
needs_real_data = pytest.mark.skipif(
    not REAL_MANUAL_DIR, reason='set JAXGAN_MANUAL_DIR to the folder holding mnist/')
needs_shipped_mnist = pytest.mark.skipif(
    not weights.weights_path('mnist').is_file(),
    reason='no shipped MNIST classifier: run experiments.train_classifier')


def gaussian_samples(rng, mean, cov, num):
  return rng.multivariate_normal(mean, cov, size=num)


def random_covariance(rng, dim):
  factor = rng.normal(size=(dim, dim))
  return factor @ factor.T / dim + 0.1 * np.eye(dim)


def test_streaming_stats_match_numpy_for_any_batching_and_a_large_offset():
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(1000, 5)) @ rng.normal(size=(5, 5)) + 1e6  # a mean >> spread
  for batch_size in (1, 7, 1000):
    stats = metrics.GaussianStats.of(vectors, batch_size=batch_size)
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, vectors.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(vectors - 1e6, rowvar=False),
                               rtol=1e-6, atol=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero():
  rng = np.random.default_rng(1)
  stats = metrics.GaussianStats.of(rng.normal(size=(500, 32)) * rng.uniform(0.1, 3, 32))
  distance = metrics.frechet_distance(stats.mean, stats.covariance, stats.mean, stats.covariance)
  assert 0 <= distance < 1e-8


def test_frechet_distance_matches_the_closed_form_for_shared_eigenvectors():
  """cov_a = Q diag(a) Q^T, cov_b = Q diag(b) Q^T (not diagonal): the square-root term is
  sum(sqrt(a * b))."""
  rng = np.random.default_rng(2)
  basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  a, b = rng.uniform(0.5, 4, 6), rng.uniform(0.5, 4, 6)
  mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
  expected = np.sum((mean_a - mean_b) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
  got = metrics.frechet_distance(mean_a, basis * a @ basis.T, mean_b, basis * b @ basis.T)
  np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_distance_matches_the_closed_form_for_non_commuting_2x2_covariances():
  """For 2x2 matrices, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) with M = A B (whose eigenvalues
  are real and non-negative for PSD A, B)."""
  cov_a = np.array([[2.0, 0.8], [0.8, 1.0]])
  cov_b = np.array([[1.0, -0.3], [-0.3, 0.5]])
  assert not np.allclose(cov_a @ cov_b, cov_b @ cov_a)
  mean_a, mean_b = np.array([1.0, -2.0]), np.array([0.5, 0.5])
  product = cov_a @ cov_b
  trace_sqrt = np.sqrt(np.trace(product) + 2 * np.sqrt(np.linalg.det(product)))
  expected = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) -
              2 * trace_sqrt)
  np.testing.assert_allclose(metrics.frechet_distance(mean_a, cov_a, mean_b, cov_b), expected,
                             rtol=1e-12)


def test_frechet_distance_of_samples_approaches_that_of_their_gaussians():
  rng = np.random.default_rng(3)
  mean_a, mean_b = np.zeros(4), np.array([1.0, 0.0, -1.0, 0.5])
  cov_a, cov_b = random_covariance(rng, 4), random_covariance(rng, 4)
  stats_a = metrics.GaussianStats.of(gaussian_samples(rng, mean_a, cov_a, 200_000))
  stats_b = metrics.GaussianStats.of(gaussian_samples(rng, mean_b, cov_b, 200_000))
  exact = metrics.frechet_distance(mean_a, cov_a, mean_b, cov_b)
  estimated = metrics.frechet_distance(stats_a.mean, stats_a.covariance, stats_b.mean,
                                       stats_b.covariance)
  np.testing.assert_allclose(estimated, exact, rtol=0.02)


def test_frechet_distance_survives_singular_covariances():
  """Dead ReLU units give all-zero embedding columns: rank-deficient covariances."""
  rng = np.random.default_rng(4)
  vectors = np.concatenate([rng.normal(size=(300, 8)), np.zeros((300, 4))], axis=1)
  stats = metrics.GaussianStats.of(vectors)
  shifted = metrics.GaussianStats.of(vectors + np.r_[np.ones(8), np.zeros(4)])
  distance = metrics.frechet_distance(stats.mean, stats.covariance, shifted.mean,
                                      shifted.covariance)
  np.testing.assert_allclose(distance, 8.0, rtol=1e-6)


def test_precision_and_recall_of_identical_sets_are_one():
  embeddings = np.random.default_rng(5).normal(size=(700, 16)).astype(np.float32)
  assert metrics.precision_recall(embeddings, embeddings, k=3, batch_size=64) == (1.0, 1.0)


def test_precision_and_recall_separate_quality_from_diversity():
  """Samples from a shrunken cloud are all plausible (high precision) but miss most of the
  real spread (low recall); a few repeated points do the same, more sharply."""
  rng = np.random.default_rng(6)
  real = rng.normal(size=(2000, 8))
  shrunken = 0.3 * rng.normal(size=(2000, 8))
  precision, recall = metrics.precision_recall(real, shrunken)
  assert precision > 0.95 and recall < 0.5
  collapsed = np.repeat(real[:5], 400, axis=0)
  precision, recall = metrics.precision_recall(real, collapsed)
  assert precision == 1.0 and recall < 0.01
  far = rng.normal(size=(2000, 8)) + 10
  assert metrics.precision_recall(real, far) == (0.0, 0.0)


def test_classifier_score_is_between_one_and_the_number_of_classes():
  uniform = np.full((100, 10), 0.1)
  np.testing.assert_allclose(metrics.classifier_score(uniform), 1.0)
  one_hot = np.eye(10)[np.arange(100) % 10]
  np.testing.assert_allclose(metrics.classifier_score(one_hot), 10.0)
  single_class = np.eye(10)[np.zeros(100, int)]
  np.testing.assert_allclose(metrics.classifier_score(single_class), 1.0)
  mixed = np.random.default_rng(7).dirichlet(np.full(10, 0.3), size=500)
  assert 1.0 < metrics.classifier_score(mixed) < 10.0


def test_coverage_of_balanced_and_collapsed_predictions():
  balanced = np.eye(10)[np.arange(1000) % 10]
  shares = metrics.class_shares(balanced)
  np.testing.assert_allclose(shares, 0.1)
  np.testing.assert_allclose(metrics.normalised_entropy(shares), 1.0)
  collapsed = np.eye(10)[np.array([3, 3, 3, 7] * 50)]
  shares = metrics.class_shares(collapsed)
  assert shares.min() == 0.0
  np.testing.assert_allclose(metrics.normalised_entropy(shares),
                             -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(10))


def toy_digits(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Class c: a bright 6x6 square at a class-specific place, jittered, on faint noise."""
  rng = np.random.default_rng(seed)
  labels = np.arange(num) % 10
  images = rng.integers(0, 40, (num, 28, 28), dtype=np.uint8)
  for index, label in enumerate(labels):
    row = 4 + 12 * (label // 5) + rng.integers(-1, 2)
    col = 1 + 5 * (label % 5) + rng.integers(-1, 2)
    images[index, row:row + 6, col:col + 6] = 255
  return images, labels.astype(np.int32)


def toy_scored(images, labels=None):
  """ScoredImages without running the evaluation CNN: the label metrics read only the images,
  labels and (label_accuracy) the probabilities, here one-hot on the true class."""
  num = len(images)
  true_labels = np.arange(num) % 10 if labels is None else labels
  embeddings = np.random.default_rng(num).normal(size=(num, 4)).astype(np.float32)
  return metrics.ScoredImages(classifier.as_batch(images), labels, embeddings,
                              np.eye(10, dtype=np.float32)[true_labels],
                              metrics.GaussianStats.of(embeddings))


@pytest.fixture(scope='module')
def toy_real():
  train_images, train_labels = toy_digits(300, seed=0)
  return metrics.RealData(toy_scored(*toy_digits(200, seed=1)),
                          classifier.as_batch(train_images), train_labels)


TINY = metrics.Settings(small_steps=30, small_batch_size=32, augmentation_sizes=(20, 50),
                        augmentation_seeds=(0, 1), cas_cnn_epochs=3, cas_cnn_batch_size=32,
                        cas_cnn_seeds=(0, 1))


def test_cas_and_augmentation_gain_run_end_to_end_on_tiny_data(toy_real):
  real = toy_real
  samples = toy_scored(*toy_digits(100, seed=2))
  results = metrics.compute(['label_accuracy', 'cas', 'augmentation_gain'], samples, real, TINY)
  assert results['label_accuracy'] == 1.0
  assert 0.5 < results['cas'] <= 1  # the toy classes are easy
  for size in (20, 50):
    gain = 100 * (results[f'augmented_accuracy_k{size}'] - results[f'real_only_accuracy_k{size}'])
    np.testing.assert_allclose(results[f'augmentation_gain_k{size}'], gain, atol=1e-9)
    assert results[f'augmentation_gain_k{size}_std'] >= 0
  again = metrics.compute(['cas', 'augmentation_gain'], samples, real, TINY)
  assert again['cas'] == results['cas']  # seeded: the same number twice
  assert again['augmentation_gain_k20'] == results['augmentation_gain_k20']


def test_cas_cnn_trains_the_evaluation_architecture_on_the_samples(toy_real, monkeypatch):
  """cas_cnn fits a fresh `Classifier` per seed with the settings' recipe for whole epochs of
  the samples and scores each on every test set: their mean and std; wrong labels score near
  chance."""
  fits = []
  original_fit = classifier.fit
  monkeypatch.setattr(classifier, 'fit', lambda model, *args, **kwargs: fits.append(
      (model, kwargs)) or original_fit(model, *args, **kwargs))
  dig_images, dig_labels = toy_digits(80, seed=4)
  real = dataclasses.replace(toy_real, extra_tests={'dig': (classifier.as_batch(dig_images),
                                                            dig_labels)}, _cache={})
  images, labels = toy_digits(100, seed=2)
  results = metrics.compute(['cas_cnn'], toy_scored(images, labels), real, TINY)
  assert set(results) == {'cas_cnn', 'cas_cnn_std', 'cas_cnn_dig', 'cas_cnn_dig_std'}
  assert results['cas_cnn'] > 0.9 and results['cas_cnn_dig'] > 0.9  # the toy classes are easy
  assert [kwargs['seed'] for _, kwargs in fits] == [0, 1]
  for model, kwargs in fits:
    assert model == classifier.Classifier(dropout_rate=TINY.cas_cnn_dropout_rate)
    assert kwargs == dict(seed=kwargs['seed'], num_steps=3 * 4,  # 3 epochs of ceil(100 / 32)
                          batch_size=32, learning_rate=TINY.cas_cnn_learning_rate,
                          max_shift=TINY.cas_cnn_max_shift)
  # The mean and std of the two CNNs' test accuracies.
  one = [classifier.accuracy(original_fit(model, images, labels, **kwargs), *real.test_sets()[
      'test'], model=model) for model, kwargs in fits]
  np.testing.assert_allclose([results['cas_cnn'], results['cas_cnn_std']],
                             [np.mean(one), np.std(one)], atol=1e-12)
  again = metrics.compute(['cas_cnn'], toy_scored(images, labels), real, TINY)
  assert again == results  # seeded
  wrong = metrics.compute(['cas_cnn'], toy_scored(images, (labels + 1) % 10), real, TINY)
  assert wrong['cas_cnn'] < 0.2


def test_cas_and_augmentation_gain_also_score_the_extra_test_sets(toy_real):
  """Kannada's Dig-MNIST: each small classifier is scored on it too, under suffixed keys; the
  test-split figures are those of a run without the extra set (same seeds)."""
  dig_images, dig_labels = toy_digits(80, seed=4)
  real = dataclasses.replace(toy_real, extra_tests={'dig': (classifier.as_batch(dig_images),
                                                            dig_labels)}, _cache={})
  samples = toy_scored(*toy_digits(100, seed=2))
  with_dig = metrics.compute(['cas', 'augmentation_gain'], samples, real, TINY)
  without = metrics.compute(['cas', 'augmentation_gain'], samples, toy_real, TINY)
  for key, value in without.items():
    assert with_dig[key] == value, key
  assert 0 <= with_dig['cas_dig'] <= 1
  for size in (20, 50):
    gain = 100 * (with_dig[f'augmented_accuracy_k{size}_dig'] -
                  with_dig[f'real_only_accuracy_k{size}_dig'])
    np.testing.assert_allclose(with_dig[f'augmentation_gain_k{size}_dig'], gain, atol=1e-9)
    assert with_dig[f'augmentation_gain_k{size}_dig_std'] >= 0
  assert set(with_dig) - set(without) == {
      'cas_dig', *(f'{name}_k{size}_dig' for size in (20, 50) for name in
                   ('real_only_accuracy', 'augmented_accuracy', 'augmentation_gain')),
      'augmentation_gain_k20_dig_std', 'augmentation_gain_k50_dig_std'}


def test_nearest_distances_match_a_brute_force_search():
  rng = np.random.default_rng(0)
  queries = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
  references = rng.integers(0, 256, (11, 28, 28), dtype=np.uint8)
  flat = lambda images: images.reshape(len(images), -1).astype(np.float64) / 255
  expected = np.linalg.norm(flat(queries)[:, None] - flat(references)[None], axis=-1).min(axis=1)
  np.testing.assert_allclose(metrics.nearest_distances(queries, references, batch_size=3),
                             expected, rtol=1e-5)


def test_memorisation_tells_copies_from_new_digits(toy_real):
  real = dataclasses.replace(toy_real, _cache={})
  # Unseen digits of the same kind as the real test split score like it; train copies score 0.
  new = metrics.compute(['memorisation'], toy_scored(*toy_digits(200, seed=5)), real, TINY)
  assert 0.8 < new['nn_train_distance_ratio'] < 1.25 and new['near_copy_share'] < 0.05
  itself = metrics.compute(['memorisation'], real.test, real, TINY)
  assert itself['nn_train_distance_ratio'] == 1.0
  assert itself['near_copy_share'] == np.mean(real.test_train_distances() < np.quantile(
      real.test_train_distances(), TINY.near_copy_quantile))
  copies = toy_scored(real.train_images[:100, ..., 0], real.train_labels[:100])
  copied = metrics.compute(['memorisation'], copies, real, TINY)
  assert copied['nn_train_distance'] < 1e-2 and copied['near_copy_share'] == 1.0  # float32 zero
  assert copied['nn_train_distance_ratio'] < 1e-2 * itself['nn_train_distance_ratio']
  without_train = metrics.RealData(real.test, real.train_images[:0], real.train_labels[:0])
  with pytest.raises(ValueError, match='memorisation needs the real train split'):
    metrics.compute(['memorisation'], copies, without_train, TINY)


def test_label_metrics_refuse_unlabelled_samples(toy_real):
  real = toy_real
  samples = toy_scored(toy_digits(20, seed=3)[0])
  for name in metrics.LABEL_METRICS:
    with pytest.raises(ValueError, match=f'{name} needs labelled samples'):
      metrics.compute([name], samples, real, TINY)


def test_augmentation_gain_warns_when_the_generator_saw_more_labels_than_k():
  """A gain "at K = 100" from the digits of a generator trained on 1,000 (or all 60,000)
  labelled digits is no gain from 100 labels alone; the records did not say so."""
  warning = run_scores.labels_seen_warning
  assert warning(1000, ['fcd', 'augmentation_gain']) == (
      "the generator trained on 1,000 real labelled digits (data.num_train_examples), more than "
      "augmentation_gain's K = 100: there it measures what its digits add to K labels, not what "
      "K labels alone can buy (train with --config.data.num_train_examples=K for that)")
  assert warning(0, ['augmentation_gain']).startswith(
      "the generator trained on the whole train split's real labelled digits "
      "(data.num_train_examples), more than augmentation_gain's K = 100 and 1,000: ")
  assert warning(100, ['augmentation_gain']) is None  # K = 100 its own, K = 1,000 more
  assert warning(0, ['fcd', 'cas']) is None  # no gain scored
  assert warning(None, ['augmentation_gain']) is None  # exported before it was recorded
  # A prefix of train holds the train split's first K / 10 of each class: the same digits.
  for prefix in ('train[:50%]', 'train[0:30000]', 'train[0%:50%]'):
    assert warning(100, ['augmentation_gain'], prefix) is None
    assert warning(1000, ['augmentation_gain'], prefix).startswith(
        'the generator trained on 1,000 real labelled digits (data.num_train_examples), more '
        "than augmentation_gain's K = 100: ")
  # All of train[:N] is N digits (a shorter split is refused when read).
  for prefix in ('train[:500]', 'train[0:500]'):
    assert warning(0, ['augmentation_gain'], prefix) == (
        f"the generator trained on 500 real labelled digits (data.split='{prefix}'), more than "
        "augmentation_gain's K = 100: there it measures what its digits add to K labels, not "
        "what K labels alone can buy (train with --config.data.num_train_examples=K for that)")
  assert warning(0, ['augmentation_gain'], 'train[:100]') is None
  assert warning(50, ['augmentation_gain'], 'train[:500]') is None  # 50 of those 500
  # All of a percentage prefix: its size is not known here, so neither is whether it exceeds a K.
  assert warning(0, ['augmentation_gain'], 'train[:50%]') == (
      "the generator trained on every real labelled digit of data.split='train[:50%]' "
      "(data.num_train_examples=0), which may be more than augmentation_gain's K = 100 and "
      '1,000: there it would measure what its digits add to K labels, not what K labels alone '
      'can buy (train with --config.data.num_train_examples=K for that)')
  assert warning(100, ['augmentation_gain'], None) is None  # an export without the split
  # Another split's labelled digits are never augmentation_gain's (train[30000:] with 1,000:
  # none of them among its K = 1,000).
  for split in ('train[30000:]', 'train[1:]', 'train+extra', 'test'):
    assert warning(100, ['augmentation_gain'], split) == (
        f"the generator trained on real labelled digits of data.split={split!r}, not "
        "augmentation_gain's K = 100 and 1,000 of the train split: there it measures what its "
        "digits add to K labels, not what K labels alone can buy (train with "
        "--config.data.split=train for that)")


def test_unknown_metric_names_are_refused_with_the_choices():
  with pytest.raises(ValueError, match='unknown metric fid: choose from fcd, '):
    metrics.check_names(['fcd', 'fid'])
  assert metrics.check_names('fcd') == ('fcd',)  # one name, not its letters ('unknown metric f')
  with pytest.raises(ValueError, match='cas can only score labelled samples'):
    suite.resolve_metric_names(['fcd', 'cas'], has_labels=False)
  assert suite.resolve_metric_names(['precision', 'recall'], has_labels=False) == (
      'precision_recall',)
  assert suite.resolve_metric_names(None, has_labels=True)[-1] == 'augmentation_gain'


def test_too_few_digits_for_the_metrics_are_refused_before_generating():
  # precision_recall's 3 nearest neighbours need 4 digits; fcd's covariance 2.
  assert suite.resolve_metric_names(['recall'], has_labels=False, num_samples=4)
  assert suite.resolve_metric_names(['fcd'], has_labels=False, num_samples=2) == ('fcd',)
  with pytest.raises(ValueError, match=re.escape(
      '3 digits are too few for fcd, precision_recall: score at least 4')):
    suite.resolve_metric_names(['fcd', 'recall'], has_labels=False, num_samples=3)


def test_real_reference_avoids_the_augmentation_subsets(toy_real):
  rows = suite.reference_rows(toy_real, 1000, TINY)
  assert len(rows) == 250  # 300 train images, 50 held for augmentation
  assert not np.intersect1d(rows, toy_real.augmentation_rows(50)).size
  np.testing.assert_array_equal(rows, suite.reference_rows(toy_real, 1000, TINY))
  # A train split no larger than the subsets leaves nothing to draw: say why and what to do.
  subsets_only = metrics.RealData(toy_real.test, toy_real.train_images[:40],
                                  toy_real.train_labels[:40])
  with pytest.raises(ValueError, match=re.escape(
      "the real train split holds 40 digits, all kept for augmentation_gain's subsets of up to "
      '50, and the real reference is drawn from the others: score against a train split of more '
      'than 50 digits (the whole dataset: README, Data)')):
    suite.reference_rows(subsets_only, 1000, TINY)


def box_blur(images: np.ndarray, radius: int) -> np.ndarray:
  padded = np.pad(images.astype(np.float32), ((0, 0), (radius, radius), (radius, radius)))
  size = 2 * radius + 1
  total = sum(padded[:, i:i + 28, j:j + 28] for i in range(size) for j in range(size))
  return np.rint(total / size ** 2).astype(np.uint8)


@pytest.mark.real_data
@needs_real_data
@needs_shipped_mnist
def test_real_beats_blurred_beats_noise_and_collapse_shows_on_real_digits():
  folder = Path(REAL_MANUAL_DIR) / 'mnist'
  images, labels = read_idx_pair(folder / 't10k-images-idx3-ubyte.gz',
                                 folder / 't10k-labels-idx1-ubyte.gz')
  params, _ = weights.load_shipped('mnist')
  # Real side: 3000 test images; candidates: 1000 others, blurred copies, noise, 4 digits x 250.
  real = metrics.RealData(metrics.score_images(params, images[:3000], labels[:3000]),
                          images[:0], labels[:0])
  held_out = images[3000:4000]
  candidates = {
      'real': held_out,
      'blurred': box_blur(held_out, 1),
      'noise': np.random.default_rng(0).integers(0, 256, held_out.shape, dtype=np.uint8),
      'collapsed': np.repeat(held_out[:4], 250, axis=0),
  }
  results = {name: metrics.compute(metrics.DEFAULT_METRICS,
                                   metrics.score_images(params, candidate), real)
             for name, candidate in candidates.items()}
  fcd = {name: result['fcd'] for name, result in results.items()}
  precision = {name: result['precision'] for name, result in results.items()}
  assert fcd['real'] < fcd['blurred'] < fcd['noise'], fcd
  assert precision['real'] > precision['blurred'] > precision['noise'], precision
  assert results['real']['coverage_entropy'] > 0.99
  assert results['real']['recall'] > 0.6
  collapsed = results['collapsed']
  assert collapsed['coverage_entropy'] < 0.7 and collapsed['coverage_min_share'] == 0.0
  assert collapsed['recall'] < 0.05


def test_score_images_refuses_bad_labels_and_empty_sets():
  images = toy_digits(4, seed=0)[0]
  for labels in ([0, 1, 2, 10], [0.0, 1.0, 2.0, 3.0], [0, 1, 2]):
    with pytest.raises(ValueError, match=r'labels must be 4 integers in \[0, 10\)'):
      metrics.score_images(None, images, np.array(labels))  # refused before any classifying
  with pytest.raises(ValueError, match='no images to score'):
    metrics.score_images(None, images[:0])


def test_evaluating_without_a_real_reference_or_its_results_is_refused_first():
  with pytest.raises(ValueError, match=r'^the real reference is needed unless its results are '
                                       r'given: pass real_reference\(...\) or reference_results=$'):
    suite.evaluate(['fcd'], samples=None, real=None, reference=None)
