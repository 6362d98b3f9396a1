#!/usr/bin/env bash
# Ablation of the progressive_mnist recipe: the full recipe and the recipe minus each part, all at
# the same number of images seen, each scored by fcd on 5000 samples.
#   experiments/ablate_progressive.sh RUNS_DIR [STEPS [--config.FIELD=VALUE ...]]
# STEPS: the batch-256 variants' training steps (default 2340, the config's 10 epochs =
# 599,040 images); growth starts at STEPS/2, the fade and the warmup keep the config's shares of
# the run (500 and 100 of 2340 steps). The batch-64 variant runs 4 x STEPS. Extra flags apply to
# every variant. A run that exists is resumed, or skipped when finished (RUN/samples/final.png,
# which the trainer writes last). Prints each variant's training wall time (only a fresh run's
# is the variant's); fcd goes to RUN/eval.json. A variant that fails does not stop the others;
# the script then names the failed ones and exits 1.
set -uo pipefail
runs=${1:?usage: $0 RUNS_DIR [STEPS [--config.FIELD=VALUE ...]]}
steps=${2:-2340}
shift $(($# < 2 ? $# : 2))
config=experiments/configs/progressive_mnist.py
length() {  # length STEPS: the flags that set a run's length, growth, fade and warmup
  echo "--config.num_steps=$1 --config.model.grow_step=$(($1 / 2))
    --config.model.fade_steps=$(($1 * 500 / 2340)) --config.schedule.warmup_steps=$(($1 * 100 / 2340))"
}
declare -A variants=(
  [full]=''
  [no_growing]='--config.model.grow_step=0 --config.model.fade_steps=0'
  [no_instance_norm]='--config.model.generator_norm=batch'
  [no_spectral_norm]='--config.model.spectral_norm=False'
  [no_schedule]='--config.schedule.name=constant --config.schedule.warmup_steps=0'
  [no_label_smoothing]='--config.loss.label_smoothing=0.0'
  # batch 64: 4x the steps (and the grow/fade/warmup steps), the unscaled learning rate 1e-4.
  [no_large_batch]="$(length $((4 * steps))) --config.batch_size=64
    --config.optimizer.generator.lr=1e-4 --config.optimizer.discriminator.lr=1e-4"
)
failed=()
for name in full no_growing no_instance_norm no_spectral_norm no_schedule no_label_smoothing \
    no_large_batch; do
  run=$runs/$name
  if [[ -e $run/samples/final.png ]]; then
    echo "$name: already trained (wall time not measured here)"
  else
    how=trained
    [[ -e $run/checkpoints ]] && how='resumed; this part'
    start=$SECONDS
    # shellcheck disable=SC2046,SC2086  # the flags are meant to split; later flags win
    if ! python -m experiments.train --config="$config" --workdir="$run" $(length "$steps") \
        ${variants[$name]} "$@"; then
      echo "$name: training failed"
      failed+=("$name")
      continue
    fi
    echo "$name: $how in $((SECONDS - start)) s"
  fi
  python -m experiments.evaluate --workdir="$run" --num_samples=5000 --metrics=fcd \
    || { echo "$name: evaluation failed"; failed+=("$name"); }
done
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
