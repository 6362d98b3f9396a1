"""Class-conditional DCGAN on MNIST with an auxiliary-classifier discriminator (AC-GAN): D
classifies real and fake digits (Odena et al. 2017); cgan_mnist.py's other settings."""
from experiments.configs import cgan_mnist


def get_config():
  config = cgan_mnist.get_config()
  config.model.conditioning = 'auxiliary'
  config.loss.class_loss_on_fakes = True
  # As measured (README); cgan_mnist.py later dropped the dropout and went to 30 epochs.
  config.model.discriminator_dropout = 0.3
  config.num_epochs = 15
  return config
