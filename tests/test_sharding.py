"""Tests for data parallelism: sharded steps on 4 fake CPU devices and a real 2-process run.

The multi-device checks run in one subprocess started with JAX_NUM_CPU_DEVICES=4 (the device
count is fixed when JAX starts, and the rest of the suite runs on one device). Each check is its
own function computing only what its test asserts; the process reports each check's result, or
its traceback, as JSON, so a failing test names the check that failed and why.

The two-process run is done once (a module fixture): started, stopped by SIGTERM to one process,
resumed, then compared with one process trained to the same step; each test asserts on one part.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest
from conftest import ROOT, tiny_config, tiny_main_command

from gmg_jax import cli

_NUM_DEVICES = 4


def _max_abs_diff(tree_a, tree_b) -> float:
  import jax

  return max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b), strict=True)
  )


def _steps_side_by_side(config, batches, mesh, host_batches=False):
  """Runs the same steps on one device and data parallel; returns both states and metrics."""
  from gmg_jax import sharding, train

  graphdef, state_one = train.create_train_state(config, (16, 16, 3))
  _, state_all = train.create_train_state(config, (16, 16, 3))
  state_all = sharding.replicate(state_all, mesh)
  step_one = train.make_train_step(graphdef, config, host_batches=host_batches)
  step_all = train.make_train_step(graphdef, config, mesh, host_batches=host_batches)
  for one, everywhere in batches:
    state_one, metrics_one = step_one(state_one, one)
    state_all, metrics_all = step_all(state_all, everywhere)
  return state_one, metrics_one, state_all, metrics_all, step_all


def _global_scope_step() -> dict:
  """Three steps with scope="global" (the batch drawn inside the step) on one and all devices."""
  import jax

  from gmg_jax import data, sharding

  mesh = sharding.make_mesh()
  config = tiny_config("gmg_cos_decoder")
  config.train.batch_size = 32
  dataset = data.get_dataset(config.data)
  state_one, metrics_one, state_all, metrics_all, step_all = _steps_side_by_side(
    config, [(dataset, dataset)] * 3, mesh
  )
  return {
    "step": int(state_all.step),
    "param_diff": _max_abs_diff(state_one.modules, state_all.modules),
    "metric_diff": {
      k: abs(float(metrics_one[k]) - float(metrics_all[k]))
      for k in ("loss", "regularizer", "grad_norm")
    },
    # The gradient is reduced across devices only if the batch really was split over them.
    "all_reduce_in_step": "all-reduce" in step_all.lower(state_all, dataset).compile().as_text(),
    "replicated": all(
      leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == _NUM_DEVICES
      for leaf in jax.tree.leaves(state_all)
    ),
  }


def _host_batches() -> dict:
  """Three steps on batches drawn on the host, each device fed its rows, against one device."""
  from gmg_jax import data, sharding, train

  mesh = sharding.make_mesh()
  layout = sharding.batch_sharding(mesh)
  config = tiny_config()
  config.train.batch_size = 32
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
  run_rng = np.asarray(train.create_train_state(config, (16, 16, 3))[1].rng)
  batches = [train.host_batch(host_set, run_rng, s, 32) for s in range(3)]
  state_one, _, state_all, _, _ = _steps_side_by_side(
    config, [(b, sharding.host_to_global(b, layout)) for b in batches], mesh, host_batches=True
  )
  return {"param_diff": _max_abs_diff(state_one.modules, state_all.modules)}


def _local_scope_regularizer() -> dict:
  """scope="local": one GMG per device sub-batch, against the mean of four computed by hand."""
  import jax
  import jax.numpy as jnp

  from gmg_jax import sharding
  from gmg_jax.losses import maps, regularizers

  mesh = sharding.make_mesh()
  layout = sharding.batch_sharding(mesh)
  gmg = regularizers.make_regularizer(tiny_config("gmg_cos_decoder").regularizer)
  local = maps.scoped_regularizer(gmg, "local", mesh)
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
  return {
    "value": float(value_local),
    "by_hand": float(value_hand),
    "global_value": float(gmg(None, x, y, key)[0]),
    "grad_diff": float(jnp.max(jnp.abs(grad_local - grad_hand))),
    "grad_scale": float(jnp.max(jnp.abs(grad_hand))),
  }


def _local_scope_jacobian_step() -> dict:
  """A whole step with scope="local" and the Jacobian penalty, whose map (the decoder, closing
  over the parameters) runs per shard: its logged value against the mean over the four device
  blocks of the penalty computed by hand, each with its own key, as the step draws them."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from gmg_jax import data, sharding, train, train_step
  from gmg_jax.losses import objectives, regularizers
  from gmg_jax.models import to_float

  mesh = sharding.make_mesh()
  config = tiny_config("jacobian_decoder")
  config.regularizer.scope = "local"
  graphdef, state = train.create_train_state(config, (16, 16, 3))
  dataset = data.get_dataset(config.data)
  data_key, loss_key, _ = train_step.step_keys(state.rng, 0)
  images = dataset.sample_batch(data_key, config.train.batch_size)[0]
  vae = nnx.merge(graphdef, state.modules)[0]
  keys = objectives.split_keys(loss_key)
  mu, logvar = vae.encode(to_float(images))
  z = objectives.reparameterize(mu, logvar, keys.sample)
  jacobian = regularizers.make_regularizer(config.regularizer)
  decode = lambda codes: jax.nn.sigmoid(vae.decode(codes))  # noqa: E731 (target "mean")
  block = z.shape[0] // 4
  by_hand = jnp.mean(
    jnp.stack(
      [
        jacobian(
          decode, z[i * block : (i + 1) * block], None, jax.random.fold_in(keys.regularizer, i)
        )[0]
        for i in range(4)
      ]
    )
  )
  whole = jacobian(decode, z, None, keys.regularizer)[0]
  step = train.make_train_step(graphdef, config, mesh)
  state, metrics = step(sharding.replicate(state, mesh), dataset)
  return {
    "finite": bool(metrics["finite"]),
    "regularizer": float(metrics["regularizer"]),
    "by_hand": float(by_hand),
    "whole_batch": float(whole),
  }


