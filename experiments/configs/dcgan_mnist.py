"""The papers' Keras DCGAN on MNIST (Adam 1e-4, non-saturating BCE)."""
from experiments.configs import default


def get_config():
  return default.get_config()
