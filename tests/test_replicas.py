"""K runs in one program (`config.num_seeds`, `config.vary`): each replica is its single run."""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from flax import nnx

from gmg_jax import checkpointing, data, evaluation, replicas, saved_runs, train
from gmg_jax.config import ConfigError
from gmg_jax.losses import loss as loss_lib
from gmg_jax.losses import regularizers

# Measured: a replica's loss curve differs from its single run's by <= 2e-7 relative over 50
# steps (float32 round-off of a vmapped vs an unbatched program).
CURVE_RTOL = 1e-5


def _curve(workdir, key="loss"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return np.array([json.loads(line)[key] for line in f])


def _params(state):
  return jax.tree.leaves(state.modules)


@pytest.fixture(scope="module")
def krun(tmp_path_factory):
  """8 replicas (2 learning rates x 2 GMG epsilons x 2 seeds) of a GMG decoder run, 50 steps,
  evaluated at the end."""
  from conftest import tiny_config

  config = tiny_config("gmg_cos_decoder")
  config.train.num_steps = 50
  config.train.log_every = 1
  config.eval.every_steps = 50
  config.eval.metrics = ("mig",)
  config.eval.num_train = 200
  config.eval.num_test = 100
  config.num_seeds = 2
  config.vary = "optim.learning_rate=1e-3,3e-3; regularizer.gmg.epsilon_0=0.1,0.3"
  workdir = str(tmp_path_factory.mktemp("krun"))
  state = train.train_and_evaluate(config, workdir)
  return config, workdir, state


def test_replicas_are_the_product_of_values_and_seeds():
  from conftest import tiny_config

  config = tiny_config()
  config.seed, config.num_seeds = 5, 3
  config.vary = "regularizer.weight=1,10;objective.beta=2"
  runs = replicas.expand(config)
  assert [r.name for r in runs] == [
    f"weight={w},beta=2,seed={s}" for w in (1, 10) for s in (5, 6, 7)
  ]
  assert [r.index for r in runs] == list(range(6))
  for r in runs:
    assert (r.config.seed, r.config.num_seeds, r.config.vary) == (r.seed, 1, "")
    assert r.config.regularizer.weight == r.values["regularizer.weight"]
    assert r.config.objective.beta == 2.0
  np.testing.assert_array_equal(
    replicas.stacked_values(runs)["regularizer.weight"], [1] * 3 + [10] * 3
  )
  assert not replicas.is_multi(tiny_config())


@pytest.mark.parametrize(
  "vary, num_seeds, message",
  [
    ("regularizer.wieght=1,2", 1, r"'regularizer.wieght' cannot vary .*regularizer.weight"),
    ("model.latent_dim=4,8", 1, r"'model.latent_dim' cannot vary.*separate runs"),
    ("seed=1,2", 1, r"num_seeds"),
    ("objective.beta=1,x", 1, r"must be numbers"),
    ("objective.beta=1,1", 1, r"listed twice"),
    ("objective.beta", 1, r"is not FIELD=V1,V2"),
    ("optim.learning_rate=1e-3,-1", 1, r"replica learning_rate=-1,seed=0: optim.learning_rate"),
    ("", 0, r"num_seeds=0: must be an integer >= 1"),
  ],
)
def test_a_bad_replica_spec_fails_before_anything_is_written(
  tiny, tmp_path, vary, num_seeds, message
):
  config = tiny()
  config.vary, config.num_seeds = vary, num_seeds
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


@pytest.mark.slow
def test_each_replica_is_its_single_run(krun, tmp_path):
  config, workdir, state = krun
  runs = replicas.expand(config)
  assert len(runs) == 8 and state.step.shape == (8,)
  index = json.load(open(os.path.join(workdir, "replicas.json")))
  assert [r["name"] for r in index["replicas"]] == [r.name for r in runs]
  assert {r["status"] for r in index["replicas"]} == {"finished"}
  # The first and the last replica differ in every varied value and in the seed.
  for replica in (runs[0], runs[-1]):
    own = os.path.join(workdir, replica.name)
    with open(os.path.join(own, "config.json")) as f:
      saved = json.load(f)
    assert saved["seed"] == replica.seed and saved["num_seeds"] == 1 and saved["vary"] == ""
    assert saved["optim"]["learning_rate"] == replica.values["optim.learning_rate"]
    single = str(tmp_path / replica.name)
    train.train_and_evaluate(replica.config, single)  # The single run it stands for.
    k_curve, s_curve = _curve(own), _curve(single)
    assert len(k_curve) == len(s_curve) == 50
    np.testing.assert_allclose(k_curve, s_curve, rtol=CURVE_RTOL)
    np.testing.assert_allclose(
      _curve(own, "grad/regularizer_share"), _curve(single, "grad/regularizer_share"), rtol=1e-4
    )
    # The gap is DST - GW_eps, a difference of two numbers of the distortion's size: its
    # round-off is relative to the distortion, not to the (much smaller) gap.
    scale = np.max(np.abs(_curve(single, "regularizer/gmg_distortion")))
    np.testing.assert_allclose(
      _curve(own, "regularizer/gmg_entropic"),
      _curve(single, "regularizer/gmg_entropic"),
      atol=CURVE_RTOL * scale,
    )
    with (
      open(os.path.join(own, "metrics.json")) as f,
      open(os.path.join(single, "metrics.json")) as g,
    ):
      k_mig, s_mig = json.load(f)["mig"], json.load(g)["mig"]
    np.testing.assert_allclose(k_mig["discrete_mig"], s_mig["discrete_mig"], atol=1e-5)
  # The replicas really differ: other seeds and values give other curves.
  assert not np.allclose(
    _curve(os.path.join(workdir, runs[0].name)), _curve(os.path.join(workdir, runs[1].name))
  )


# The variable fields grouped by the objective (and regularizer) whose loss reads them.
_FIELDS_BY_VARIANT = {
  "beta_vae,gmg_cos_decoder": ("objective.beta", "regularizer.weight", "regularizer.gmg.epsilon_0"),
  "factor_vae": ("objective.gamma",),
  "annealed_vae": ("objective.c_max", "objective.gamma_annealed"),
  "dip_vae": ("objective.lambda_od", "objective.lambda_d_factor"),
  "beta_tcvae": ("objective.tcvae_alpha", "objective.tcvae_beta", "objective.tcvae_gamma"),
}


def test_a_single_run_is_the_program_of_one_unstacked_replica(tiny, tmp_path):
  """One step function and one loop: a single run's program has one replica whose state keeps
  the single run's layout, and its step takes the same `active` mask (a scalar)."""
  config = tiny("gmg_cos_decoder")
  single = replicas.program(config)
  (replica,) = single.replicas
  assert not single.stacked and replica.config is config and replica.seed == config.seed
  assert single.workdir(str(tmp_path), replica) == str(tmp_path)
  tree = {"a": jnp.arange(3)}
  assert single.stack([tree]) is tree and single.view(tree, 0) is tree
  config.num_seeds = 2
  multi = replicas.program(config)
  assert multi.stacked and [r.name for r in multi.replicas] == ["seed=0", "seed=1"]
  assert multi.workdir(str(tmp_path), multi.replicas[1]) == str(tmp_path / "seed=1")
  np.testing.assert_array_equal(multi.stack([tree, tree])["a"], [[0, 1, 2], [0, 1, 2]])

  config.num_seeds = 1
  dataset = data.get_dataset(config.data)
  graphdef, state = train.create_train_state(config, dataset.image_shape, single)
  step = train.make_train_step(graphdef, config, replicas=single)
  copy = lambda s: jax.tree.map(jnp.array, s)  # noqa: E731 (the step donates its state)
  on, metrics_on = step(copy(state), dataset)  # active defaults to True
  on_again, _ = step(copy(state), dataset, jnp.asarray(True))
  off, metrics_off = step(copy(state), dataset, jnp.asarray(False))
  assert bool(metrics_on["finite"]) and not bool(metrics_off["finite"])
  for a, b in zip(jax.tree.leaves(on), jax.tree.leaves(on_again), strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(off.modules), jax.tree.leaves(state.modules), strict=True):
    np.testing.assert_array_equal(a, b)  # an inactive run is not updated
  assert int(off.step) == int(on.step) == 1
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(on.modules), jax.tree.leaves(state.modules), strict=True)
  )