def _sharded_evaluation() -> dict:
  """Each device encodes its rows (10 rows: padded to 12); every process gets all the codes."""
  import jax
  from flax import nnx

  from gmg_jax import data, sharding, train

  mesh = sharding.make_mesh()
  layout = sharding.batch_sharding(mesh)
  config = tiny_config("gmg_cos_decoder")
  dataset = data.get_dataset(config.data)
  graphdef, state = train.create_train_state(config, (16, 16, 3))
  images = np.asarray(dataset.images_from_factors(dataset.sample_factors(jax.random.key(3), 10)))

  def encode(modules, x):
    return nnx.merge(graphdef, modules)[0].encode(x)[0]

  codes_all = sharding.sharded_map(encode, mesh)(sharding.replicate(state.modules, mesh), images)
  codes_one = jax.jit(encode)(state.modules, images)
  compiled = (
    jax.jit(encode, out_shardings=sharding.replicated(mesh))
    .lower(sharding.replicate(state.modules, mesh), jax.device_put(images[:8], layout))
    .compile()
  )
  return {
    "codes_shape": list(codes_all.shape),
    "codes_diff": float(np.max(np.abs(codes_all - np.asarray(codes_one)))),
    "gathered": "all-gather" in compiled.as_text(),
  }


def _replica_steps() -> dict:
  """A K-run (2 seeds x 2 weights) data parallel on 4 devices, with either GMG scope, against
  the single runs of two of its replicas on the same mesh: each replica's batch is split over
  the devices as in its single run."""
  import jax
  import jax.numpy as jnp

  from gmg_jax import data, replicas, sharding, train

  mesh = sharding.make_mesh()
  out = {}
  for scope in ("global", "local"):
    config = tiny_config("gmg_cos_decoder")
    config.train.batch_size = 32
    config.regularizer.scope = scope
    config.num_seeds, config.vary = 2, "regularizer.weight=1,3"
    runs = replicas.expand(config)
    dataset = sharding.replicate(data.get_dataset(config.data), mesh)
    graphdef, state = train.create_train_state(config, (16, 16, 3), runs)
    state = sharding.replicate(state, mesh)
    step = train.make_train_step(graphdef, config, mesh, replicas=runs)
    active = sharding.replicate(jnp.ones(len(runs), bool), mesh)
    for _ in range(3):
      state, metrics = step(state, dataset, active)
    diffs = []
    for index in (0, 3):
      single = runs[index].config
      _, own = train.create_train_state(single, (16, 16, 3))
      own = sharding.replicate(own, mesh)
      own_step = train.make_train_step(graphdef, single, mesh)
      for _ in range(3):
        own, _ = own_step(own, dataset)
      diffs.append(_max_abs_diff(own.modules, jax.tree.map(lambda a, i=index: a[i], state.modules)))
    out[scope] = {"param_diff": max(diffs), "finite": bool(np.all(np.asarray(metrics["finite"])))}
  return out


