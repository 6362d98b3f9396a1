"""Class-conditional DCGAN on MNIST with an auxiliary-classifier discriminator (AC-GAN)."""
from experiments.configs import cgan_mnist


def get_config():
  config = cgan_mnist.get_config()
  config.model.conditioning = 'auxiliary'
  return config
