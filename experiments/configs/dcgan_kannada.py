"""The papers' Keras DCGAN on Kannada-MNIST, with dcgan_mnist's settings (Adam 1e-4).

The Kannada paper's own conv GAN is convgan_kannada.py; at that paper's settings its
discriminator wins within 300 steps, while this network and recipe train on MNIST as published.
"""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.data.name = 'kannada_mnist'
  return config