def test_the_loss_groups_cover_every_variable_field():
  # The learning rate acts in the update: test_each_replica_is_its_single_run varies it.
  covered = {f for fields in _FIELDS_BY_VARIANT.values() for f in fields}
  assert covered | {"optim.learning_rate"} == set(replicas.variable_fields())


@pytest.mark.parametrize("variant", _FIELDS_BY_VARIANT)
def test_every_variable_field_is_traced_and_changes_nothing_else(tiny, variant):
  """The loss with the fields traced (as inside a K-run) equals the loss of the config holding
  those values, and each field on its own changes the traced loss."""
  fields = _FIELDS_BY_VARIANT[variant]
  config = tiny(variant)
  config.objective.tcvae_estimator = "decomposed"
  config.objective.dataset_size = 1000
  config.objective.iteration_threshold = 4
  dataset = data.get_dataset(config.data)
  graphdef, state = train.create_train_state(config, dataset.image_shape)
  images, _ = dataset.sample_batch(jax.random.key(1), config.train.batch_size)

  def loss(run_config, module_state):
    modules = nnx.merge(graphdef, module_state)
    regularizer_fn = regularizers.make_regularizer(run_config.regularizer)
    critic = modules[2] if len(modules) == 4 else None
    loss_fn = loss_lib.make_loss(run_config, regularizer_fn)
    (value, aux), _ = loss_fn(modules[0], images, jax.random.key(2), jnp.int32(3), critic)
    return {**aux, "loss": value}

  traced = jax.jit(lambda values, m: loss(replicas.with_values(config, values), m))
  values = {field: 0.5 + 0.25 * i for i, field in enumerate(fields)}
  concrete = config.copy_and_resolve_references()
  for field, value in values.items():
    replicas._set(concrete, field, value)
  expected = jax.jit(functools.partial(loss, concrete))(state.modules)
  as_arrays = {f: jnp.float32(v) for f, v in values.items()}
  got = traced(as_arrays, state.modules)
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, err_msg=name)
  for field in fields:  # Each field moves the loss or one of its terms.
    changed = traced({**as_arrays, field: jnp.float32(3.0)}, state.modules)
    assert any(
      not np.isclose(changed[name], expected[name], rtol=1e-5, atol=0) for name in expected
    ), field


