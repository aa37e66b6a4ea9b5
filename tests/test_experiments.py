"""Tests for experiments/: the sweep's grid, resumable running, and aggregation of results."""

import csv
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import aggregate  # noqa: E402
import records  # noqa: E402
import studies  # noqa: E402
import sweep  # noqa: E402

from gmg_jax import replicas  # noqa: E402
from gmg_jax.config import get_config  # noqa: E402


def _flat(tree, prefix=""):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
  return {prefix[:-1]: tree}


def _overrides_to(config) -> dict[str, str]:
  """`KEY: VALUE` config overrides that turn the default config into `config`."""
  default, wanted = _flat(get_config().to_dict()), _flat(config.to_dict())
  return {k: v if isinstance(v, str) else repr(v) for k, v in wanted.items() if v != default.get(k)}


# The sweep runs dataset configs without variants: `runlocal,tiny` as overrides, then a 4-step
# run evaluated once on a few points.
_TINY = tuple(
  f"{k}={v}"
  for k, v in {
    **_overrides_to(get_config("runlocal,tiny")),
    "train.num_steps": "4",
    "train.checkpoint_every": "2",
    "eval.every_steps": "4",
    "eval.metrics": "('mig',)",
    "eval.mode": "fast",
    "eval.num_train": "64",
    "eval.num_test": "32",
    "eval.pictures": "False",
  }.items()
)


def _expected_paper_grid():
  """The paper's grid written out independently of studies.grid_variants."""
  expected = set()
  for objective in ("beta_vae", "beta_tcvae"):
    for hfs in ("", ",hfs"):
      expected.add(objective + hfs)
      for reg, cost, on in itertools.product(
        ("dst", "gmg"), ("l2", "scl2", "cos"), ("encoder", "decoder")
      ):
        expected.add(f"{objective}{hfs},{reg}_{cost}_{on}")
  return expected


def test_grid_is_the_papers_exact_set_without_duplicates():
  variants = studies.grid_variants()
  assert len(variants) == 2 * 2 * (1 + 2 * 3 * 2) == 52
  assert len(set(variants)) == len(variants)
  assert set(variants) == _expected_paper_grid()
  runs = sweep.expand(variants, range(10))
  assert len(runs) == 520
  assert len({(r.variant, r.seed) for r in runs}) == 520
  assert len({r.workdir("/root") for r in runs}) == 520


def test_every_variant_builds_the_config_it_names():
  for variant in studies.grid_variants():
    config = get_config(variant)
    tokens = variant.split(",")
    assert config.objective.name == tokens[0]
    assert (config.objective.hfs_weight > 0) == ("hfs" in tokens)
    reg = aggregate.parse_name(variant)
    assert config.regularizer.name == reg["regularizer"]
    if reg["regularizer"] != "none":
      assert config.regularizer.on == reg["placement"]
      assert (
        config.regularizer[config.regularizer.name].cost
        == {"l2": "sqeuclidean", "scl2": "scaled_sqeuclidean", "cos": "cosine"}[reg["cost"]]
      )


def test_subsets_count_and_none_is_not_multiplied_by_cost_axes():
  variants = studies.grid_variants(
    objectives=["beta_vae"], hfs=[False], costs=["cos"], placements=["encoder", "decoder"]
  )
  assert variants == [
    "beta_vae",
    "beta_vae,dst_cos_encoder",
    "beta_vae,dst_cos_decoder",
    "beta_vae,gmg_cos_encoder",
    "beta_vae,gmg_cos_decoder",
  ]
  readme = studies.grid_variants(objectives=["beta_vae"], hfs=[False], placements=["decoder"])
  assert len(readme) == 7
  runs = sweep.expand(studies.grid_variants(), [0, 1], pattern=r"gmg_cos_decoder$")
  assert sorted({r.variant for r in runs}) == [
    "beta_tcvae,gmg_cos_decoder",
    "beta_tcvae,hfs,gmg_cos_decoder",
    "beta_vae,gmg_cos_decoder",
    "beta_vae,hfs,gmg_cos_decoder",
  ]
  assert len(runs) == 8


