"""Rarity weights (jaxgan/rarity.py): the k-th-neighbour rarity, the per-class sampling
probabilities, and a weighted run that resumes to the uninterrupted result."""
from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from experiments.configs import tiny
from jaxgan import rarity, trainer
from tests.idx_files import write_manual_dir


def brute_force_rarity(embeddings, labels, k):
  units = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  out = np.empty(len(labels))
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    gaps = np.linalg.norm(units[members, None] - units[None, members], axis=-1)
    kth = np.sort(gaps, axis=1)[:, min(k, len(members) - 1)]
    out[members] = kth / np.median(kth)
  return out


def test_rarity_is_the_kth_neighbour_distance_over_the_class_median(monkeypatch):
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(90, 6)).astype(np.float32)
  labels = np.repeat([0, 1, 2], [50, 36, 4])  # class 2 is smaller than k + 1
  monkeypatch.setattr(rarity, '_ROWS_PER_CHUNK', 16)  # several chunks per class
  np.testing.assert_allclose(rarity.rarity(embeddings, labels, neighbours=5),
                             brute_force_rarity(embeddings, labels, 5), rtol=1e-4)


def test_an_outlier_is_rare_and_a_lone_example_is_average():
  rng = np.random.default_rng(1)
  cluster = np.array([1.0, 0, 0]) + 0.05 * rng.normal(size=(30, 3))
  embeddings = np.concatenate([cluster, [[0, 1.0, 0]], [[0, 0, 1.0]]])
  labels = np.array([0] * 31 + [1])
  rarities = rarity.rarity(embeddings, labels, neighbours=3)
  assert rarities[30] > 5 * rarities[:30].max()  # off the cluster
  assert np.median(rarities[:31]) == pytest.approx(1.0)
  assert rarities[31] == 1.0  # alone in its class: nothing to compare with


def test_sampling_weights_keep_class_shares_and_follow_rarity_up_to_the_cap():
  labels = np.array([0] * 6 + [1] * 4)
  rarities = np.array([0.5, 1.0, 1.0, 2.0, 3.0, 9.0, 1.0, 1.0, 1.0, 4.0])
  weights = rarity.sampling_weights(rarities, labels, power=1.0, cap=2.5)
  assert weights.sum() == pytest.approx(1.0)
  assert weights[labels == 0].sum() == pytest.approx(0.6)
  assert weights[labels == 1].sum() == pytest.approx(0.4)
  # Within a class the weights go as min(rarity, 2.5): 0.5 : 1 : 1 : 2 : 2.5 : 2.5.
  np.testing.assert_allclose(weights[:6] / weights[1], [0.5, 1, 1, 2, 2.5, 2.5])
  np.testing.assert_allclose(rarity.sampling_weights(rarities, labels, power=0.0, cap=2.5),
                             np.full(10, 0.1))
  # A power that overflows (9 ** 1000) is capped like any other, without numpy's warning.
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    huge = rarity.sampling_weights(rarities, labels, power=1000.0, cap=2.5)
  np.testing.assert_allclose(huge[:6] / huge[4], [0, 1 / 2.5, 1 / 2.5, 1, 1, 1], atol=1e-12)


@pytest.fixture(scope='module')
def rarity_config(tmp_path_factory):
  manual = tmp_path_factory.mktemp('manual')
  write_manual_dir(manual, {'mnist': {'train': 300, 'test': 50}})
  data_dir = tmp_path_factory.mktemp('tfds')

  def make(num_epochs):
    config = tiny.get_config()
    config.data.manual_dir, config.data.data_dir = str(manual), str(data_dir)
    config.data.rarity_power, config.data.rarity_cap = 1.5, 4.0
    config.num_epochs = num_epochs
    return config

  return make


def test_a_rarity_weighted_run_resumes_to_the_uninterrupted_result(rarity_config, tmp_path):
  """The weights are recomputed on resume; they must give the same draws bit for bit."""
  straight = trainer.train_and_evaluate(rarity_config(2), str(tmp_path / 'a'))
  trainer.train_and_evaluate(rarity_config(1), str(tmp_path / 'b'))
  resumed = trainer.train_and_evaluate(rarity_config(2), str(tmp_path / 'b'))
  jax.tree.map(np.testing.assert_array_equal, straight, resumed)
  uniform = rarity_config(2)
  uniform.data.rarity_power = 0.0
  unweighted = trainer.train_and_evaluate(uniform, str(tmp_path / 'c'))
  assert not np.array_equal(jax.tree.leaves(unweighted.g_params)[0],
                            jax.tree.leaves(straight.g_params)[0])
  # Weighted in epoch 0 only: neither run above.
  first_only = rarity_config(2)
  first_only.data.rarity_epochs = 1
  first_weighted = trainer.train_and_evaluate(first_only, str(tmp_path / 'd'))
  for other in (straight, unweighted):
    assert not np.array_equal(jax.tree.leaves(first_weighted.g_params)[0],
                              jax.tree.leaves(other.g_params)[0])
  # Resumed past its weighted epoch (no weights computed then): the same result.
  first_half = rarity_config(1)
  first_half.data.rarity_epochs = 1
  trainer.train_and_evaluate(first_half, str(tmp_path / 'e'))
  resumed_uniform = trainer.train_and_evaluate(first_only, str(tmp_path / 'e'))
  jax.tree.map(np.testing.assert_array_equal, first_weighted, resumed_uniform)


@pytest.mark.parametrize('field, value, message', [
    ('rarity_power', -1.0, 'data.rarity_power must be finite and >= 0 (0: off) and '
                           'data.rarity_cap finite and >= 1, got -1.0 and 2.5'),
    ('rarity_cap', 0.5, 'data.rarity_power must be finite and >= 0 (0: off) and '
                        'data.rarity_cap finite and >= 1, got 0.0 and 0.5'),
    ('rarity_epochs', -2, 'data.rarity_epochs must be >= 0 (0: every epoch), got -2'),
])
def test_bad_rarity_settings_are_one_line_errors(field, value, message):
  config = tiny.get_config()
  config.data[field] = value
  with pytest.raises(ValueError) as excinfo:
    trainer.validate(config)
  assert str(excinfo.value) == f'bad config: {message}'
