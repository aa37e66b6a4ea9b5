"""The regularizer variants' default weights and experiments/calibrate_weight.py."""

import json
import math
import os
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import calibrate_weight  # noqa: E402

from gmg_jax import config as config_lib  # noqa: E402


@pytest.mark.parametrize("key", sorted(config_lib.REGULARIZER_WEIGHTS))
def test_each_regularizer_variant_sets_its_weight_and_an_override_wins(key):
  name, cost, on = key
  variant = f"beta_vae,runlocal,{name}_{cost}_{on}"
  config = config_lib.get_config(variant)
  assert config.regularizer.weight == config_lib.REGULARIZER_WEIGHTS[key]
  assert (config.regularizer.name, config.regularizer.on) == (name, on)
  # Later tokens do not reset it, and `jacobian_*` keeps the base weight.
  assert config_lib.get_config(f"{name}_{cost}_{on},tiny").regularizer.weight == pytest.approx(
    config_lib.REGULARIZER_WEIGHTS[key]
  )
  assert config_lib.get_config(f"jacobian_{on}").regularizer.weight == 1.0


def test_every_gmg_and_dst_variant_has_a_weight():
  variants = {v for v in config_lib.VARIANTS if v.startswith(("gmg_", "dst_"))}
  assert variants == {f"{n}_{c}_{o}" for n, c, o in config_lib.REGULARIZER_WEIGHTS}
  assert all(w > 0 and math.isfinite(w) for w in config_lib.REGULARIZER_WEIGHTS.values())


def test_the_suggestion_inverts_the_share_of_a_fixed_gradient():
  # share(w) = w a / (w a + b) at fixed gradient norms a, b: the suggested weight is exact from
  # any grid point, and the nearest point in log-odds is the one used.
  a, b = 0.3, 40.0

  def share(w):
    return w * a / (w * a + b)

  target = 0.015
  want = target * b / ((1 - target) * a)
  assert calibrate_weight.suggest({w: share(w) for w in (1.0, 10.0, 100.0)}, target) == (
    pytest.approx(want, rel=1e-9)
  )
  # A point off the model far from the target does not move the suggestion.
  shares = {1.0: share(1.0), 10.0: share(10.0), 1e5: 0.5}
  assert calibrate_weight.suggest(shares, target) == pytest.approx(want, rel=1e-9)
  with pytest.raises(ValueError, match="widen the weight grid"):
    calibrate_weight.suggest({1.0: 0.0, 2.0: 1.0}, target)


@pytest.mark.parametrize(
  "text, message",
  [("1,x", "not a comma-separated list"), ("0,1", "> 0"), ("1,nan", "> 0"), ("", "> 0"),
   ("2,2", "listed twice")],
)  # fmt: skip
def test_bad_weight_grids_are_refused(text, message):
  with pytest.raises(ValueError, match=message):
    calibrate_weight.parse_weights(text)
  assert calibrate_weight.parse_weights("1e3,10") == [10.0, 1000.0]


def test_bad_arguments_fail_before_any_work_and_name_the_problem(tmp_path, capsys):
  workdir = tmp_path / "w"

  def main(config, weights="1,2"):
    calibrate_weight.main([f"--config={config}", f"--weights={weights}", f"--workdir={workdir}"])

  with pytest.raises(SystemExit, match="add a gmg_\\* or dst_\\* variant"):
    main("configs/default.py:runlocal,tiny")
  with pytest.raises(SystemExit, match="Unknown config variant 'gmg_cos_decodr'"):
    main("configs/default.py:runlocal,gmg_cos_decodr")
  with pytest.raises(SystemExit, match="No such file"):
    main("configs/nowhere.py:gmg_cos_decoder")
  with pytest.raises(SystemExit):  # argparse: exit 2 with the message on stderr.
    main("configs/default.py:gmg_cos_decoder", weights="1,-1")
  assert "give one or more finite weights > 0" in capsys.readouterr().err
  assert not workdir.exists()


def test_the_table_takes_medians_over_seeds_and_names_failed_seeds(tmp_path):
  replicas = []
  for i, (weight, seed, share) in enumerate(
    [(10.0, 0, 0.01), (10.0, 1, 0.03), (10.0, 2, 0.02), (100.0, 0, 0.2), (100.0, 1, None)]
  ):
    workdir = tmp_path / f"r{i}"
    workdir.mkdir()
    failure = None if share is not None else "non-finite loss"
    if share is not None:
      summary = {
        "median_regularizer_share": share,
        "median_regularizer_to_distortion": 2 * share,
        "median_cosine_to_distortion": 0.5,
      }
      (workdir / "train_summary.json").write_text(json.dumps(summary))
    values = {"regularizer.weight": weight}
    replicas.append({"seed": seed, "values": values, "failure": failure, "workdir": str(workdir)})
  (tmp_path / "replicas.json").write_text(json.dumps({"replicas": replicas}))
  rows = calibrate_weight.summarize(str(tmp_path))
  assert (
    rows[10.0]["median_regularizer_share"] == pytest.approx(0.02) and rows[10.0]["failed"] == []
  )
  assert rows[10.0]["median_regularizer_to_distortion"] == pytest.approx(0.04)
  assert rows[100.0]["median_regularizer_share"] == pytest.approx(0.2) and rows[100.0][
    "failed"
  ] == [1]
  report = calibrate_weight.table("X", rows, 0.02)
  assert "| 100 | 0.2 | 0.4 | 0.5 | [1] |" in report and "weight ~10." in report
