"""Tests of the metric writer's TensorBoard pictures and hyperparameters and of the W&B writer.

TensorBoard event files are read back with tensorboardX's own protos (TFRecord framing parsed
here), W&B runs in offline mode with `WANDB_DIR` under tmp_path, and its `.wandb` transaction
log is read back (LevelDB-log framing, `wandb_internal_pb2.Record` protos).
"""

from __future__ import annotations

import glob
import io
import json
import os
import sys
import time

import ml_collections
import numpy as np
import pytest
from PIL import Image

from gmg_jax import writers as writers_lib


def tfrecord_events(directory):
  """Every `tensorboardX.proto.event_pb2.Event` in the event files under `directory`."""
  from tensorboardX.proto import event_pb2

  events = []
  for path in sorted(
    glob.glob(os.path.join(directory, "**", "events.out.tfevents.*"), recursive=True)
  ):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):  # uint64 length, uint32 crc, data, uint32 crc
      length = int.from_bytes(data[pos : pos + 8], "little")
      event = event_pb2.Event()
      event.ParseFromString(data[pos + 12 : pos + 12 + length])
      events.append(event)
      pos += 12 + length + 4
  return events


def summary_values(events):
  return [(e.step, v) for e in events if e.HasField("summary") for v in e.summary.value]


def logging_config(config, **fields):
  with config.unlocked():
    if "logging" not in config:
      config.logging = ml_collections.ConfigDict(
        {"wandb_project": "", "wandb_entity": "", "wandb_mode": ""}
      )
    config.logging.update(fields)
  return config


def test_tensorboard_gets_images_hyperparameters_and_scalars(tiny, tmp_path):
  config = tiny("gmg_cos_decoder")
  image = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
  writer = writers_lib.MetricWriter(str(tmp_path), "eval", config=config)
  writer.write(7, {"mig/discrete_mig": 0.25})
  writer.write_images(7, {"pictures/traversal": image, "pictures/grey": image[..., :1]})
  writer.close()

  values = summary_values(tfrecord_events(tmp_path / "tensorboard" / "eval"))
  by_tag = {v.tag: (step, v) for step, v in values}
  step, traversal = by_tag["pictures/traversal"]
  assert step == 7 and (traversal.image.height, traversal.image.width) == (6, 9)
  decoded = np.asarray(Image.open(io.BytesIO(traversal.image.encoded_image_string)).convert("RGB"))
  np.testing.assert_array_equal(decoded, image)
  grey = by_tag["pictures/grey"][1].image.encoded_image_string
  decoded = np.asarray(Image.open(io.BytesIO(grey)).convert("RGB"))
  np.testing.assert_array_equal(decoded, np.repeat(image[..., :1], 3, axis=-1))
  assert by_tag["mig/discrete_mig"][1].simple_value == pytest.approx(0.25)
  # HParams: the session start info holds the flattened config.
  from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

  start = by_tag["_hparams_/session_start_info"][1]
  hparams = HParamsPluginData.FromString(start.metadata.plugin_data.content)
  assert hparams.session_start_info.hparams["regularizer.name"].string_value == "gmg"
  assert hparams.session_start_info.hparams["model.latent_dim"].number_value == 4
  assert hparams.session_start_info.hparams["model.mlp_hidden"].string_value == "(32,)"
  text = by_tag["config/text_summary"][1].tensor.string_val[0].decode()
  assert "| `regularizer.gmg.cost` | `cosine` |" in text
  # The JSON lines are unchanged by the pictures.
  with open(tmp_path / "eval.jsonl") as f:
    assert [json.loads(line) for line in f] == [{"step": 7, "mig/discrete_mig": 0.25}]


def test_writer_without_config_writes_no_hyperparameters(tmp_path):
  writer = writers_lib.MetricWriter(str(tmp_path))
  writer.write(1, {"loss": 2.0})
  writer.close()
  tags = {v.tag for _, v in summary_values(tfrecord_events(tmp_path / "tensorboard"))}
  assert tags == {"loss"}
  assert not (tmp_path / writers_lib.WANDB_RUN_ID_FILE).exists()


def test_evaluation_sends_its_pictures_to_tensorboard(tiny, tmp_path):
  from gmg_jax import data, evaluation, train

  config = tiny("gmg_cos_decoder")
  config.eval.metrics = ("mig",)
  config.eval.num_train = 200
  config.eval.num_test = 100
  dataset = data.get_dataset(config.data)
  graphdef, state = train.create_train_state(config, dataset.image_shape)
  evaluation.evaluate_and_write(config, str(tmp_path), graphdef, state, dataset)

  assert sorted(os.listdir(tmp_path / "pictures")) == [
    "gw_plan_00000000.png",
    "reconstructions_00000000.png",
    "traversal_00000000.gif",
    "traversal_00000000.png",
  ]
  with Image.open(tmp_path / "pictures" / "traversal_00000000.gif") as gif:
    assert gif.n_frames > 1
  values = summary_values(tfrecord_events(tmp_path / "tensorboard" / "eval"))
  images = {v.tag: v.image for _, v in values if v.HasField("image")}
  assert set(images) == {"pictures/traversal", "pictures/reconstructions", "pictures/gw_plan"}
  latent_dim = config.model.latent_dim
  size = config.data.image_size  # >= 14: cells are not enlarged
  assert images["pictures/traversal"].height == latent_dim * (size + 1) + 1  # a row per dim
  assert any(v.tag == "_hparams_/session_start_info" for _, v in values)