def _poison_weight_2(monkeypatch, from_step):
  """The loss goes NaN from `from_step` on, only in replicas whose regularizer weight is 2."""
  original = loss_lib.vae_loss

  def poisoned(
    model, images, key, step, objective_config, regularizer_fn, regularizer_config, *a, **k
  ):
    loss, aux = original(
      model, images, key, step, objective_config, regularizer_fn, regularizer_config, *a, **k
    )
    bad = (step >= from_step) & (regularizer_config.weight == 2.0)
    return loss * jnp.where(bad, jnp.nan, 1.0), aux

  monkeypatch.setattr(loss_lib, "vae_loss", poisoned)


@pytest.mark.slow
def test_a_non_finite_replica_is_stopped_the_others_finish_and_resume_is_exact(
  tiny, tmp_path, monkeypatch
):
  _poison_weight_2(monkeypatch, from_step=13)
  config = tiny()
  config.train.num_steps, config.train.checkpoint_every, config.train.log_every = 30, 10, 1
  config.vary = "regularizer.weight=1,2"
  names = [r.name for r in replicas.expand(config)]
  with pytest.raises(train.ReplicasDiverged, match=r"weight=2,seed=0: non-finite at step 14") as e:
    train.train_and_evaluate(config, str(tmp_path / "whole"))
  assert list(e.value.failures) == [names[1]]
  index = json.load(open(tmp_path / "whole" / "replicas.json"))["replicas"]
  assert [(r["status"], r["failed_at"]) for r in index] == [("finished", None), ("stopped", 14)]
  assert len(_curve(tmp_path / "whole" / names[0])) == 30
  assert np.all(np.isfinite(_curve(tmp_path / "whole" / names[0])))
  assert len(_curve(tmp_path / "whole" / names[1])) == 13  # Steps 1..13 were finite.

  manager = checkpointing.make_manager(str(tmp_path / "whole"), config.train)
  abstract = train.create_train_state(config, (16, 16, 3), replicas.expand(config))[1]
  at_20, meta = checkpointing.restore(manager, abstract, 20)
  at_30, _ = checkpointing.restore(manager, abstract, 30)
  assert meta["failed"] == {names[1]: 14}
  for a, b in zip(_params(at_20), _params(at_30), strict=True):
    a, b = np.asarray(a), np.asarray(b)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    np.testing.assert_array_equal(a[1], b[1])  # The stopped replica's state stays as it was.
  assert any(
    not np.array_equal(np.asarray(a)[0], np.asarray(b)[0])
    for a, b in zip(_params(at_20), _params(at_30), strict=True)
  )

  # Interrupted at 20 and resumed: the stopped replica stays stopped, and the state is exact.
  config.train.num_steps = 20
  with pytest.raises(train.ReplicasDiverged):
    train.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.train.num_steps = 30
  with pytest.raises(train.ReplicasDiverged, match="before this resumption"):
    train.train_and_evaluate(config, str(tmp_path / "resumed"))
  resumed, _ = checkpointing.restore(
    checkpointing.make_manager(str(tmp_path / "resumed"), config.train), abstract, 30
  )
  for a, b in zip(_params(at_30), _params(resumed), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(
    _curve(tmp_path / "resumed" / names[0]), _curve(tmp_path / "whole" / names[0])
  )


def test_a_program_whose_replicas_all_diverge_says_so_and_indexes_them(tiny, tmp_path, monkeypatch):
  """Every replica non-finite: the program stops inside its loop with `ReplicasDiverged` naming
  all of them (not an error about the consumed state), and replicas.json lists them stopped."""
  _poison_weight_2(monkeypatch, from_step=5)
  config = tiny()
  config.train.num_steps, config.train.checkpoint_every = 20, 4
  config.num_seeds, config.vary = 2, "regularizer.weight=2"
  with pytest.raises(train.ReplicasDiverged, match="non-finite at step 6") as e:
    train.train_and_evaluate(config, str(tmp_path))
  assert sorted(e.value.failures) == ["weight=2,seed=0", "weight=2,seed=1"]
  with open(tmp_path / "replicas.json") as f:
    index = json.load(f)
  assert index["step"] == 4  # The last saved step, where a rerun would resume.
  assert [(r["status"], r["failed_at"]) for r in index["replicas"]] == [("stopped", 6)] * 2


def test_host_batches_give_each_replica_its_own_stream(tiny, tmp_path):
  """A dataset kept on the host: each replica draws its own batches, as its single run does."""
  rng = np.random.default_rng(0)
  factors = np.stack(np.meshgrid(np.arange(4), np.arange(5), indexing="ij"), -1).reshape(-1, 2)
  images = rng.integers(0, 256, (len(factors), 16, 16, 3), dtype=np.uint8)
  path = tmp_path / "set.npz"
  np.savez(path, images=images, factors=factors)
  config = tiny()
  config.data.name, config.data.path, config.data.on_device = "npz", str(path), "host"
  config.train.num_steps, config.train.log_every = 10, 1
  config.num_seeds, config.seed = 2, 3
  train.train_and_evaluate(config, str(tmp_path / "k"))
  config.num_seeds, config.seed = 1, 4
  train.train_and_evaluate(config, str(tmp_path / "single"))
  np.testing.assert_allclose(
    _curve(tmp_path / "k" / "seed=4"), _curve(tmp_path / "single"), rtol=CURVE_RTOL
  )
  assert not np.allclose(_curve(tmp_path / "k" / "seed=3"), _curve(tmp_path / "single"))


@pytest.mark.slow
def test_a_replica_is_scored_from_its_programs_checkpoint(krun):
  config, workdir, state = krun
  replica = replicas.expand(config)[5]
  own_config, _, restored, _ = saved_runs.load_run(os.path.join(workdir, replica.name))
  assert own_config.seed == replica.seed and own_config.num_seeds == 1
  assert int(restored.step) == 50
  for a, b in zip(_params(restored), _params(replicas.take(state, 5)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _scores(workdir):
  with open(os.path.join(workdir, "metrics.json")) as f:
    return {k: v for k, v in json.load(f).items() if k not in ("sources", "step")}


@pytest.mark.slow
def test_replicas_encoded_together_score_as_each_alone(krun, tmp_path, monkeypatch):
  """`evaluate_runs` of a K-run (one vmapped encoder over the replicas) writes what scoring each
  replica on its own writes; a small call size makes it take several batches, the last short."""
  config, _, state = krun
  chosen = [replicas.expand(config)[i] for i in (0, 3, 6)]  # Other seeds and values.
  dataset = data.get_dataset(config.data)
  graphdef = train.create_train_state(config, dataset.image_shape, replicas.expand(config))[0]
  for r in chosen:
    r.config.eval.metrics = ("mig", "sap", "modularity_explicitness")
  monkeypatch.setattr(evaluation, "_REPLICA_ENCODE_IMAGES", 3 * 64)  # 200 points: 64+64+64+8.
  due = [(r.index, r.config, str(tmp_path / "together" / r.name)) for r in chosen]
  records = evaluation.evaluate_runs(replicas.program(config), due, graphdef, state, dataset)
  for r, record in zip(chosen, records, strict=True):
    alone = str(tmp_path / "alone" / r.name)
    expected = evaluation.evaluate_and_write(
      r.config, alone, graphdef, replicas.take(state, r.index), dataset
    )
    assert record["step"] == expected["step"] == 50
    for name in r.config.eval.metrics:
      for key, value in expected[name].items():
        np.testing.assert_allclose(record[name][key], value, atol=1e-5, err_msg=f"{name}/{key}")
    assert _scores(tmp_path / "together" / r.name) == {
      k: v for k, v in json.loads(json.dumps(record)).items() if k != "step"
    }
  assert records[0]["mig"] != records[1]["mig"]  # Each replica scored its own encoder.


@pytest.mark.slow
def test_the_cli_scores_every_replica_of_a_program_that_had_not_stopped(krun, tmp_path):
  config, workdir, _ = krun
  program = str(tmp_path / "program")
  shutil.copytree(workdir, program)
  names = [r.name for r in replicas.expand(config)]
  with open(os.path.join(program, "replicas.json")) as f:
    index = json.load(f)
  index["replicas"][2].update(status="stopped", failed_at=20)  # As if it went non-finite at 20.
  with open(os.path.join(program, "replicas.json"), "w") as f:
    json.dump(index, f)
  before = {name: _scores(os.path.join(program, name)) for name in names}
  result = subprocess.run(
    [sys.executable, "-m", "gmg_jax.evaluate", f"--workdir={program}", "--metrics=mig,sap"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  for name in names:
    with open(os.path.join(program, name, "metrics.json")) as f:
      written = json.load(f)
    if name == names[2]:
      assert "sap" not in written and _scores(os.path.join(program, name)) == before[name]
      continue
    assert written["sources"]["sap"]["by"] == "evaluate" and written["sources"]["sap"]["step"] == 50
    # The trainer's MIG at step 50 (all 8 encoded together), again from 7 encoded together.
    np.testing.assert_allclose(
      written["mig"]["discrete_mig"], before[name]["mig"]["discrete_mig"], atol=1e-5
    )
