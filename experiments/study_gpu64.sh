#!/usr/bin/env bash
# The 64x64 decoder study on a lent GPU, time-boxed: beta-VAE with GMG (cosine cost, on the
# decoder, eps_0 0.03) at weight 0 (plain beta-VAE: the regularizer's gradient is multiplied by 0),
# the default 500 and a larger one, crossed with K seeds, trained as ONE K-run program
# (gmg_jax/replicas.py) on the default setting: procedural Shapes3D, 64x64, the conv VAE, batch
# 64; then DST (cosine, decoder, 500) over the same seeds as a second program when time is left.
#
#   experiments/study_gpu64.sh [--budget S] [--steps N] [--seeds K] [--weights W,W,..] [--tiny] OUT_DIR
#
#   --budget   seconds for the whole script (default 330); each program gets what is left, and is
#              stopped with SIGTERM at its limit: the trainer checkpoints and exits after its
#              current step, or is killed 20 s later if an evaluation is running (as on
#              2026-11-27). The evaluations done so far stay in each replica's eval.jsonl.
#   --weights  GMG weights, crossed with the seeds (default 0,500,5000; 0 is beta-VAE).
#   --steps    training steps (default 3000), evaluated every 1000 and at the end (DCI, MIG; fast
#              estimators on 2,000 / 1,000 points; no pictures: on 2026-11-27 the evaluation of 30
#              replicas did not fit in the time box).
#   --tiny     a CPU rehearsal: 32x32, 2 seeds, 20 steps.
#
# OUT_DIR receives runs.tar.gz (each replica's config.json, eval.jsonl, metrics.json,
# train_summary.json, metrics.jsonl; no checkpoints or pictures), one log per program and
# summary.md with the exit statuses and times. The wheels and the install are those of
# experiments/device_check.sh (run it first in the same session; this installs what is missing).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

budget=330 steps=3000 seeds=10 weights="0,500,5000" tiny=0 out_dir="${OUT:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --budget) budget="$2"; shift ;;
    --steps) steps="$2"; shift ;;
    --seeds) seeds="$2"; shift ;;
    --weights) weights="$2"; shift ;;
    --tiny) tiny=1 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    *) out_dir="$1" ;;
  esac
  shift
done
if [[ -z "$out_dir" ]]; then
  echo "no output directory: pass OUT_DIR or set OUT (see --help)" >&2
  exit 2
fi
for n in "$budget" "$steps" "$seeds"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "--budget, --steps, --seeds: positive integers, got '$n'" >&2; exit 2; }
done
mkdir -p "$out_dir" && out_dir="$(cd "$out_dir" && pwd)" || exit 2
py="${PYTHON:-python3}"
[[ "$py" == */* ]] && py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
t_start=$SECONDS
runs="$(mktemp -d)"
summary="$out_dir/summary.md"
size=64 every=1000
if [[ "$tiny" == 1 ]]; then
  size=32 steps=20 seeds=2 every=10
fi

if ! (cd / && "$py" -c 'import ott, ml_collections, tensorboardX, gmg_jax') 2>/dev/null; then
  echo "installing from device_wheels/"
  "$py" -m pip install -q --no-index --find-links=device_wheels --disable-pip-version-check \
    ott-jax jaxopt ml-collections tensorboardX
  "$py" -m pip install -q --no-index --find-links=device_wheels --disable-pip-version-check \
    --no-deps --no-build-isolation -e . || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

common=(--config.num_seeds="$seeds" --config.data.image_size="$size"
  --config.train.num_steps="$steps" --config.train.log_every=100
  --config.train.checkpoint_every="$every" --config.train.progress_bar=False
  --config.optim.learning_rate=5e-4
  --config.eval.every_steps="$every" --config.eval.metrics='("dci","mig")' --config.eval.pictures=False
  --config.eval.num_train=2000 --config.eval.num_test=1000)

{
  echo "# 64x64 decoder study (GPU, time-boxed)"
  echo
  echo "- host: $(hostname); steps $steps, seeds 0-$((seeds - 1)), image $size, lr 5e-4, batch 64"
  echo
  echo "| program | exit | seconds |"
  echo "| --- | --- | --- |"
} >"$summary"

# run NAME CONFIG ARGS...: one K-run program, limited to what is left of the budget.
run() {
  local name="$1" config="$2" left=$((budget - (SECONDS - t_start)))
  shift 2
  if ((left < 30)); then
    echo "| $name | not run: ${left} s left | 0 |" >>"$summary"
    return
  fi
  local t0=$SECONDS
  echo "== $name (limit ${left} s)"
  timeout -s TERM --kill-after=20 "$left" "$py" -m gmg_jax.main \
    --config="configs/default.py:$config" --workdir="$runs/$name" "${common[@]}" "$@" \
    >"$out_dir/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc, $((SECONDS - t0)) s"
  echo "| $name | $rc | $((SECONDS - t0)) |" >>"$summary"
}

run gmg_cos_decoder beta_vae,gmg_cos_decoder --config.vary="regularizer.weight=$weights"
run dst_cos_decoder beta_vae,dst_cos_decoder

(cd "$runs" && find . -name checkpoints -prune -o -type f \( -name '*.json' -o -name '*.jsonl' \) \
  -print | tar -czf "$out_dir/runs.tar.gz" -T -)
echo "took $((SECONDS - t_start)) s" | tee -a "$summary"
