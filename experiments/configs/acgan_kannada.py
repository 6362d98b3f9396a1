"""Class-conditional Kannada-MNIST GAN with an auxiliary-classifier discriminator (AC-GAN): D
classifies real and fake digits (Odena et al. 2017); cgan_kannada.py's other settings."""
from experiments.configs import cgan_kannada


def get_config():
  config = cgan_kannada.get_config()
  config.model.conditioning = 'auxiliary'
  config.loss.class_loss_on_fakes = True
  config.num_epochs = 15  # as measured (README); cgan_kannada.py went to 30 epochs later
  return config