def test_a_second_model_of_the_same_shape_evaluates_without_compiling(tiny, tmp_path):
  """The replicas of a K-run program (one graph, K states) and every later evaluation of a run
  reuse the evaluation's compiled functions, and those read the state passed, not the first."""
  import jax
  from flax import nnx

  from gmg_jax import data, evaluation, metrics, train

  config = tiny("gmg_cos_decoder")
  config.eval.metrics = ("mig", "dci")
  config.eval.num_train = 200
  config.eval.num_test = 100
  dataset = data.get_dataset(config.data)
  graphdef, state_a = train.create_train_state(config, dataset.image_shape)
  config_b = config.copy_and_resolve_references()
  config_b.seed = 1
  _, state_b = train.create_train_state(config_b, dataset.image_shape)
  evaluation.evaluate_and_write(config, str(tmp_path / "a"), graphdef, state_a, dataset)

  compiles = []
  listener = lambda event, secs, **kw: compiles.append(event)  # noqa: E731
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    record = evaluation.evaluate_and_write(
      config_b, str(tmp_path / "b"), graphdef, state_b, dataset
    )
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert "/jax/core/compile/backend_compile_duration" not in compiles

  # Run B's scores are those of B's own encoder (not A's, baked into a cached function).
  vae_b = nnx.merge(graphdef, state_b.modules)[0]
  expected = metrics.compute_metrics(
    ("mig", "dci"),
    dataset,
    jax.jit(lambda x: vae_b.encode(x)[0]),
    jax.random.fold_in(jax.random.key(1), 0),
    mode=config.eval.mode,
    num_train=200,
    num_test=100,
    random_state=1,
  )
  np.testing.assert_allclose(
    record["mig"]["discrete_mig"], expected["mig"]["discrete_mig"], rtol=1e-6, atol=1e-9
  )
  np.testing.assert_allclose(
    record["dci"]["disentanglement"], expected["dci"]["disentanglement"], rtol=1e-6, atol=1e-9
  )
  name = "reconstructions_00000000.png"
  with (
    Image.open(tmp_path / "a/pictures" / name) as a,
    Image.open(tmp_path / "b/pictures" / name) as b,
  ):
    assert not np.array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
  wandb_dir = tmp_path / "wandb_files"
  wandb_dir.mkdir()
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
  monkeypatch.setenv("WANDB_SILENT", "true")
  return wandb_dir


def wandb_records(path):
  """The protobuf records of a `.wandb` transaction log, as (record_type, record) pairs."""
  from wandb.proto import wandb_internal_pb2

  with open(path, "rb") as f:
    data = f.read()
  block, pos, pending, records = 32768, 7, b"", []  # 7-byte file header, 32 KiB blocks
  while pos + 7 <= len(data):
    if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
      pos += block - pos % block
      continue
    length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
    chunk = data[pos + 7 : pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):  # full, last
      record = wandb_internal_pb2.Record.FromString(pending + chunk)
      records.append((record.WhichOneof("record_type"), record))
      pending = b""
    elif kind in (2, 3):  # first, middle
      pending += chunk
  return records


def finished_log(run_dir, run_id):
  """The run's `.wandb` log once its exit record is on disk (W&B's service writes it last)."""
  path = os.path.join(run_dir, f"run-{run_id}.wandb")
  deadline = time.time() + 30
  while not (os.path.exists(path) and any(k == "exit" for k, _ in wandb_records(path))):
    assert time.time() < deadline, f"{path} has no exit record"
    time.sleep(0.2)
  return path


def history_rows(path):
  rows = []
  for kind, record in wandb_records(path):
    if kind == "history":
      rows.append(
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
      )
  return rows


