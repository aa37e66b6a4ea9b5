"""Tests for gmg_jax.checkpointing: round trip, config comparison, shape check, config.json."""

import json
import os

import jax
import numpy as np
import pytest
from conftest import tiny_config

from gmg_jax import checkpointing, data, train
from gmg_jax.config import ConfigError, get_config

IMAGE_SHAPE = (16, 16, 3)


def _manager(workdir, config):
  os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
  return checkpointing.make_manager(str(workdir), config.train)


def test_save_then_restore_gives_the_state_bit_for_bit(tmp_path):
  config = tiny_config("gmg_cos_decoder")
  graphdef, state = train.create_train_state(config, IMAGE_SHAPE)
  step = train.make_train_step(graphdef, config)
  state, _ = step(state, data.get_dataset(config.data))  # optimizer moments no longer zero
  manager = _manager(tmp_path, config)
  checkpointing.save(manager, 7, state, {"step": 7, "data_position": 7})
  manager.wait_until_finished()

  fresh = train.create_train_state(tiny_config("gmg_cos_decoder"), IMAGE_SHAPE)[1]
  restored, meta = checkpointing.restore(_manager(tmp_path, config), fresh)
  assert meta == {"step": 7, "data_position": 7}
  saved_leaves = jax.tree_util.tree_leaves_with_path(state)
  restored_leaves = jax.tree.leaves(restored)
  assert len(saved_leaves) == len(restored_leaves)
  for (path, a), b in zip(saved_leaves, restored_leaves, strict=True):
    a = jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a
    b = jax.random.key_data(b) if jax.dtypes.issubdtype(b.dtype, jax.dtypes.prng_key) else b
    assert np.asarray(a).dtype == np.asarray(b).dtype, path
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
  assert int(restored.step) == 1


def test_config_differences_ignores_resumable_fields_and_names_the_others():
  saved = tiny_config().to_dict()
  current = tiny_config()
  current.train.num_steps = 1000  # resumable: a run may be extended
  current.train.log_every = 1
  current.eval.every_steps = 7
  assert checkpointing.config_differences(saved, current.to_dict()) == []
  current.objective.beta = saved["objective"]["beta"] + 1.0
  current.model.latent_dim = 5
  assert checkpointing.config_differences(saved, current.to_dict()) == [
    "model.latent_dim",
    "objective.beta",
  ]


def test_a_field_missing_from_the_saved_config_counts_only_off_its_default():
  # An old run lacks the field: it ran with the code's default, get_config()'s value.
  saved = tiny_config().to_dict()
  del saved["optim"]["learning_rate"]
  current = tiny_config()
  current.optim.learning_rate = get_config().optim.learning_rate
  assert checkpointing.config_differences(saved, current.to_dict()) == []
  current.optim.learning_rate = 2 * get_config().optim.learning_rate + 1e-3
  assert checkpointing.config_differences(saved, current.to_dict()) == ["optim.learning_rate"]


def test_shape_mismatches_names_the_arrays_of_a_changed_latent_size(tmp_path):
  config = tiny_config()
  state = train.create_train_state(config, IMAGE_SHAPE)[1]
  manager = _manager(tmp_path, config)
  checkpointing.save(manager, 1, state, {"step": 1})
  manager.wait_until_finished()
  assert checkpointing.shape_mismatches(manager, 1, state) == []

  wider = tiny_config()
  wider.model.latent_dim = 6
  other = train.create_train_state(wider, IMAGE_SHAPE)[1]
  mismatches = checkpointing.shape_mismatches(manager, 1, other)
  # The arrays touching the code (encoder heads, first decoder layer) in the parameters and in
  # both Adam moments; the hidden layers keep their shapes and are not named.
  by_code = {
    "decoder.layers.0.kernel.value": ((4, 32), (6, 32)),
    "encoder.logvar.bias.value": ((4,), (6,)),
    "encoder.logvar.kernel.value": ((32, 4), (32, 6)),
    "encoder.mean.bias.value": ((4,), (6,)),
    "encoder.mean.kernel.value": ((32, 4), (32, 6)),
  }
  expected = [
    f"{prefix}{name}: stored {stored}, this config {wanted}"
    for prefix in ("modules.0.", "modules.1.opt_state.0.mu.", "modules.1.opt_state.0.nu.")
    for name, (stored, wanted) in by_code.items()
  ]
  assert mismatches == expected


def test_check_config_refuses_a_different_config_and_write_config_writes_it_once(tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config()
  checkpointing.check_config(workdir, config)  # no run there yet: nothing to compare
  assert not os.path.exists(workdir)  # check_config only reads
  checkpointing.write_config(workdir, config)
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    assert json.load(f) == json.loads(json.dumps(config.to_dict()))
  checkpointing.check_config(workdir, config)  # the same config resumes

  changed = tiny_config()
  changed.objective.beta = config.objective.beta * 2
  changed.model.latent_dim = 5
  before = os.stat(path).st_mtime_ns, open(path).read()
  with pytest.raises(ConfigError) as error:
    checkpointing.check_config(workdir, changed)
  message = str(error.value)
  assert "model.latent_dim: 4 -> 5" in message
  assert f"objective.beta: {config.objective.beta!r} -> {changed.objective.beta!r}" in message
  assert "resume_with_changed_config=True" in message
  assert (os.stat(path).st_mtime_ns, open(path).read()) == before  # nothing written on refusal

  changed.train.resume_with_changed_config = True
  checkpointing.check_config(workdir, changed)  # forced: no error
  checkpointing.write_config(workdir, changed)  # and the new config replaces the old one
  with open(path) as f:
    assert json.load(f)["model"]["latent_dim"] == 5
