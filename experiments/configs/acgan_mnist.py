"""Class-conditional DCGAN on MNIST with an auxiliary-classifier discriminator (AC-GAN): D
classifies real and fake digits (Odena et al. 2017); cgan_mnist.py's other settings."""
from experiments.configs import cgan_mnist


def get_config():
  config = cgan_mnist.get_config()
  config.model.conditioning = 'auxiliary'
  config.loss.class_loss_on_fakes = True
  config.model.discriminator_dropout = 0.3  # as measured (README); cgan_mnist.py dropped it later
  return config
