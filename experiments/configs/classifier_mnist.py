"""The MNIST evaluation classifier (jaxgan/evaluation/weights/mnist.msgpack).

python -m experiments.train_classifier --config=experiments/configs/classifier_mnist.py
"""
import os

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = 'mnist'  # mnist | kannada_mnist | emnist_digits | svhn
  config.seed = 0
  config.batch_size = 128
  config.num_epochs = 8
  config.learning_rate = 2e-3  # Adam, cosine-decayed to 0 over the run
  config.max_shift = 2  # random whole-pixel shifts of up to this many pixels each way
  config.dropout_rate = 0.2  # on the embedding layer, in training only
  # Folder holding <dataset>/<official files: IDX .gz, SVHN's .mat>; empty: tfds downloads them.
  config.manual_dir = os.environ.get('JAXGAN_MANUAL_DIR', '')
  config.data_dir = ''  # tfds's prepared copies; empty: tfds's default (TFDS_DATA_DIR)
  return config
