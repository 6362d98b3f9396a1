"""optax optimizers and learning-rate schedules built from config."""
from __future__ import annotations

import ml_collections
import optax

SCHEDULE_NAMES = ('constant', 'warmup', 'cosine', 'exponential')
OPTIMIZER_NAMES = ('adam', 'rmsprop')


def make_schedule(lr: float, schedule: ml_collections.ConfigDict, total_steps: int,
                  updates_per_step: int = 1) -> optax.Schedule:
  """`schedule.name`: constant | warmup (linear from 0, then constant) | cosine (linear warmup,
  cosine decay to lr * end_factor at total_steps) | exponential (linear warmup, then lr *
  decay_rate ** ((step - warmup_steps) / decay_steps)).

  `total_steps`, `warmup_steps` and `decay_steps` count training steps; the schedule is read
  per update of the optimizer, `updates_per_step` of them per step (the discriminator's
  n_critic), so that both networks' rates warm up and decay over the same training steps."""
  name, warmup = schedule.name, schedule.warmup_steps
  if warmup < 0 or (warmup and warmup >= total_steps and name == 'cosine'):
    raise ValueError(f'schedule.warmup_steps={warmup} must be >= 0 and, for cosine, below the '
                     f'{total_steps} training steps')
  warmup, total_steps = warmup * updates_per_step, total_steps * updates_per_step
  if name == 'constant':
    return optax.constant_schedule(lr)
  if name == 'warmup':
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  if name == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps,
                                              end_value=lr * schedule.end_factor)
  if name == 'exponential':
    decay = optax.exponential_decay(lr, schedule.decay_steps * updates_per_step,
                                    schedule.decay_rate)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])
  raise ValueError(f'unknown schedule {name!r}: choose one of {", ".join(SCHEDULE_NAMES)} '
                   '(config field schedule.name)')


def make_optimizer(name: str, opt: ml_collections.ConfigDict,
                   schedule: ml_collections.ConfigDict, total_steps: int,
                   updates_per_step: int = 1) -> tuple[optax.GradientTransformation,
                                                       optax.Schedule]:
  """`name`: adam (lr, b1, b2, eps) | rmsprop (lr, decay b2, eps; Keras's RMSprop, the WGAN
  paper's optimiser), with the configured schedule (`make_schedule`); the schedule is returned
  too, for logging."""
  lr = make_schedule(opt.lr, schedule, total_steps, updates_per_step)
  if name == 'adam':
    return optax.adam(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps), lr
  if name == 'rmsprop':
    return optax.rmsprop(lr, decay=opt.b2, eps=opt.eps), lr
  raise ValueError(f'unknown optimizer {name!r}: choose one of {", ".join(OPTIMIZER_NAMES)} '
                   '(config field optimizer.name)')
