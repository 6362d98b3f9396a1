"""The EMNIST-digits evaluation classifier (jaxgan/evaluation/weights/emnist_digits.msgpack).

python -m experiments.train_classifier --config=experiments/configs/classifier_emnist.py

jaxgan ships no EMNIST classifier (the machines it was developed on had no copy of EMNIST), so
each user trains this one once before scoring EMNIST runs. classifier_mnist.py's recipe for the
same number of steps: 2 epochs of EMNIST's 240,000 training digits are MNIST's 8 epochs of
60,000 (about 40 minutes on 2 CPU cores).
"""
from experiments.configs import classifier_mnist


def get_config():
  config = classifier_mnist.get_config()
  config.dataset = 'emnist_digits'
  config.num_epochs = 2
  return config
