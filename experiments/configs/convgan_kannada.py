"""The Kannada-MNIST paper's conv GAN on Kannada-MNIST, at the paper's settings.

Measured (8231d5d, 2-core CPU, seed 0): the discriminator wins outright within 300 steps
(D(real) 1.000, D(fake) 0.000, g_loss 7.8) and the generator stops learning; 59 images/s. Kept
as the paper's recipe and for the speed benchmark; dcgan_kannada.py is the one that trains.
"""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'kannada'
  config.data.name = 'kannada_mnist'
  config.optimizer.generator.lr = 2e-4
  config.optimizer.discriminator.lr = 2e-4
  config.optimizer.generator.b1 = 0.5
  config.optimizer.discriminator.b1 = 0.5
  return config
