"""Class-conditional Kannada-MNIST GAN with an auxiliary-classifier discriminator (AC-GAN)."""
from experiments.configs import cgan_kannada


def get_config():
  config = cgan_kannada.get_config()
  config.model.conditioning = 'auxiliary'
  return config
