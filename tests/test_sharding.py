"""Tests for data parallelism: sharded steps on 4 fake CPU devices and a real 2-process run.

The multi-device checks run in one subprocess started with JAX_NUM_CPU_DEVICES=4 (the device
count is fixed when JAX starts, and the rest of the suite runs on one device); that process
prints its measurements as JSON and the tests below assert on them.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, tiny_config, tiny_main_command

_NUM_DEVICES = 4


def _max_abs_diff(tree_a, tree_b) -> float:
  import jax

  return max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b), strict=True)
  )


def _steps_side_by_side(config, batches, mesh):
  """Runs the same steps on one device and data parallel; returns both states and metrics."""
  from gmg_jax import sharding, train

  graphdef, state_one = train.create_train_state(config, (16, 16, 3))
  _, state_all = train.create_train_state(config, (16, 16, 3))
  state_all = sharding.replicate(state_all, mesh)
  step_one = train.make_train_step(graphdef, config)
  step_all = train.make_train_step(graphdef, config, mesh)
  for one, everywhere in batches:
    state_one, metrics_one = step_one(state_one, one)
    state_all, metrics_all = step_all(state_all, everywhere)
  return state_one, metrics_one, state_all, metrics_all, step_all


def _multi_device_checks() -> dict:
  """Runs in a process with 4 CPU devices; returns the measurements the tests assert on."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from gmg_jax import data, regularizers, sharding, train

  assert jax.device_count() == _NUM_DEVICES
  mesh = sharding.make_mesh()
  layout = sharding.batch_sharding(mesh)
  out = {}

  # scope="global" with the batch drawn inside the step.
  config = tiny_config("gmg_cos_decoder")
  config.train.batch_size = 32
  dataset = data.get_dataset(config.data)
  state_one, metrics_one, state_all, metrics_all, step_all = _steps_side_by_side(
    config, [(dataset, dataset)] * 3, mesh
  )
  out["global_param_diff"] = _max_abs_diff(state_one.modules, state_all.modules)
  out["global_metric_diff"] = {
    k: abs(float(metrics_one[k]) - float(metrics_all[k]))
    for k in ("loss", "regularizer", "grad_norm")
  }
  out["global_step"] = int(state_all.step)
  out["replicated"] = all(
    leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == _NUM_DEVICES
    for leaf in jax.tree.leaves(state_all)
  )
  # The gradient is reduced across devices only if the batch really was split over them.
  out["all_reduce_in_step"] = "all-reduce" in step_all.lower(state_all, dataset).compile().as_text()

  # A host dataset: every process draws the batch, feeds its rows.
  host_config = tiny_config()
  host_config.train.batch_size = 32
  rng = np.random.default_rng(0)
  host_set = data.HostArrayDataset(
    rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8),
    "toy",
    ("a", "b"),
    (8, 8),
    (16, 16, 3),
    (8, 8),
    (0, 1),
  )
  run_rng = np.asarray(train.create_train_state(host_config, (16, 16, 3))[1].rng)
  host_batches = [train.host_batch(host_set, run_rng, s, 32) for s in range(3)]
  state_one, _, state_all, _, _ = _steps_side_by_side(
    host_config, [(b, sharding.host_to_global(b, layout)) for b in host_batches], mesh
  )
  out["host_param_diff"] = _max_abs_diff(state_one.modules, state_all.modules)

  # scope="local": one GMG per device sub-batch, against the mean computed by hand.
  gmg = regularizers.make_regularizer(config.regularizer)
  local = sharding.scoped_regularizer(gmg, "local", mesh)
  key_x, key_y = jax.random.split(jax.random.key(1))
  x = jax.random.normal(key_x, (32, 4))
  y = jax.nn.sigmoid(jax.random.normal(key_y, (32, 48)))
  key = jax.random.key(2)

  def sharded(y):
    return local(None, jax.device_put(x, layout), y, key)[0]

  def by_hand(y):
    values = [gmg(None, x[i : i + 8], y[i : i + 8], key)[0] for i in range(0, 32, 8)]
    return jnp.mean(jnp.stack(values))

  value_local, grad_local = jax.jit(jax.value_and_grad(sharded))(jax.device_put(y, layout))
  value_hand, grad_hand = jax.value_and_grad(by_hand)(y)
  out["local_value"], out["local_by_hand"] = float(value_local), float(value_hand)
  out["local_global_value"] = float(gmg(None, x, y, key)[0])
  out["local_grad_diff"] = float(jnp.max(jnp.abs(grad_local - grad_hand)))
  out["local_grad_scale"] = float(jnp.max(jnp.abs(grad_hand)))

  # A whole step with scope="local" and the Jacobian penalty, whose map (the decoder, closing
  # over the parameters) runs per shard.
  for variant in ("jacobian_decoder",):
    local_config = tiny_config(variant)
    local_config.regularizer.scope = "local"
    graphdef, state = train.create_train_state(local_config, (16, 16, 3))
    step = train.make_train_step(graphdef, local_config, mesh)
    state, metrics = step(sharding.replicate(state, mesh), dataset)
    out[f"local_step_{variant}"] = {
      "finite": bool(metrics["finite"]),
      "regularizer": float(metrics["regularizer"]),
    }

  # Evaluation: each device encodes its rows (10 rows: padded to 12), every process gets all.
  graphdef, state = train.create_train_state(config, (16, 16, 3))
  images = np.asarray(dataset.images_from_factors(dataset.sample_factors(jax.random.key(3), 10)))

  def encode(modules, x):
    return nnx.merge(graphdef, modules)[0].encode(x)[0]

  codes_all = sharding.sharded_map(encode, mesh)(sharding.replicate(state.modules, mesh), images)
  codes_one = jax.jit(encode)(state.modules, images)
  out["eval_codes_shape"] = list(codes_all.shape)
  out["eval_codes_diff"] = float(np.max(np.abs(codes_all - np.asarray(codes_one))))
  out["eval_encode_sharded"] = (
    "all-gather"
    in jax.jit(encode, out_shardings=sharding.replicated(mesh))
    .lower(sharding.replicate(state.modules, mesh), jax.device_put(images[:8], layout))
    .compile()
    .as_text()
  )

  # A batch that does not split over the devices.
  bad = tiny_config()
  bad.train.batch_size = 18
  try:
    train.train_and_evaluate(bad, os.path.join(os.environ["SHARDING_TEST_TMP"], "bad"))
    out["indivisible_error"] = None
  except ValueError as e:
    out["indivisible_error"] = str(e)
  return out


