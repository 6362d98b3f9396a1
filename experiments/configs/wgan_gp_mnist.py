"""WGAN-GP (Gulrajani et al. 2017) with the DCGAN networks on MNIST: lambda 10, 5 critic steps
per generator step, Adam(1e-4, b1=0.5, b2=0.9) as in the paper."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.loss.name = 'wgan_gp'
  config.loss.gp_weight = 10.0
  config.loss.n_critic = 5
  for opt in (config.optimizer.generator, config.optimizer.discriminator):
    opt.lr, opt.b1, opt.b2 = 1e-4, 0.5, 0.9
  config.num_epochs = 30  # an epoch is 5x fewer generator steps than with n_critic = 1
  return config
