"""Class-conditional DCGAN on Kannada-MNIST (dcgan_kannada.py's networks and settings) with a
projection discriminator and cgan_mnist.py's mode-seeking term."""
from experiments.configs import dcgan_kannada


def get_config():
  config = dcgan_kannada.get_config()
  config.model.num_classes = 10
  config.model.conditioning = 'projection'
  config.loss.mode_seeking = 0.2  # cgan_mnist.py's weight; not tuned on Kannada
  config.num_epochs = 15
  config.sample_grid_rows = 10
  return config
