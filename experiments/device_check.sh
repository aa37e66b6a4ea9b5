#!/usr/bin/env bash
# One prepared check of gmg_jax on a lent GPU machine (about 9 minutes there, 10 at most):
# device and versions, an offline install from carried wheels, the train-step benchmark (plain /
# DST / GMG per cost, 64x64 conv VAE, batch 64 and 256), the GMG-vs-POT table, the K-run
# benchmark and the GMG core tests, written up as OUT_DIR/summary.md (plus the whole log of each
# step that the summary shows in part: install, tests).
#
#   experiments/device_check.sh [--tiny] [--wheels DIR] [OUT_DIR]
#
#   OUT_DIR     where summary.md and the logs go; default $OUT (set by the device tool).
#   --tiny      shrink every size and run 4 of the tests, so that the whole script runs on a
#               CPU in a few minutes (same as DEVICE_CHECK_TINY=1), e.g.
#               JAX_PLATFORMS=cpu experiments/device_check.sh --tiny /tmp/devcheck_out
#   --wheels    wheel directory (default device_wheels/ in the repo root), made beforehand,
#               with network, by experiments/prepare_device_wheels.sh.
#   PYTHON      the interpreter to check and install into (default python3).
#
# Install behaviour. If ott, jaxopt, ml_collections, tensorboardX, ot (POT) and this checkout's
# gmg_jax are already importable by $PYTHON (a development machine with .venv active), nothing is
# installed. Otherwise (the bare device: its python3, /opt/torch/.venv, has jax with CUDA, flax,
# optax, orbax, chex, pytest, ... but none of those) it installs into $PYTHON's own environment,
# without an index: first `pip install --no-index --find-links=WHEELS ott-jax jaxopt
# ml-collections tensorboardX POT` (their dependencies resolved against what is installed; if
# that fails, the carried wheels again with --no-deps), then `pip install --no-index
# --find-links=WHEELS --no-deps -e .` (built in isolation with the carried setuptools/wheel;
# falls back to --no-build-isolation, then to PYTHONPATH=repo root). A missing wheel is reported
# with the list of needed distributions and the command that prepares them; the steps still run.
# The device machine is thrown away after the session, so installing into its python is safe.
#
# Every step runs under `timeout` (exit status 124 = hit its limit); a failing step does not stop
# the later ones, and summary.md is rewritten after each step so a cut-off run still reports.
# POT is limited to its NumPy backend (POT_BACKEND_DISABLE_*) so that importing it does not
# start torch/cupy/JAX on the GPU beside the code under test.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
repo="$(pwd)"