def test_wandb_offline_run_continues_with_the_same_id(tiny, tmp_path, wandb_offline):
  workdir = tmp_path / "run"
  config = logging_config(tiny(), wandb_project="gmg-test")
  trainer = writers_lib.MetricWriter(str(workdir), config=config)
  evaluator = writers_lib.MetricWriter(str(workdir), "eval", config=config)
  assert evaluator._wandb.run is trainer._wandb.run  # one W&B run per workdir and process
  trainer.write(5, {"loss": 1.5, "regularizer/gmg": np.float32(0.25)})
  evaluator.write_images(5, {"pictures/traversal": np.zeros((4, 6, 3), np.uint8)})
  evaluator.close()
  trainer.write(10, {"loss": 1.0})
  trainer.close()

  run_id = (workdir / writers_lib.WANDB_RUN_ID_FILE).read_text().strip()
  runs = glob.glob(str(wandb_offline / "wandb" / f"offline-run-*-{run_id}"))
  assert len(runs) == 1
  log = finished_log(runs[0], run_id)
  rows = history_rows(log)
  scalars = [(r["step"], r["loss"]) for r in rows if "loss" in r]
  assert scalars == [(5, 1.5), (10, 1.0)]
  assert [r["regularizer/gmg"] for r in rows if "regularizer/gmg" in r] == [0.25]
  image_rows = [r for r in rows if "pictures/traversal/_type" in r]
  assert len(image_rows) == 1 and image_rows[0]["pictures/traversal/width"] == 6
  assert glob.glob(os.path.join(runs[0], "files", "media", "images", "pictures", "traversal_*.png"))
  run_records = [r.run for kind, r in wandb_records(log) if kind == "run"]
  assert run_records[0].project == "gmg-test" and run_records[0].run_id == run_id
  assert run_records[0].config.update  # the run's config went along

  # A resumed run (a new writer on the same workdir) continues the same W&B run id. Offline
  # directories are named by the second the run started: start the second one a second later.
  time.sleep(1.0)
  resumed = writers_lib.MetricWriter(str(workdir), config=config)
  assert resumed._wandb.run_id == run_id
  resumed.write(15, {"loss": 0.5})
  resumed.close()
  runs = sorted(glob.glob(str(wandb_offline / "wandb" / f"offline-run-*-{run_id}")))
  assert len(runs) == 2
  rows = history_rows(finished_log(runs[1], run_id))
  assert [(r["step"], r["loss"]) for r in rows if "loss" in r] == [(15, 0.5)]
  assert not glob.glob(str(workdir / "*.tmp"))


def test_wandb_run_id_file_is_kept(tmp_path):
  run_id = writers_lib.wandb_run_id(str(tmp_path))
  assert run_id.isalnum() and len(run_id) == 16
  assert writers_lib.wandb_run_id(str(tmp_path)) == run_id
  assert os.listdir(tmp_path) == [writers_lib.WANDB_RUN_ID_FILE]


def test_wandb_missing_says_how_to_install(tiny, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
  config = logging_config(tiny(), wandb_project="gmg-test")
  with pytest.raises(ImportError, match=r'pip install -e "\.\[wandb\]"'):
    writers_lib.MetricWriter(str(tmp_path / "run"), config=config)
  assert not (tmp_path / "run").exists()  # failed before writing anything
  # W&B off: no import is attempted.
  writers_lib.MetricWriter(str(tmp_path), config=logging_config(tiny(), wandb_project="")).close()


def test_per_dim_kl_of_the_traversal_labels():
  import jax.numpy as jnp

  from gmg_jax import evaluation
  from gmg_jax.losses import terms as loss_terms

  rng = np.random.default_rng(3)
  mu = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  logvar = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  kl = evaluation._per_dim_kl(mu, logvar)
  mu_np, logvar_np = np.asarray(mu), np.asarray(logvar)
  by_hand = np.mean(0.5 * (mu_np**2 + np.exp(logvar_np) - logvar_np - 1.0), axis=0)
  np.testing.assert_allclose(kl, by_hand, rtol=1e-5)
  np.testing.assert_allclose(kl.sum(), loss_terms.gaussian_kl(mu, logvar), rtol=1e-5)


def test_truncate_after_keeps_the_records_up_to_the_step_and_appends_after_them(tmp_path):
  # JSON lines (gmg_jax/writers.py): a resumed run drops the records past its checkpoint.
  writer = writers_lib.MetricWriter(str(tmp_path), tensorboard=False)
  for step in (5, 10, 15, 20):
    writer.write(step, {"loss": float(step)})
  writer.truncate_after(10)  # resumed from the checkpoint at step 10
  writer.write(15, {"loss": -15.0})  # the resumed run writes its own step 15
  writer.close()
  assert writers_lib.read_jsonl(writer.path) == [
    {"step": 5, "loss": 5.0},
    {"step": 10, "loss": 10.0},
    {"step": 15, "loss": -15.0},
  ]
  assert not (tmp_path / "metrics.jsonl.tmp").exists()


def test_truncate_after_a_step_before_every_record_empties_the_log(tmp_path):
  writer = writers_lib.MetricWriter(str(tmp_path), "eval", tensorboard=False)
  writer.write(8, {"mig": 0.5})
  writer.truncate_after(0)
  writer.close()
  assert (tmp_path / "eval.jsonl").read_text() == ""


def test_read_jsonl_skips_a_line_cut_by_a_kill(tmp_path):
  path = tmp_path / "metrics.jsonl"
  records = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
  text = "".join(json.dumps(r) + "\n" for r in records)
  path.write_text(text + json.dumps({"step": 3, "loss": 0.25})[:12])  # no closing brace
  assert writers_lib.read_jsonl(str(path)) == records
  # The writer reopens such a file and its next record still reads back.
  writer = writers_lib.MetricWriter(str(tmp_path), tensorboard=False)
  writer.truncate_after(2)
  writer.write(3, {"loss": 0.25})
  writer.close()
  assert writers_lib.read_jsonl(str(path)) == [*records, {"step": 3, "loss": 0.25}]


def test_read_jsonl_of_a_missing_file_is_empty(tmp_path):
  assert writers_lib.read_jsonl(str(tmp_path / "absent.jsonl")) == []
