#!/usr/bin/env bash
# The 64x64 decoder study on a lent GPU: one time-boxed call (<= 9 minutes), no network.
# Plan and declared contrasts: experiments/results/gpu/study64/PLAN.md.
#
# Each call trains ONE K-run program (gmg_jax/replicas.py) on the default setting (procedural
# Shapes3D, 64x64, the conv VAE, batch 64, beta-VAE beta 4, Adam 5e-4), 16 seeds (100-115):
#   arm gmg: GMG (cosine, decoder, eps_0 0.03) at weights 0 and 1000, crossed with the seeds
#            (32 replicas; weight 0 trains as beta-VAE and is each seed's paired baseline);
#   arm dst: DST (cosine, decoder) at weight 300 on the same seeds (16 replicas).
# `--arm auto` (default) trains the first arm whose results are not yet committed under
# RESULTS (default experiments/results/gpu/study64/runs/), so the next GPU call goes on where
# the last one stopped. Before the program, a side-by-side benchmark times one GMG replica alone
# and the K-run step (experiments/bench_runs.py), the throughput figure of a K-run on the GPU.
#
#   experiments/study_gpu64.sh [--budget S] [--steps N] [--arm auto|gmg|dst]
#                              [--results DIR] [--no_bench] [--tiny] OUT_DIR
#
#   --budget   seconds for the whole script (default 530); the program gets what the benchmark
#              left and is stopped with SIGTERM at its limit (the trainer checkpoints and exits;
#              evaluations done so far stay in each replica's eval.jsonl).
#   --steps    training steps (default 5000), evaluated at half and at the end (DCI, MIG, fast,
#              10,000 / 5,000 points; no pictures).
#   --tiny     a CPU rehearsal: 32x32 MLP, 2 seeds, 20 steps, evaluated at 10 and 20 on few points.
#   --no_bench skip the benchmark (the CI rehearsal: it times nothing on a CPU).
#
# OUT_DIR receives runs.tar.gz (each replica's config.json, eval.jsonl, metrics.json,
# metrics.jsonl, train_summary.json; no checkpoints), the program's log, bench.log and
# summary.md. Back here, `python experiments/gpu64_results.py OUT_DIR/runs.tar.gz` records the
# replicas under RESULTS and writes the tables. The wheels and the install are those of
# experiments/device_check.sh (run experiments/prepare_device_wheels.sh here first; carry
# device_wheels).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

budget=530 steps=5000 arm=auto tiny=0 run_bench=1 out_dir="${OUT:-}"
results="experiments/results/gpu/study64"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --budget) budget="$2"; shift ;;
    --steps) steps="$2"; shift ;;
    --arm) arm="$2"; shift ;;
    --results) results="$2"; shift ;;
    --tiny) tiny=1 ;;
    --no_bench) run_bench=0 ;;
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
for n in "$budget" "$steps"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "--budget, --steps: positive integers, got '$n'" >&2; exit 2; }
done
if [[ "$arm" == auto ]]; then
  if ! ls "$results/runs/beta_vae+gmg_cos_decoder+weight=1000"/seed_*.json >/dev/null 2>&1; then
    arm=gmg
  elif ! ls "$results/runs/beta_vae+dst_cos_decoder"/seed_*.json >/dev/null 2>&1; then
    arm=dst
  else
    echo "both arms are recorded under $results/runs: nothing left to train"
    exit 0
  fi
fi
case "$arm" in
  gmg) variant=beta_vae,gmg_cos_decoder extra=(--config.vary="regularizer.weight=0,1000") ;;
  dst) variant=beta_vae,dst_cos_decoder extra=(--config.regularizer.weight=300) ;;
  *) echo "--arm: auto, gmg or dst; got '$arm'" >&2; exit 2 ;;
esac
mkdir -p "$out_dir" && out_dir="$(cd "$out_dir" && pwd)" || exit 2
py="${PYTHON:-python3}"
[[ "$py" == */* ]] && py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
t_start=$SECONDS
runs="$(mktemp -d)"
summary="$out_dir/summary.md"
seeds=16 size=64 points=(10000 5000) model=() bench=(--setting=conv64 --ks=1,32 --steps=20 --block=10)
if [[ "$tiny" == 1 ]]; then
  seeds=2 size=32 steps=20 points=(200 100)
  model=(--config.model.arch=mlp '--config.model.mlp_hidden=(32,)')
  bench=(--setting=mlp32 --ks=1,2 --steps=2 --block=2)
fi
half=$((steps / 2))

if ! (cd / && "$py" -c 'import ott, ml_collections, tensorboardX, gmg_jax') 2>/dev/null; then
  echo "installing from device_wheels/"
  "$py" -m pip install -q --no-index --find-links=device_wheels --disable-pip-version-check \
    ott-jax jaxopt ml-collections tensorboardX
  "$py" -m pip install -q --no-index --find-links=device_wheels --disable-pip-version-check \
    --no-deps --no-build-isolation -e . || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

{
  echo "# 64x64 decoder study, arm $arm (time-boxed)"
  echo
  echo "- host: $(hostname); steps $steps, seeds 100-$((99 + seeds)), image $size, lr 5e-4, batch 64"
  echo "- backend: $("$py" -c 'import jax; print(jax.default_backend(), jax.devices()[0].device_kind)' 2>&1 | tail -1)"
  echo
  echo "| step | exit | seconds |"
  echo "| --- | --- | --- |"
} >"$summary"

# One GMG replica alone against the K-run step, side by side in one process.
if [[ "$run_bench" == 1 ]]; then
  t0=$SECONDS
  timeout -s TERM --kill-after=10 90 "$py" experiments/bench_runs.py --regularizers=gmg \
    --run_steps="$steps" "${bench[@]}" >"$out_dir/bench.log" 2>&1
  echo "| bench_runs (${bench[*]}) | $? | $((SECONDS - t0)) |" >>"$summary"
fi

left=$((budget - (SECONDS - t_start)))
t0=$SECONDS
echo "== $arm program (limit ${left} s)"
timeout -s TERM --kill-after=20 "$left" "$py" -m gmg_jax.main \
  --config="configs/default.py:$variant" --workdir="$runs/${arm}_cos_decoder" \
  --config.seed=100 --config.num_seeds="$seeds" --config.data.image_size="$size" "${model[@]}" \
  --config.train.num_steps="$steps" --config.train.log_every=100 \
  --config.train.checkpoint_every="$half" --config.train.progress_bar=False \
  --config.optim.learning_rate=5e-4 --config.eval.every_steps="$half" \
  --config.eval.metrics='("dci","mig")' --config.eval.pictures=False \
  --config.eval.num_train="${points[0]}" --config.eval.num_test="${points[1]}" "${extra[@]}" \
  >"$out_dir/${arm}_cos_decoder.log" 2>&1
rc=$?
echo "   exit $rc, $((SECONDS - t0)) s"
echo "| ${arm}_cos_decoder program | $rc | $((SECONDS - t0)) |" >>"$summary"

(cd "$runs" && find . -name checkpoints -prune -o -type f \( -name '*.json' -o -name '*.jsonl' \) \
  -print | tar -czf "$out_dir/runs.tar.gz" -T -)
echo "took $((SECONDS - t_start)) s" | tee -a "$summary"