@pytest.fixture(scope="module")
def multi_device(tmp_path_factory):
  env = {
    **os.environ,
    "JAX_NUM_CPU_DEVICES": str(_NUM_DEVICES),
    "JAX_PLATFORMS": "cpu",
    "SHARDING_TEST_TMP": str(tmp_path_factory.mktemp("sharding")),
  }
  proc = subprocess.run(
    [sys.executable, os.path.abspath(__file__)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_global_scope_step_equals_the_single_device_step(multi_device):
  assert multi_device["global_step"] == 3
  assert multi_device["all_reduce_in_step"]
  assert multi_device["global_param_diff"] < 1e-5, multi_device
  assert max(multi_device["global_metric_diff"].values()) < 1e-4, multi_device


def test_state_stays_replicated_on_every_device(multi_device):
  assert multi_device["replicated"]


def test_host_batches_feed_local_rows_and_match_one_device(multi_device):
  assert multi_device["host_param_diff"] < 1e-5, multi_device


def test_local_scope_is_the_mean_of_per_device_gmgs(multi_device):
  np.testing.assert_allclose(
    multi_device["local_value"], multi_device["local_by_hand"], rtol=1e-4, atol=1e-6
  )
  # A different objective from the global one: four 8-point problems, not one 32-point one.
  assert abs(multi_device["local_value"] - multi_device["local_global_value"]) > 1e-2 * abs(
    multi_device["local_global_value"]
  ), multi_device
  assert multi_device["local_grad_diff"] <= 1e-5 * max(multi_device["local_grad_scale"], 1.0)
  for variant in ("jacobian_decoder",):
    result = multi_device[f"local_step_{variant}"]
    assert result["finite"] and np.isfinite(result["regularizer"]), result


def test_evaluation_encodes_on_every_device_and_gathers_all_codes(multi_device):
  assert multi_device["eval_codes_shape"] == [10, 4]
  assert multi_device["eval_codes_diff"] < 1e-5
  assert multi_device["eval_encode_sharded"]


def test_batch_size_not_divisible_by_devices_names_both_numbers(multi_device):
  message = multi_device["indivisible_error"]
  assert message is not None and "batch_size=18" in message and "device count 4" in message


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _main(workdir, num_steps, env, checkpoint_every=3):
  cmd = tiny_main_command(
    workdir,
    "--config.eval.every_steps=8",
    "--config.train.log_every=5",
    f"--config.train.checkpoint_every={checkpoint_every}",
    f"--config.train.num_steps={num_steps}",
    variant="gmg_cos_decoder",
  )
  return subprocess.Popen(
    cmd,
    cwd=ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _finish(procs):
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for p, output in zip(procs, outputs, strict=True):
    assert p.returncode == 0, output[-4000:]


def _final_params(workdir):
  from gmg_jax import checkpointing, train

  with open(os.path.join(workdir, "config.json")) as f:
    config = type(tiny_config())(json.load(f))
  _, state = train.create_train_state(config, (16, 16, 3))
  manager = checkpointing.make_manager(str(workdir), config.train)
  return checkpointing.restore(manager, state)


def _two_process_env(port, process_id):
  return {
    "JAX_NUM_CPU_DEVICES": "1",
    "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
    "JAX_NUM_PROCESSES": "2",
    "JAX_PROCESS_ID": str(process_id),
  }


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_saved_step(tmp_path):
  port = _free_port()
  never = 10**6
  procs = [
    _main(tmp_path, never, _two_process_env(port, i), checkpoint_every=never) for i in (0, 1)
  ]
  first = tmp_path / "checkpoints" / "1"  # Orbax saves the first step: training has started.
  deadline = time.time() + 240
  while time.time() < deadline and not first.exists():
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # Process 0 is not signalled: it must learn of it.
  _finish(procs)
  steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert 1 < max(steps) < never, steps
  state, meta = _final_params(tmp_path)
  assert int(state.step) == max(steps) == meta["step"]


@pytest.mark.slow
def test_two_processes_train_checkpoint_resume_and_match_one_process(tmp_path):
  single = tmp_path / "single"
  _finish([_main(single, 8, {"JAX_NUM_CPU_DEVICES": "1"})])

  multi = tmp_path / "multi"
  for num_steps in (5, 8):  # Stops after the checkpoint at 3 (and the final one at 5), resumes.
    port = _free_port()
    _finish([_main(multi, num_steps, _two_process_env(port, i)) for i in range(2)])
    steps = sorted(int(p.name) for p in (multi / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == num_steps, steps

  single_state, _ = _final_params(single)
  multi_state, meta = _final_params(multi)
  assert int(multi_state.step) == 8 and meta["data_position"] == 8
  assert _max_abs_diff(single_state.modules, multi_state.modules) < 1e-5
  # Both processes encoded half of the evaluation points each and scored all of them.
  scores = [json.loads((run / "metrics.json").read_text()) for run in (single, multi)]
  assert scores[0]["step"] == scores[1]["step"] == 8
  for metric in ("mig", "modularity_explicitness"):
    assert scores[0][metric].keys() == scores[1][metric].keys()
    for name, value in scores[0][metric].items():
      assert abs(value - scores[1][metric][name]) < 1e-3, (metric, name)
  with open(multi / "metrics.jsonl") as f:  # Process 0 alone wrote the log, each step once.
    logged = [json.loads(line)["step"] for line in f]
  assert logged == sorted(set(logged))


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  print(json.dumps(_multi_device_checks()))
