"""Class-conditional DCGAN on MNIST with an auxiliary-classifier discriminator (AC-GAN): D
classifies real and fake digits (Odena et al. 2017); cgan_mnist.py's other settings."""
from experiments.configs import cgan_mnist


def get_config():
  config = cgan_mnist.get_config()
  config.model.conditioning = 'auxiliary'
  config.loss.class_loss_on_fakes = True
  # As measured (README); cgan_mnist.py later dropped the dropout, went to 30 epochs and to
  # Adam b1 0 / b2 0.9.
  config.model.discriminator_dropout = 0.3
  config.num_epochs = 15
  for optimizer in (config.optimizer.generator, config.optimizer.discriminator):
    optimizer.b1, optimizer.b2 = 0.5, 0.999
  return config
