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
  # Cosine needs steps left to decay over; past the run's end no warmup reaches lr.
  last = total_steps - 1 if name == 'cosine' else total_steps
  if warmup < 0 or (name != 'constant' and warmup > last):
    raise ValueError(f'schedule.warmup_steps={warmup} must be >= 0 and at most the '
                     f'{total_steps} training steps (below them for cosine)')
  problems = schedule_problems(schedule)
  if problems:
    raise ValueError('; '.join(problems))
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


def schedule_problems(schedule: ml_collections.ConfigDict) -> list[str]:
  """What is wrong with `schedule.name` (an unknown schedule, refused before the data loads)
  and the fields of its schedule (the others are unused): a
  decay rate of 0 or a decay over 0 steps gave lr at every step, a negative end factor negative
  learning rates, and an end factor or decay rate above 1 rates that grow."""
  if schedule.name not in SCHEDULE_NAMES:  # else refused only once the data had loaded
    return [f'schedule.name must be one of {", ".join(SCHEDULE_NAMES)}, got {schedule.name!r}']
  problems = []
  if schedule.name == 'cosine' and not 0.0 <= schedule.end_factor <= 1.0:
    problems.append(f'schedule.end_factor must be in [0, 1] (a decay), got {schedule.end_factor}')
  if schedule.name == 'exponential' and (schedule.decay_steps <= 0
                                         or not 0.0 < schedule.decay_rate <= 1.0):
    problems.append('schedule.decay_steps must be > 0 and schedule.decay_rate in (0, 1] (a '
                    f'decay), got {schedule.decay_steps} and {schedule.decay_rate}')
  return problems


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
