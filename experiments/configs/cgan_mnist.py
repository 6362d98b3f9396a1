"""Class-conditional DCGAN on MNIST with a projection discriminator (Miyato & Koyama 2018).

The papers' DCGAN networks, the generator fed a 50-d label embedding beside its latent; Adam
2e-4, b1 0.5 (the DCGAN paper's settings, which conditional GANs commonly train with).
"""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.model.num_classes = 10
  config.model.conditioning = 'projection'
  for optimizer in (config.optimizer.generator, config.optimizer.discriminator):
    optimizer.lr = 2e-4
    optimizer.b1 = 0.5
  config.num_epochs = 15
  config.sample_grid_rows = 10  # conditional grids: one row per class, 10 latents each
  return config