def test_overrides_reach_the_config_and_the_command():
  runs = sweep.expand(
    ["beta_vae", "beta_vae,dst_cos_decoder", "beta_vae,dst_scl2_decoder"],
    [3],
    overrides=("train.num_steps=7", "eval.metrics=('dci','mig')"),
    overrides_for=[("cos", "regularizer.weight=500")],
  )
  by_variant = {r.variant: r for r in runs}
  assert by_variant["beta_vae,dst_cos_decoder"].overrides[-1] == "regularizer.weight=500"
  assert "regularizer.weight=500" not in by_variant["beta_vae,dst_scl2_decoder"].overrides
  config = sweep.load_config("configs/default.py", by_variant["beta_vae,dst_cos_decoder"])
  assert config.seed == 3 and config.train.num_steps == 7
  assert config.regularizer.weight == 500 and config.eval.metrics == ("dci", "mig")
  cmd = sweep.command("configs/shapes3d.py", by_variant["beta_vae"], "/r")
  assert cmd[:4] == ["python", "-m", "gmg_jax.main", "--config=configs/shapes3d.py:beta_vae"]
  assert "--workdir=/r/beta_vae/seed_3" in cmd and "--config.seed=3" in cmd
  assert "--config.train.num_steps=7" in cmd


def _write_run(root, name, seed, metrics, step=100):
  workdir = os.path.join(root, name, f"seed_{seed}")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump({"step": step, **metrics}, f)
  return workdir


