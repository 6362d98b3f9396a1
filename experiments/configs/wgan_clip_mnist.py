"""WGAN with weight clipping (Arjovsky et al. 2017) with the DCGAN networks on MNIST: critic
parameters clipped to [-0.01, 0.01], 5 critic steps per generator step, RMSprop(5e-5) as in the
paper."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.loss.name = 'wgan'
  config.loss.weight_clip = 0.01
  config.loss.n_critic = 5
  config.optimizer.name = 'rmsprop'
  for opt in (config.optimizer.generator, config.optimizer.discriminator):
    opt.lr, opt.b2 = 5e-5, 0.9  # b2: RMSprop's decay (Keras's rho)
  config.num_epochs = 30  # an epoch is 5x fewer generator steps than with n_critic = 1
  return config