tiny="${DEVICE_CHECK_TINY:-0}"
wheel_dir="device_wheels"
out_dir="${OUT:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny) tiny=1 ;;
    --wheels) wheel_dir="$2"; shift ;;
    --wheels=*) wheel_dir="${1#--wheels=}" ;;
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
mkdir -p "$out_dir" && out_dir="$(cd "$out_dir" && pwd)" || exit 2
py="${PYTHON:-python3}"
# An absolute path (not resolving links: a venv's python is one): some checks run from /.
[[ "$py" == */* ]] && py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"

# Needed distributions (keep in sync with experiments/prepare_device_wheels.sh).
REQUIRED_WHEELS=(ott-jax jaxopt ml-collections tensorboardX POT setuptools wheel)
RUNTIME_DISTS=(ott-jax jaxopt ml-collections tensorboardX POT)
PREPARE_CMD="experiments/prepare_device_wheels.sh $wheel_dir"

export PYTHONUNBUFFERED=1
export POT_BACKEND_DISABLE_PYTORCH=1 POT_BACKEND_DISABLE_CUPY=1
export POT_BACKEND_DISABLE_TENSORFLOW=1 POT_BACKEND_DISABLE_JAX=1

variants="none,dst_cos_decoder,gmg_cos_decoder,gmg_scl2_decoder,gmg_l2_decoder"
if [[ "$tiny" == 1 ]]; then
  mode="tiny (CPU rehearsal: every size shrunk, numbers meaningless)"
  step_args=(--image_size 32 --steps 2 --variants "$variants")
  batches=(8 16)
  gmg_args=(--sizes 16 --pot_costs cosine --repeats 2 --pot_repeats 1 --grid_n 16
    --grid_costs cosine --grid_data structured --grid_epsilon_0 0.01 0.1 --grid_repeats 1
    --grid_pot_repeats 1)
  # A few tests that touch each piece (costs, ott's GW solve against POT in float64, the
  # regularizer registry); the two files take over 10 minutes on 2 busy CPU cores.
  tests=(tests/test_gmg.py::test_cost_matrices_against_loops
    tests/test_gmg.py::test_unknown_cost_names_the_choices
    "tests/test_gmg.py::test_entropic_gw_matches_pot[8-0.2]"
    tests/test_regularizers.py::test_none_and_unknown_names)
  runs_args=(--setting mlp32 --ks 1,2 --steps 2 --regularizers none)
  t_info=120 t_install=300 t_tests=600 t_rerun=300 t_step=600 t_gmg=600 t_runs=300
else
  mode="full"
  step_args=(--image_size 64 --steps 10 --variants "$variants")
  batches=(64 256)
  gmg_args=(--sizes 64 128 256 --repeats 10 --pot_repeats 2 --repeats_large 5
    --pot_repeats_large 1)
  tests=(tests/test_gmg.py tests/test_gw.py tests/test_regularizers.py)
  # Measured on an H100 (2026-11-27, experiments/results/gpu/): install 31 s, bench_step 76 and
  # 80 s, bench_gmg 85 s; bench_runs needed more than 90 s (the GMG programs compile slower),
  # and the 59 tests more than 120 s in 4 workers (42 done). About 9 minutes in all, so the
  # device tool's timeout_s should be 600, and the steps run in the order of their value: the
  # benchmarks first, then the tests (8 workers), each test named as it ends (-v).
  # One K-run program against separate runs (issue "many runs, one program"), 64x64 conv.
  runs_args=(--setting conv64 --ks 1,8,32 --steps 3 --regularizers none,gmg)
  t_info=20 t_install=30 t_tests=150 t_rerun=40 t_step=100 t_gmg=95 t_runs=140
fi

summary="$out_dir/summary.md"
# Scratch files live outside OUT_DIR: the device tool brings back at most 8 files.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
sections="$scratch/sections.md"
overview="$scratch/overview.md"
versions="$scratch/versions.txt"
: >"$sections"
: >"$overview"
: >"$versions"
started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
t_start=$SECONDS
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l | tr -d ' ')"
notes=()

write_summary() {
  {
    echo "# gmg_jax device check"
    echo
    echo "- started: $started; took $((SECONDS - t_start)) s"
    echo "- host: $(hostname); mode: $mode"
    echo "- checkout: $commit ($dirty tracked files modified)"
    echo "- python: $py ($("$py" -c 'import sys; print(sys.version.split()[0], sys.executable)' 2>&1))"
    for n in "${notes[@]}"; do echo "- **$n**"; done
    echo
    echo "| step | exit | seconds | command |"
    echo "| --- | --- | --- | --- |"
    cat "$overview"
    if [[ -s "$versions" ]]; then
      echo
      echo "## versions"
      echo
      echo '```text'
      cat "$versions"
      echo '```'
    fi
    echo
    cat "$sections"
  } >"$summary.tmp" && mv "$summary.tmp" "$summary"
}

# run_step NAME LIMIT_S TAIL_LINES CMD...: run CMD (a command; or a shell function, which
# applies LIMIT_S itself); add a row and a section to the summary with its exit status and the
# last TAIL_LINES lines of its output (0 = all of it). A step shown in part keeps its whole
# output in OUT_DIR/NAME.log (the device tool brings back at most 8 files).
run_step() {
  local name="$1" limit="$2" tail_lines="$3"
  shift 3
  local log="$scratch/$name.log" t0=$SECONDS rc
  echo "== $name: $* (limit ${limit} s)"
  if declare -F "$1" >/dev/null; then
    ("$@") >"$log" 2>&1
  else
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  fi
  rc=$?
  local secs=$((SECONDS - t0)) status="$rc"
  [[ $rc == 124 || $rc == 137 ]] && status="$rc (timed out after ${limit} s)"
  echo "   exit $status, ${secs} s"
  echo "| $name | $status | $secs | \`$*\` |" >>"$overview"
  {
    echo "## $name"
    echo
    echo "\`$*\`"
    echo
    if [[ "$tail_lines" == 0 ]]; then
      echo "exit status $status, $secs s; its whole output:"
    else
      cp "$log" "$out_dir/$name.log"
      echo "exit status $status, $secs s; the last $tail_lines lines (all of it in $name.log):"
    fi
    echo
    echo '```text'
    if [[ "$tail_lines" == 0 ]]; then cat "$log"; else tail -n "$tail_lines" "$log"; fi
    echo '```'
    echo
  } >>"$sections"
  write_summary
  return "$rc"
}

# The needed Python modules that $py cannot import (gmg_jax must come from this checkout; run
# from / so that the checkout itself is not on the path, as it is not for experiments/*.py).
missing_modules() {
  (cd / && "$py" - "$repo" <<'PY' 2>/dev/null) || echo "python"
import importlib, os, sys
missing = []
for mod in ("ott", "jaxopt", "ml_collections", "tensorboardX", "ot", "gmg_jax"):
  try:
    m = importlib.import_module(mod)
    if mod == "gmg_jax" and not os.path.abspath(m.__file__).startswith(sys.argv[1] + os.sep):
      missing.append("gmg_jax")
  except Exception:
    missing.append(mod)
print(" ".join(missing))
PY
}

# The needed distributions that have no wheel in $wheel_dir.
missing_wheels() {
  local dist norm missing=()
  for dist in "${REQUIRED_WHEELS[@]}"; do
    norm="$(echo "$dist" | tr 'A-Z-' 'a-z_')"
    if ! ls "$wheel_dir" 2>/dev/null | tr 'A-Z-' 'a-z_' | grep -q "^${norm}_[0-9].*\.whl$"; then
      missing+=("$dist")
    fi
  done
  echo "${missing[*]}"
}

install_offline() {
  local absent
  absent="$(missing_wheels)"
  if [[ -n "$absent" ]]; then
    echo "MISSING WHEELS in $wheel_dir/: $absent"
    echo "needed (cp312 / py3, manylinux x86_64): ${REQUIRED_WHEELS[*]}"
    echo "prepare them on a machine with network, then carry $wheel_dir to the device:"
    echo "  $PREPARE_CMD"
  fi
  local pip=(timeout "$t_install" "$py" -m pip install --no-index --find-links="$wheel_dir"
    --disable-pip-version-check --no-cache-dir)
  echo "+ ${pip[*]} ${RUNTIME_DISTS[*]}"
  if ! "${pip[@]}" "${RUNTIME_DISTS[@]}"; then
    echo "resolving install failed; retrying the carried wheels with --no-deps"
    local w wheels=()
    for w in "$wheel_dir"/*.whl; do
      [[ -e "$w" ]] || continue
      case "$(basename "$w" | tr 'A-Z' 'a-z')" in setuptools-* | wheel-*) ;; *) wheels+=("$w") ;; esac
    done
    [[ ${#wheels[@]} -gt 0 ]] && "${pip[@]}" --no-deps "${wheels[@]}"
  fi
  echo "+ ${pip[*]} --no-deps -e ."
  if ! "${pip[@]}" --no-deps -e .; then
    echo "isolated build failed; retrying with --no-build-isolation"
    "${pip[@]}" --no-deps --no-build-isolation -e .
  fi
  echo "+ $py -m pip check (informational)"
  timeout 20 "$py" -m pip check
  local still
  still="$(missing_modules)"
  echo "not importable after install: ${still:-none}"
  [[ -z "$still" ]]
}

# ----------------------------------------------------------------------------------- steps

device_info() {
  echo "+ $py -c 'import jax; print(jax.devices())'"
  timeout "$t_info" "$py" -c 'import jax; print(jax.devices()); print("backend:", jax.default_backend())'
  local rc=$?
  if command -v nvidia-smi >/dev/null; then
    echo "+ nvidia-smi"
    timeout "$t_info" nvidia-smi
  else
    echo "nvidia-smi: not present"
  fi
  return "$rc"
}

run_step device "$t_info" 0 device_info
backend="$(grep '^backend:' "$scratch/device.log" | awk '{print $2}')"
if [[ "$tiny" != 1 && "$backend" != "gpu" ]]; then
  notes+=("WARNING: jax backend is '${backend:-unknown}', not gpu: these are not GPU numbers")
fi

absent_modules="$(missing_modules)"
if [[ -z "$absent_modules" ]]; then
  notes+=("install: skipped, every needed module was already importable by $py")
else
  echo "not importable: $absent_modules -> installing from $wheel_dir"
  run_step install "$t_install" 40 install_offline
  absent_wheels="$(missing_wheels)"
  if [[ -n "$absent_wheels" ]]; then
    notes+=("MISSING WHEELS: $absent_wheels; prepare with \`$PREPARE_CMD\` and carry $wheel_dir")
  fi
  still="$(missing_modules)"
  if [[ "$still" == *gmg_jax* ]]; then
    export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
    notes+=("gmg_jax was not installed: PYTHONPATH=$repo used instead")
    still="$(missing_modules)"
  fi
  [[ -n "$still" ]] && notes+=("still not importable after install: $still")
fi

timeout "$t_info" "$py" -c '
import importlib.metadata as md
for dist in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
             "orbax-checkpoint", "chex", "ott-jax", "jaxopt", "POT", "ml-collections",
             "tensorboardX", "numpy", "scipy", "pytest", "setuptools", "gmg_jax"):
  try:
    print(f"{dist:<20} {md.version(dist)}")
  except md.PackageNotFoundError:
    print(f"{dist:<20} absent")' >"$versions" 2>&1
write_summary

for batch in "${batches[@]}"; do
  run_step "bench_step_b$batch" "$t_step" 0 \
    "$py" experiments/bench_step.py "${step_args[@]}" --batch_size "$batch"
done

run_step bench_gmg "$t_gmg" 0 "$py" experiments/bench_gmg.py "${gmg_args[@]}"
run_step bench_runs "$t_runs" 0 "$py" experiments/bench_runs.py "${runs_args[@]}"

# On the device, pytest-xdist (in its image) runs the tests in 8 processes, which compile in
# parallel on its 16 cores; each allocates GPU memory as it goes instead of taking 75% of it.
# pyproject's addopts ask for two workers (-n 2): without pytest-xdist they are replaced.
xdist=(-o "addopts=-ra")
if "$py" -c "import xdist" 2>/dev/null; then
  xdist=(-n 0)
  if [[ "$tiny" != 1 ]]; then
    xdist=(-n 8)
    export XLA_PYTHON_CLIENT_PREALLOCATE=false
  fi
fi
run_step tests "$t_tests" 60 "$py" -m pytest -v --tb=short "${xdist[@]}" "${tests[@]}"
if [[ $? == 1 ]]; then
  # Tell a precision effect (TF32 float32 matmuls on the GPU) from a real failure: rerun only
  # the failed tests with full float32 matmul precision.
  JAX_DEFAULT_MATMUL_PRECISION=highest run_step tests_rerun_highest_precision "$t_rerun" 40 \
    "$py" -m pytest -v --tb=short "${xdist[@]}" --lf "${tests[@]}"
fi
unset XLA_PYTHON_CLIENT_PREALLOCATE

echo "summary: $summary (took $((SECONDS - t_start)) s)"