def test_aggregation_means_stds_csv_markdown_and_plots(tmp_path):
  root, out = str(tmp_path / "study"), str(tmp_path / "out")
  dci = {"beta_vae": [0.1, 0.2, 0.6], "beta_vae+gmg_cos_decoder": [0.5, 0.7]}
  for name, values in dci.items():
    for seed, value in enumerate(values):
      _write_run(
        root,
        name,
        seed,
        {
          "dci": {"disentanglement": value, "completeness": 2 * value},
          "mig": {"discrete_mig": 0.01 * seed},
        },
      )
  os.makedirs(os.path.join(root, "beta_vae", "seed_9"))  # unfinished run: no metrics.json
  for seed, share in enumerate([0.01, 0.03]):  # The trainer's gradient medians of the GMG runs.
    path = os.path.join(root, "beta_vae+gmg_cos_decoder", f"seed_{seed}", "train_summary.json")
    with open(path, "w") as f:
      json.dump({"median_regularizer_share": share, "negligible": False}, f)
  summary = aggregate.write_results(root, out)
  by_config = {s["config"]: s for s in summary}
  mean, std, n = by_config["beta_vae"]["dci/disentanglement"]
  assert (
    n == 3 and mean == pytest.approx(0.3) and std == pytest.approx(np.std([0.1, 0.2, 0.6], ddof=1))
  )
  mean, std, n = by_config["beta_vae+gmg_cos_decoder"]["dci/completeness"]
  assert (n, mean, std) == (2, pytest.approx(1.2), pytest.approx(math.sqrt(0.08)))
  gmg = by_config["beta_vae+gmg_cos_decoder"]
  assert (gmg["regularizer"], gmg["cost"], gmg["placement"]) == ("gmg", "cos", "decoder")
  assert gmg["train/median_regularizer_share"][:2] == (
    pytest.approx(0.02),
    pytest.approx(0.02**0.5 / 10),
  )
  assert "train/median_regularizer_share" not in by_config["beta_vae"]
  with open(os.path.join(out, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 5
  assert {float(r["dci/disentanglement"]) for r in rows} == {0.1, 0.2, 0.6, 0.5, 0.7}
  table = open(os.path.join(out, "results.md")).read()
  assert "| beta_vae | no | none | - | - | - | 3 | 0.300 ± 0.265 |" in table
  # The plot draws what the table says: a bar per configuration at its mean, the std as its
  # error bar, a dot per seed.
  figure = aggregate.plot_metric(
    aggregate.collect(root), "dci/disentanglement", str(tmp_path / "p.png")
  )
  ax = figure.axes[0]
  assert [bar.get_height() for bar in ax.patches] == pytest.approx([0.3, 0.6])
  assert [t.get_text() for t in ax.get_xticklabels()] == ["beta_vae", "beta_vae+gmg_cos_decoder"]
  dots = sorted(
    float(y) for line in ax.get_lines() if line.get_marker() == "." for y in line.get_ydata()
  )
  assert dots == pytest.approx([0.1, 0.2, 0.5, 0.6, 0.7])
  assert open(os.path.join(out, "dci_disentanglement.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_single_seed_has_no_std_and_parse_name_reads_every_axis():
  summary = aggregate.summarize(
    [
      {
        "config": "a",
        "objective": "beta_vae",
        "hfs": "no",
        "regularizer": "none",
        "cost": "-",
        "placement": "-",
        "seed": 0,
        "m": 0.25,
      }
    ],
    ["m"],
  )
  assert summary[0]["m"][0] == 0.25 and math.isnan(summary[0]["m"][1])
  assert aggregate.format_cell(summary[0]["m"]) == "0.250"
  assert aggregate.parse_name("beta_tcvae+hfs+dst_scl2_encoder") == {
    "config": "beta_tcvae+hfs+dst_scl2_encoder",
    "objective": "beta_tcvae",
    "hfs": "yes",
    "regularizer": "dst",
    "cost": "scl2",
    "placement": "encoder",
    "values": "-",
  }
  axes = aggregate.parse_name("beta_vae+gmg_cos_decoder+epsilon_0=0.1+weight=500")
  assert (axes["regularizer"], axes["values"]) == ("gmg", "epsilon_0=0.1,weight=500")


def test_the_seeds_of_a_configuration_train_as_programs_of_contiguous_seeds():
  runs = sweep.expand(["beta_vae", "beta_vae,gmg_cos_decoder"], [0, 1, 2, 3, 4, 7], _TINY)
  programs = sweep.programs(runs, max_replicas=3)
  gmg = "beta_vae,gmg_cos_decoder"
  assert [(p.first.variant, [r.seed for r in p.runs]) for p in programs] == [
    ("beta_vae", [0, 1, 2]),
    (gmg, [0, 1, 2]),
    ("beta_vae", [3, 4]),
    (gmg, [3, 4]),
    ("beta_vae", [7]),
    (gmg, [7]),
  ]
  cmd = sweep.command("configs/default.py", programs[0], "/r")
  assert "--workdir=/r/beta_vae/seeds_0-2" in cmd
  assert "--config.seed=0" in cmd and "--config.num_seeds=3" in cmd
  assert programs[0].run_dirs("/r") == [f"/r/beta_vae/seeds_0-2/seed={s}" for s in range(3)]
  single = sweep.command("configs/default.py", programs[-1], "/r")
  assert "--workdir=/r/beta_vae+gmg_cos_decoder/seed_7" in single
  assert not any(a.startswith("--config.num_seeds") for a in single)
  # The program's config is the runs' config with num_seeds: its replicas are exactly the runs.
  config = sweep.load_config("configs/default.py", programs[0].first)
  config.num_seeds = 3
  assert [r.seed for r in replicas.expand(config)] == [0, 1, 2]
  assert [len(p.runs) for p in sweep.programs(runs, max_replicas=1)] == [1] * 12


def test_finished_runs_are_skipped_and_unfinished_ones_launched(tmp_path, monkeypatch):
  root = str(tmp_path)
  runs = sweep.expand(["beta_vae"], [0, 1, 2], overrides=_TINY)
  _write_run(root, "beta_vae", 0, {"mig": {"discrete_mig": 0.1}}, step=4)  # finished
  _write_run(root, "beta_vae", 1, {"mig": {"discrete_mig": 0.1}}, step=2)  # evaluated midway
  launched = []

  def fake_call(cmd, **kwargs):
    workdir = next(a.split("=", 1)[1] for a in cmd if a.startswith("--workdir="))
    launched.append(workdir)
    for seed in (1, 2):  # The program's replicas write their evaluations.
      os.makedirs(os.path.join(workdir, f"seed={seed}"))
      with open(os.path.join(workdir, f"seed={seed}", "metrics.json"), "w") as f:
        json.dump({"step": 4, "mig": {"discrete_mig": 0.2}}, f)
    return 0

  monkeypatch.setattr(sweep.subprocess, "call", fake_call)
  statuses = sweep.run_all("configs/default.py", runs, root)
  assert [s for _, s in statuses] == ["skipped", "done", "done"]
  assert launched == [os.path.join(root, "beta_vae", "seeds_1-2")]
  assert [s for _, s in sweep.run_all("configs/default.py", runs, root)] == ["skipped"] * 3
  # Aggregation reads a run of its own and the replicas of a program alike.
  rows = aggregate.collect(root)
  assert [(r["seed"], r["mig/discrete_mig"]) for r in rows] == [(0, 0.1), (1, 0.2), (2, 0.2)]


def _tiny_study(weights_by_seed, seeds=(0, 1, 2, 3)):
  """A study: beta_vae over `seeds`, GMG with regularizer.weight w for the seeds listed."""
  setting = dict(o.split("=", 1) for o in _TINY)

  def runs():
    yield from studies.product(("beta_vae",), seeds=seeds, setting=setting)
    for weight, weight_seeds in weights_by_seed.items():
      yield from studies.product(
        ("beta_vae,gmg_cos_decoder",), weight_seeds, setting, regularizer__weight=(weight,)
      )

  return studies.Study(runs, compare=(("beta_vae+gmg_cos_decoder+weight=1", "beta_vae"),))


def test_a_study_names_its_axes_and_trains_a_full_grid_of_values_as_one_program():
  study = _tiny_study({1: range(4), 2.5: range(4)})
  runs = sweep.study_runs(study)
  assert sorted({r.name for r in runs}) == [
    "beta_vae",
    "beta_vae+gmg_cos_decoder+weight=1",
    "beta_vae+gmg_cos_decoder+weight=2.5",
  ]
  programs = sweep.programs(runs, max_replicas=8)
  assert [(p.first.variant, p.seeds, len(p.runs)) for p in programs] == [
    ("beta_vae", [0, 1, 2, 3], 4),
    ("beta_vae,gmg_cos_decoder", [0, 1, 2, 3], 8),
  ]
  grid = programs[1]
  cmd = sweep.command("configs/default.py", grid, "/r")
  assert "--workdir=/r/beta_vae+gmg_cos_decoder/seeds_0-3" in cmd
  assert "--config.vary=regularizer.weight=1,2.5" in cmd and "--config.num_seeds=4" in cmd
  assert not any(a.startswith("--config.regularizer.weight") for a in cmd)
  # The program's replicas, expanded by the trainer's own code from the command's config, are
  # exactly the study's runs, in order, each writing where aggregation will read it.
  config = sweep.load_config("configs/default.py", grid.first)
  config.num_seeds, config.vary = 4, "regularizer.weight=1,2.5"
  expanded = replicas.expand(config)
  assert [(r.seed, r.config.regularizer.weight) for r in expanded] == [
    (run.seed, float(run.overrides[-1].split("=")[1])) for run in grid.runs
  ]
  assert grid.run_dirs("/r") == [
    f"/r/beta_vae+gmg_cos_decoder/seeds_0-3/{r.name}" for r in expanded
  ]
  # Fewer replicas per program: the grid is cut along its seeds.
  assert [p.seeds for p in sweep.programs(runs, max_replicas=4)] == [[0, 1, 2, 3], [0, 1], [2, 3]]
  # Not a full grid (weight 2.5 only for seeds 0-1): each value trains as its own programs.
  partial = sweep.programs(sweep.study_runs(_tiny_study({1: range(4), 2.5: range(2)})), 8)
  assert [(p.first.name, p.seeds, p.vary) for p in partial[1:]] == [
    ("beta_vae+gmg_cos_decoder+weight=1", [0, 1, 2, 3], {}),
    ("beta_vae+gmg_cos_decoder+weight=2.5", [0, 1], {}),
  ]
  assert partial[2].workdir("/r") == "/r/beta_vae+gmg_cos_decoder+weight=2.5/seeds_0-1"


def test_aggregation_reads_every_layout_under_one_config_name(tmp_path):
  root = str(tmp_path)
  layouts = {
    "beta_vae+gmg_cos_decoder+weight=1/seed_0": ("beta_vae+gmg_cos_decoder+weight=1", 0),
    "beta_vae+gmg_cos_decoder+weight=1/seeds_1-2/seed=1": ("beta_vae+gmg_cos_decoder+weight=1", 1),
    "beta_vae+gmg_cos_decoder/seeds_2-3/weight=1,seed=2": ("beta_vae+gmg_cos_decoder+weight=1", 2),
    "beta_vae+gmg_cos_decoder/seeds_2-3/weight=2.5,seed=3": (
      "beta_vae+gmg_cos_decoder+weight=2.5",
      3,
    ),
    # Tokens are sorted, so a program's directory plus its replica's values give one name.
    "beta_vae+init=both/seeds_0-1/weight=1,seed=0": ("beta_vae+init=both+weight=1", 0),
    "beta_vae+weight=1/seeds_0-1/init=both,seed=1": ("beta_vae+init=both+weight=1", 1),
  }
  for path in layouts:
    os.makedirs(os.path.join(root, path))
  found = {(name, seed) for name, seed, _ in aggregate.run_dirs(root)}
  assert found == set(layouts.values())
  one = aggregate.run_dirs(root, "beta_vae+gmg_cos_decoder+weight=1")
  assert sorted(seed for _, seed, _ in one) == [0, 1, 2]


def test_a_study_is_checked_before_any_work(monkeypatch, capsys):
  twice = studies.Study(lambda: iter([{"config": "beta_vae", "seed": 0}] * 2))
  with pytest.raises(SystemExit, match="beta_vae seed 0 twice"):
    sweep.study_runs(twice)
  monkeypatch.setitem(studies.STUDIES, "tiny", _tiny_study({1: range(2)}))
  with pytest.raises(SystemExit):
    sweep.parse_args(["--list", "--study=tiny", "--seeds=0-9", "--set=train.num_steps=5"])
  assert "drop --seeds, --set or define a new study" in capsys.readouterr().err


def test_a_partly_run_study_compares_the_arms_that_were_evaluated(tmp_path, monkeypatch, capsys):
  root, out = str(tmp_path / "runs"), str(tmp_path / "out")
  for seed, (a, b) in enumerate([(0.2, 0.1), (0.5, 0.3), (0.4, 0.4)]):
    _write_run(root, "beta_vae", seed, {"mig": {"discrete_mig": b}})
    _write_run(root, "beta_vae+gmg_cos_decoder+weight=1", seed, {"mig": {"discrete_mig": a}})
  # An arm whose program is still training: its replica directory, no evaluation yet.
  os.makedirs(os.path.join(root, "beta_vae+gmg_cos_decoder", "seeds_0-2", "weight=2,seed=0"))
  study = studies.Study(
    lambda: iter(()),
    compare=(
      ("beta_vae+gmg_cos_decoder+weight=1", "beta_vae"),
      ("beta_vae+gmg_cos_decoder+weight=2", "beta_vae"),
    ),
    metrics=("mig/discrete_mig",),
  )
  monkeypatch.setitem(studies.STUDIES, "partial", study)
  sweep.write_results(root, out, "partial")
  with open(os.path.join(out, "paired.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [(r["arm_a"], r["n"]) for r in rows] == [("beta_vae+gmg_cos_decoder+weight=1", "3")]
  assert float(rows[0]["mean_diff"]) == pytest.approx((0.1 + 0.2 + 0.0) / 3)
  assert "Not compared yet" in capsys.readouterr().out


@pytest.mark.slow
def test_sweep_cli_runs_a_real_tiny_study_as_one_program_then_skips_it(tmp_path, monkeypatch):
  setting = {**dict(o.split("=", 1) for o in _TINY), "eval.at_steps": (2,)}
  study = studies.Study(
    lambda: studies.product(("beta_vae",), (0, 1), setting, objective__beta=(1, 4)),
    compare=(("beta_vae+beta=4", "beta_vae+beta=1"),),
    metrics=("mig/discrete_mig",),
  )
  monkeypatch.setitem(studies.STUDIES, "tiny", study)
  args = ["--study=tiny", f"--root={tmp_path}/runs", f"--results={tmp_path}/results"]
  sweep.main(["--run", "--replicas_per_program=8", *args])  # On a CPU the default is 1.
  program = tmp_path / "runs" / "tiny" / "beta_vae" / "seeds_0-1"
  for beta, seed in itertools.product((1, 4), (0, 1)):
    replica = program / f"beta={beta},seed={seed}"
    assert json.load(open(replica / "config.json"))["objective"]["beta"] == beta
    assert json.load(open(replica / "metrics.json"))["step"] == 4
  with open(tmp_path / "results" / "tiny" / "results.csv") as f:
    rows = list(csv.DictReader(f))
  # One row per run and evaluation step (eval.at_steps=(2,), then the end).
  assert sorted((r["config"], int(r["seed"]), int(r["step"])) for r in rows) == [
    (f"beta_vae+beta={b}", s, step) for b in (1, 4) for s in (0, 1) for step in (2, 4)
  ]
  with open(tmp_path / "results" / "tiny" / "paired.csv") as f:
    assert [int(r["n"]) for r in csv.DictReader(f)] == [2]
  # No primary family: the pair at each step on the study's first metric.
  with open(tmp_path / "results" / "tiny" / "paired_steps.csv") as f:
    by_step = [(r["metric"], int(r["step"]), int(r["n"])) for r in csv.DictReader(f)]
  assert by_step == [("mig/discrete_mig", 2, 2), ("mig/discrete_mig", 4, 2)]
  # Each run's record (committed in a real study): the evaluations at eval.at_steps and the end.
  saved = records.read(str(tmp_path / "results" / "tiny" / "runs"))
  assert [(r["config"], r["seed"]) for r in saved] == [
    (f"beta_vae+beta={b}", s) for b in (1, 4) for s in (0, 1)
  ]
  assert all([e["step"] for e in r["evaluations"]] == [2, 4] for r in saved)
  mtime = os.path.getmtime(program / "beta=1,seed=0" / "metrics.json")
  sweep.main(["--run", "--replicas_per_program=8", *args])
  assert os.path.getmtime(program / "beta=1,seed=0" / "metrics.json") == mtime


def test_the_sweep_trains_a_process_per_run_on_a_cpu_and_programs_of_8_on_an_accelerator(
  monkeypatch,
):
  assert sweep.default_replicas_per_program() == 1  # The suite runs on CPUs: a real probe.
  for backend, expected in (("cpu", 1), ("gpu", 8), ("tpu", 8)):
    done = subprocess.CompletedProcess([], 0, stdout=f"{backend}\n")
    monkeypatch.setattr(sweep.subprocess, "run", lambda *a, done=done, **k: done)
    assert sweep.default_replicas_per_program() == expected


def test_epsilon_ablation_sees_no_gap_for_an_isometry_and_a_large_one_for_a_shuffle():
  import ablate_epsilon

  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 3)).astype(np.float32)
  rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  image = (x @ rotation.T).astype(np.float32)
  shuffled = image[rng.permutation(16)]
  rows = ablate_epsilon.solver_table(
    [(x, image), (x, shuffled)], ["sqeuclidean"], [0.01], "decoder"
  )
  assert len(rows) == 1
  iso = ablate_epsilon.solver_table([(x, image)], ["sqeuclidean"], [0.01], "decoder")[0]
  shuffle = ablate_epsilon.solver_table([(x, shuffled)], ["sqeuclidean"], [0.01], "decoder")[0]
  assert iso["gap"] == pytest.approx(0.0, abs=1e-4) and iso["dst"] < 1e-4
  assert shuffle["gap_over_dst"] > 0.5 and shuffle["identity_won"] == 0.0
  assert "| decoder | sqeuclidean | - | certified | both | 0.01 |" in ablate_epsilon.format_table(
    rows
  )


def _unit_rows(z):
  z = np.asarray(z, np.float64).reshape(len(z), -1)
  return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_ablate_cos_sim_epsilon_is_the_papers_mean_rule_on_similarities_and_guards_zero():
  import ablate_epsilon

  rng = np.random.default_rng(0)
  x = (rng.normal(size=(16, 3)) + 0.5).astype(np.float32)
  y = rng.uniform(size=(16, 20)).astype(np.float32)
  grid = dict(inits=("product",), estimators=("entropic",))
  sim, one_minus = ablate_epsilon.solver_table(
    [(x, y)], ["cosine_sim", "cosine"], [0.5], "decoder", **grid
  )
  # Brute force: S = cos-sim matrix (diagonal 1), C = 1 - S.
  s_x, s_y = (_unit_rows(z) @ _unit_rows(z).T for z in (x, y))
  assert sim["convention"] == "cos-sim" and sim["applicable"]
  assert sim["epsilon"] == pytest.approx(0.5 * s_x.mean() * s_y.mean(), rel=1e-4)
  assert one_minus["epsilon"] == pytest.approx(0.5 * (1 - s_x).mean() * (1 - s_y).mean(), rel=1e-4)
  assert sim["epsilon"] != pytest.approx(one_minus["epsilon"], rel=0.2)  # conventions differ
  # Directions that cancel (v, -v pairs): mean(S_X) = 0, no cos-sim epsilon; reported, not clipped.
  v = rng.normal(size=(4, 3)).astype(np.float32)
  cancel = np.concatenate([v, -v])
  row = ablate_epsilon.solver_table([(cancel, y[:8])], ["cosine_sim"], [0.5], "decoder", **grid)[0]
  assert not row["applicable"] and "mean cos-sim" in row["reason"]
  assert "n/a: mean cos-sim" in ablate_epsilon.format_table([row])
  assert ablate_epsilon.finalists([row]) == []


def test_ablate_gradient_ratio_and_cosine_against_independent_gradients():
  import ablate_epsilon
  import jax
  import jax.numpy as jnp

  from gmg_jax import gmg

  rng = np.random.default_rng(1)
  g = rng.normal(size=(12, 5))
  assert ablate_epsilon.gradient_alignment(g, g) == pytest.approx((1.0, 1.0))
  assert ablate_epsilon.gradient_alignment(-2 * g, g) == pytest.approx((2.0, -1.0))
  ratio, cosine = ablate_epsilon.gradient_alignment(0 * g, g)
  assert ratio == 0.0 and math.isnan(cosine)

  x = rng.normal(size=(12, 3)).astype(np.float32)
  # A shuffled image: GW finds a better coupling than I/n, so the certified gap has a gradient.
  y = np.tanh(x @ rng.normal(size=(3, 6)))[rng.permutation(12)].astype(np.float32)
  cost_x = gmg.cost_matrix(jnp.asarray(x), "sqeuclidean")

  def dst(y):
    return gmg.distortion(cost_x, gmg.cost_matrix(y, "sqeuclidean"))

  def product_gap(y):
    # The entropic gap at the product coupling (epsilon -> inf), plan held fixed: KL = 0 and
    # E(ab^T) = 1/2 (mean C_X^2 + mean C_Y^2) - mean C_X mean C_Y.
    cost_y = gmg.cost_matrix(y, "sqeuclidean")
    energy = 0.5 * (jnp.mean(cost_x**2) + jnp.mean(cost_y**2)) - jnp.mean(cost_x) * jnp.mean(cost_y)
    return dst(y) - energy

  grad_dst = np.asarray(jax.grad(dst)(jnp.asarray(y)), np.float64)
  expected = {}
  for epsilon_0, estimator in ((0.01, "entropic"), (0.01, "certified"), (1e4, "entropic")):
    if epsilon_0 == 1e4:
      grad = jax.grad(product_gap)(jnp.asarray(y))
    else:
      grad = jax.grad(
        lambda y, e=estimator: gmg.gromov_monge_gap(
          x, y, cost="sqeuclidean", epsilon_0=0.01, init="product", estimator=e
        )[0]
      )(jnp.asarray(y))
    grad = np.asarray(grad, np.float64)
    norm = np.linalg.norm(grad)
    expected[epsilon_0, estimator] = (
      norm / np.linalg.norm(grad_dst),
      grad.ravel() @ grad_dst.ravel() / (norm * np.linalg.norm(grad_dst)),
    )
  rows = ablate_epsilon.solver_table(
    [(x, y)],
    ["sqeuclidean"],
    [0.01, 1e4],
    "decoder",
    inits=("product",),
    estimators=("entropic", "certified"),
  )
  checked = [r for r in rows if (r["epsilon_0"], r["estimator"]) in expected]
  assert len(checked) == 3
  for r in checked:
    assert r["identity_won"] == 0.0 or r["estimator"] == "entropic"
    ratio, cosine = expected[r["epsilon_0"], r["estimator"]]
    assert r["grad_ratio"] == pytest.approx(ratio, rel=2e-3, abs=1e-6)
    assert r["grad_ratio"] > 1e-3 and r["grad_cos"] == pytest.approx(cosine, abs=2e-3)