_CHECKS = {
  f.__name__.lstrip("_"): f
  for f in (
    _replica_steps,
    _global_scope_step,
    _host_batches,
    _local_scope_regularizer,
    _local_scope_jacobian_step,
    _sharded_evaluation,
  )
}


def _run_checks() -> dict:
  """Runs every check in this process (4 CPU devices); a check that raises reports its traceback."""
  import jax

  assert jax.device_count() == _NUM_DEVICES, jax.devices()
  out = {}
  for name, check in _CHECKS.items():
    try:
      out[name] = {"result": check(), "error": None}
    except Exception:  # noqa: BLE001 (reported to the test of this check)
      out[name] = {"result": None, "error": traceback.format_exc()}
  return out


@pytest.fixture(scope="module")
def four_devices():
  """The checks' results from one process with 4 CPU devices (one JAX start for all of them)."""
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(_NUM_DEVICES), "JAX_PLATFORMS": "cpu"}
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


def _result(four_devices, name):
  """The result of check `name`, or a failure carrying its traceback from the 4-device process."""
  report = four_devices[name]
  if report["error"] is not None:
    pytest.fail(f"{name} raised in the 4-device process:\n{report['error']}", pytrace=False)
  return report["result"]


def test_global_scope_step_equals_the_single_device_step(four_devices):
  result = _result(four_devices, "global_scope_step")
  assert result["step"] == 3
  assert result["all_reduce_in_step"], "the step does not reduce the gradient across devices"
  assert result["param_diff"] < 1e-5, result
  assert max(result["metric_diff"].values()) < 1e-4, result


def test_state_stays_replicated_on_every_device(four_devices):
  assert _result(four_devices, "global_scope_step")["replicated"]


def test_replicas_compose_with_data_parallelism(four_devices):
  result = _result(four_devices, "replica_steps")
  for scope in ("global", "local"):
    assert result[scope]["finite"] and result[scope]["param_diff"] < 1e-5, result


def test_host_batches_feed_local_rows_and_match_one_device(four_devices):
  result = _result(four_devices, "host_batches")
  assert result["param_diff"] < 1e-5, result


def test_local_scope_is_the_mean_of_per_device_gmgs(four_devices):
  result = _result(four_devices, "local_scope_regularizer")
  np.testing.assert_allclose(result["value"], result["by_hand"], rtol=1e-4, atol=1e-6)
  # A different objective from the global one: four 8-point problems, not one 32-point one.
  assert abs(result["value"] - result["global_value"]) > 1e-2 * abs(result["global_value"]), result
  assert result["grad_diff"] <= 1e-5 * max(result["grad_scale"], 1.0), result


def test_local_scope_jacobian_step_runs_per_shard(four_devices):
  result = _result(four_devices, "local_scope_jacobian_step")
  assert result["finite"]
  # The step's value is the mean of the four blocks' penalties (float32, sharded vs by hand) ...
  assert result["regularizer"] == pytest.approx(result["by_hand"], rel=1e-4)
  # ... and not the whole batch's (other directions, other batches): the scope is local.
  assert abs(result["regularizer"] - result["whole_batch"]) > 1e-3 * abs(result["whole_batch"])


