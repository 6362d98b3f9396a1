"""The Kannada-MNIST evaluation classifier (jaxgan/evaluation/weights/kannada_mnist.msgpack).

python -m experiments.train_classifier --config=experiments/configs/classifier_kannada.py
"""
from experiments.configs import classifier_mnist


def get_config():
  config = classifier_mnist.get_config()
  config.dataset = 'kannada_mnist'
  return config