def test_evaluation_encodes_on_every_device_and_gathers_all_codes(four_devices):
  result = _result(four_devices, "sharded_evaluation")
  assert result["codes_shape"] == [10, 4]
  assert result["codes_diff"] < 1e-5, result
  assert result["gathered"], "the encoder's output is not gathered across devices"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _main(workdir, num_steps, env, checkpoint_every=3, eval_every=0):
  cmd = tiny_main_command(
    workdir,
    f"--config.eval.every_steps={eval_every}",
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


def _finish(procs) -> dict:
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  return {"returncodes": [p.returncode for p in procs], "output": "\n".join(outputs)[-6000:]}


def _checkpoint_steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


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


_NEVER = 10**6
_RESUMED_STEPS = 5  # steps the resumed two-process run adds after the SIGTERM


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  """One two-process run, stopped by SIGTERM and resumed; then one process to the same step.

  Returns the workdirs and each leg's exit statuses and output; the tests assert on them. A leg
  that failed leaves the later ones out (None).
  """
  root = tmp_path_factory.mktemp("two_processes")
  runs = {"multi": root / "multi", "single": root / "single"}
  port = _free_port()
  procs = [
    _main(runs["multi"], _NEVER, _two_process_env(port, i), checkpoint_every=_NEVER) for i in (0, 1)
  ]
  # Training has started once process 0 logged a step (the trainer saves no checkpoint before
  # its first checkpoint_every): the signal then lands a few steps in, so the comparison with
  # one process below covers a few steps, not however many a slow start would allow.
  log = runs["multi"] / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and not (log.exists() and log.stat().st_size > 0):
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # Process 0 is not signalled: it must learn of it.
  runs["stopped"] = _finish(procs)
  runs["resumed"] = runs["single_run"] = runs["final_step"] = None
  if runs["stopped"]["returncodes"] != [cli.EXIT_PREEMPTED] * 2:
    return runs
  runs["stop_steps"] = _checkpoint_steps(runs["multi"])
  state, meta = _final_params(runs["multi"])
  runs["stop_state"] = {"step": int(state.step), "meta_step": meta["step"]}
  final = runs["final_step"] = runs["stop_steps"][-1] + _RESUMED_STEPS
  port = _free_port()
  runs["resumed"] = _finish(
    [_main(runs["multi"], final, _two_process_env(port, i), eval_every=final) for i in (0, 1)]
  )
  runs["single_run"] = _finish(
    [_main(runs["single"], final, {"JAX_NUM_CPU_DEVICES": "1"}, eval_every=final)]
  )
  return runs


def _leg(two_processes, leg, status=0):
  """The report of `leg`, whose processes must all have exited with `status`."""
  report = two_processes[leg]
  if report is None:
    pytest.fail(f"the two-process run stopped before its {leg} leg (an earlier leg failed)")
  assert report["returncodes"] == [status] * len(report["returncodes"]), report["output"]
  return report


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_saved_step(two_processes):
  _leg(two_processes, "stopped", cli.EXIT_PREEMPTED)  # both say: preempted, state saved
  steps = two_processes["stop_steps"]
  assert 1 < steps[-1] < _NEVER, steps  # no periodic checkpoint: the last is the SIGTERM's
  # The state saved at the stop is the step both processes agreed on.
  assert two_processes["stop_state"] == {"step": steps[-1], "meta_step": steps[-1]}


@pytest.mark.slow
def test_two_processes_resume_from_the_sigterm_checkpoint(two_processes):
  _leg(two_processes, "resumed")
  final = two_processes["final_step"]
  assert _checkpoint_steps(two_processes["multi"])[-1] == final
  state, meta = _final_params(two_processes["multi"])
  assert int(state.step) == final and meta["data_position"] == final


@pytest.mark.slow
def test_two_processes_train_like_one_process(two_processes):
  _leg(two_processes, "resumed")
  _leg(two_processes, "single_run")
  single_state, _ = _final_params(two_processes["single"])
  multi_state, _ = _final_params(two_processes["multi"])
  assert _max_abs_diff(single_state.modules, multi_state.modules) < 1e-5


@pytest.mark.slow
def test_two_processes_evaluate_like_one_process(two_processes):
  # Both processes encoded half of the evaluation points each and scored all of them.
  _leg(two_processes, "resumed")
  _leg(two_processes, "single_run")
  single, multi = (
    json.loads((two_processes[r] / "metrics.json").read_text()) for r in ("single", "multi")
  )
  assert single["step"] == multi["step"] == two_processes["final_step"]
  for metric in ("mig", "modularity_explicitness"):
    assert single[metric].keys() == multi[metric].keys()
    for name, value in single[metric].items():
      assert abs(value - multi[metric][name]) < 1e-3, (metric, name)


@pytest.mark.slow
def test_process_0_alone_logs_each_step_once_across_the_resume(two_processes):
  _leg(two_processes, "resumed")
  with open(two_processes["multi"] / "metrics.jsonl") as f:
    logged = [json.loads(line)["step"] for line in f]
  assert logged == sorted(set(logged)) and logged[-1] == two_processes["final_step"]


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  print(json.dumps(_run_checks()))
