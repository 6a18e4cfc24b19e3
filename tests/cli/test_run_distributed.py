"""`medxfer run` under torchrun: two CPU ranks (gloo) of a tiny classification and a tiny
segmentation run, a rank that is killed or fails, and resuming a distributed run.

Each job starts three Python processes (launcher and two workers), so each test takes
tens of seconds on two cores; they are marked ``distributed`` and ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import make_distribution

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLUGIN = """
import os
import signal
import time
from pathlib import Path

from torch import nn

import medxfer
from medxfer.errors import ConfigError
from medxfer.models import SegmentationModel


class CrashOnRank:
    '''Trains everything; on rank $CRASH_RANK at the start of epoch $CRASH_EPOCH, once
    rank 0 saved the epoch before, it kills itself (CRASH_HOW=kill) or raises.'''

    name = "crash_on_rank"

    @medxfer.hookimpl
    def medxfer_epoch_start(self, ctx, epoch):
        if os.environ.get("CRASH_RANK") != os.environ.get("RANK") or \\
                epoch != int(os.environ.get("CRASH_EPOCH", "-1")):
            return
        last = Path(ctx.run_dir) / "checkpoints" / "last.pt"
        for _ in range(200):
            if last.is_file():
                break
            time.sleep(0.05)
        if os.environ.get("CRASH_HOW") == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise ConfigError(f"strategy: rank {os.environ['RANK']} was told to fail")


from medxfer_plugins.strategies.gradual_unfreeze import GradualUnfreeze


class CheckedUnfreeze(GradualUnfreeze):
    '''Gradual unfreezing that fails when the ranks' networks differ after an epoch.'''

    name = "checked_unfreeze"

    @medxfer.hookimpl
    def medxfer_epoch_end(self, ctx, epoch, metrics):
        import torch

        super().medxfer_epoch_end(ctx, epoch, metrics)
        state = [v.double().sum().item() for v in ctx.model.state_dict().values()]
        frozen = [n for n, p in ctx.model.named_parameters() if not p.requires_grad]
        seen = [None, None]
        torch.distributed.all_gather_object(seen, (state, frozen))
        if seen[0] != seen[1]:
            raise RuntimeError(f"epoch {epoch}: the ranks' networks differ")
        metrics["frozen_tensors"] = float(len(frozen))


def tiny_seg(in_channels, spatial_dims, num_classes, pretrained="none"):
    stem = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    down = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    net = nn.Sequential(stem, down, nn.ConvTranspose2d(8, 4, 2, stride=2),
                        nn.Conv2d(4, num_classes, 1))
    return SegmentationModel(net, encoder_groups=[stem, down], encoder_path=[stem, down],
                             feature_dim=8, spatial_dims=spatial_dims,
                             in_channels=in_channels, num_classes=num_classes, size_divisor=2)


@medxfer.hookimpl
def medxfer_register_strategies(register):
    register("crash_on_rank", CrashOnRank, description="test: a rank that fails")
    register("checked_unfreeze", lambda: CheckedUnfreeze(1, 1.0, False),
             description="test: gradual unfreezing, ranks compared")


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("tiny_seg_ddp", tiny_seg, description="test segmentation network")
"""

CLASSIFICATION = ["--set", "model.backbone.name=basic_cnn", "--set", "train.epochs=2",
                  "--set", "eval.bootstrap=20", "--set", "train.batch_size=8",
                  "--set", "data.limit=16", "--set", "train.threads=1"]
SEGMENTATION = ["--set", "task=segmentation", "--set", "model.backbone.name=tiny_seg_ddp",
                "--set", f"data.path={REPO / 'sample_data' / 'segmentation_2d'}",
                "--set", "data.label_key=mask", "--set", "train.epochs=2",
                "--set", "train.batch_size=4", "--set", "eval.bootstrap=20",
                "--set", "strategy.name=full_finetune", "--set", "train.threads=1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("site")
    make_distribution(site, "ddp-test-plugins", "0.1", {"ddp_test": "ddp_test_plugin"},
                      {"ddp_test_plugin": PLUGIN})
    environ = {k: v for k, v in os.environ.items()
               if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "CRASH_RANK")}
    environ.update(PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), OMP_NUM_THREADS="1",
                   HF_HUB_OFFLINE="1", MPLBACKEND="Agg", MEDXFER_DIST_TIMEOUT="120")
    return environ


def medxfer(args: list[str], env: dict[str, str], cwd: Path, *,
            torchrun: bool = False, timeout: float = 240) -> subprocess.CompletedProcess:
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--nproc_per_node=2", "-m", "medxfer"] if torchrun else \
        [sys.executable, "-m", "medxfer"]
    return subprocess.run([*prefix, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def output_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def assert_one_set_of_outputs(run: Path, figures: set[str]) -> None:
    files = output_files(run)
    for name in ("config.yaml", "splits.csv", "metrics.json", "report.md", "report.html",
                 "model.safetensors", "model.json", "checkpoints/last.pt"):
        assert files.count(name) == 1, name
    assert {f for f in files if f.startswith("figures/")} == figures
    events = [f for f in files if f.startswith("tensorboard/")]
    assert len(events) == 1, events  # rank 0's only
    assert not [f for f in files if f.endswith(".tmp") or "rank" in f]
    assert [f for f in files if f.startswith("checkpoints/")] == ["checkpoints/last.pt"]


def load_test_split(run: Path):
    from medxfer.data import load_data
    from medxfer.workflows.predict import load_run

    loaded = load_run(run)
    bundle = load_data(loaded.config, imagenet_norm=loaded.sidecar["imagenet_norm"])
    return loaded, bundle


def test_classification_with_nproc_2_matches_a_single_process_evaluation(env, tmp_path):
    run = tmp_path / "run"
    tic = time.perf_counter()
    # every train.ddp option away from torch's default (static graph: full fine-tuning)
    ddp = ["--set", "train.ddp={bucket_cap_mb: 1, gradient_as_bucket_view: true, "
           "static_graph: true}"]
    done = medxfer(["run", "--nproc", "2", "--output", str(run), *CLASSIFICATION, *ddp], env,
                   tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "static_graph is off" not in done.stderr
    print(f"2-rank classification run: {time.perf_counter() - tic:.1f} s")
    assert_one_set_of_outputs(run, {"figures/confusion_matrix.png", "figures/roc_curve.png",
                                    "figures/training_curves.png"})
    assert (run / "predictions.csv").is_file()
    assert done.stdout.count("test split") == 1  # rank 0 prints the summary
    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert summary["epochs_run"] == 2 and summary["splits"]["test"] == 16
    assert_test_metrics_match_a_single_process(run, summary)


def assert_test_metrics_match_a_single_process(run: Path, summary: dict) -> None:
    """The run's test metrics and predictions order equal one process evaluating its model."""
    from medxfer import metrics as M
    from medxfer.training.amp import resolve_precision
    from medxfer.training.evaluate import predict
    from medxfer.tasks import task_of
    from medxfer.tasks.decisions import ECE_BINS
    from medxfer.training.loaders import make_loader

    loaded, bundle = load_test_split(run)
    cpu = torch.device("cpu")
    task = task_of(loaded.config)
    loss_fn = task.loss(loaded.config, bundle.train_labels, bundle.num_classes, cpu)
    preds = predict(loaded.model, make_loader(bundle.test, loaded.config, train=False), cpu,
                    resolve_precision("off", cpu), task, loss_fn)
    want = M.classification_metrics(preds.targets.astype(int), preds.scores,
                                    threshold=summary["threshold"])
    want["ece"] = M.expected_calibration_error(preds.targets.astype(int), preds.scores,
                                               ECE_BINS)
    want["loss"] = preds.loss
    got = summary["test"]
    assert set(got) == set(want)
    for key, value in want.items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    rows = (run / "predictions.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == preds.ids  # dataset order restored


def test_deep_ensemble_with_nproc_2_trains_each_member_once(env, tmp_path):
    run = tmp_path / "run"
    done = medxfer(["run", "--nproc", "2", "--output", str(run), *CLASSIFICATION,
                    "--set", "train.epochs=1", "--set", "ensemble.members=2"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = {"figures/confusion_matrix.png", "figures/roc_curve.png",
               "figures/training_curves.png"}
    for k in range(2):
        assert_one_set_of_outputs(run / "members" / f"m{k}", figures)
    top = [f for f in output_files(run) if not f.startswith("members/")]
    assert sorted(top) == sorted(["config.yaml", "splits.csv", "metrics.json", "report.md",
                                  "report.html", "model.safetensors", "model.json",
                                  "predictions.csv", *figures])
    assert done.stdout.count("test split") == 1
    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert summary["ensemble"]["seeds"] == [0, 1]
    assert_test_metrics_match_a_single_process(run, summary)


def test_segmentation_under_torchrun_matches_a_single_process_evaluation(env, tmp_path,
                                                                        monkeypatch):
    from medxfer.tasks.segmentation import metrics as S
    from medxfer.training.amp import resolve_precision
    from medxfer.tasks.summary import clean as _clean
    from medxfer.tasks.segmentation.inference import iter_case_predictions

    run = tmp_path / "run"
    tic = time.perf_counter()
    done = medxfer(["run", "--output", str(run), *SEGMENTATION], env, tmp_path, torchrun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"2-rank segmentation run: {time.perf_counter() - tic:.1f} s")
    assert_one_set_of_outputs(run, {"figures/dice_per_class.png",
                                    "figures/segmentation_overlays.png",
                                    "figures/training_curves.png"})
    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    monkeypatch.syspath_prepend(env["PYTHONPATH"].split(os.pathsep)[0])  # the test plugin
    import medxfer as mx
    from medxfer.data import load_data
    from medxfer.workflows.predict import load_run

    loaded = load_run(run, registries=mx.build_registries(mx.create_plugin_manager()))
    bundle = load_data(loaded.config, imagenet_norm=loaded.sidecar["imagenet_norm"])
    cpu = torch.device("cpu")
    names = list(bundle.class_names)
    cases = [S.case_metrics(probs.argmax(dim=0).numpy(), item["label"][0].numpy(),
                            bundle.num_classes, names, case_id=str(item["id"]))
             for item, probs in iter_case_predictions(
                 loaded.model, bundle.test, loaded.config, device=cpu,
                 precision=resolve_precision("off", cpu))]
    want = _clean(S.segmentation_summary(cases))
    assert summary["test"].keys() == want.keys()
    for key, value in want.items():
        if value is None:
            assert summary["test"][key] is None, key
        else:
            assert summary["test"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    per_case = (run / "per_case.csv").read_text(encoding="utf-8").splitlines()[1:]
    test_ids = [row.split(",")[0] for row in per_case if row.split(",")[1] == "test"]
    assert test_ids == [c.id for c in cases]


def test_a_killed_rank_ends_the_run_and_it_resumes(env, tmp_path):
    run = tmp_path / "run"
    crash = {**env, "CRASH_RANK": "1", "CRASH_EPOCH": "1", "CRASH_HOW": "kill"}
    args = ["run", "--nproc", "2", "--output", str(run), *CLASSIFICATION,
            "--set", "strategy.name=crash_on_rank"]
    tic = time.perf_counter()
    done = medxfer(args, crash, tmp_path, timeout=180)
    elapsed = time.perf_counter() - tic
    assert done.returncode != 0
    assert "rank 1 (local rank 1) was killed by SIGKILL" in done.stderr, done.stderr[-3000:]
    assert elapsed < 120
    assert not (run / "metrics.json").exists()
    # every rank continues from rank 0's checkpoint of the first epoch
    done = medxfer(["run", "--nproc", "2", "--output", str(run), "--resume"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert summary["epochs_run"] == 2
    assert [h["epoch"] for h in summary["history"]] == [1, 2]  # counted from 1


def test_an_error_on_one_rank_is_reported_with_its_rank(env, tmp_path):
    crash = {**env, "CRASH_RANK": "1", "CRASH_EPOCH": "1", "CRASH_HOW": "raise"}
    done = medxfer(["run", "--nproc", "2", "--output", str(tmp_path / "run"), *CLASSIFICATION,
                    "--set", "strategy.name=crash_on_rank"], crash, tmp_path, timeout=180)
    assert done.returncode == 2
    assert "error: rank 1: strategy: rank 1 was told to fail" in done.stderr  # the worker
    lines = [line for line in done.stderr.splitlines() if "other ranks were stopped" in line]
    assert lines == ["error: rank 1 (local rank 1) failed with exit code 2: ConfigError: "
                     "strategy: rank 1 was told to fail; the other ranks were stopped"], \
        done.stderr[-3000:]


def test_dann_with_gradual_unfreezing_keeps_the_ranks_identical(env, tmp_path):
    from medxfer.data.shift import parse_recipe, shift_medmnist
    from tests.helpers import fake_medmnist

    source = fake_medmnist(tmp_path / "fakemnist.npz")
    target = shift_medmnist(source, tmp_path / "shifted.npz",
                            parse_recipe([{"name": "gamma", "gamma": 2.0}]))
    run = tmp_path / "run"
    done = medxfer(["run", "--output", str(run), "--set", f"data.path={source}",
                    "--set", f"data.target.path={target}", "--set", "data.augment.preset=none",
                    "--set", "model.backbone.name=basic_cnn",
                    "--set", "model.backbone.channels=[4,8]",
                    "--set", "model.backbone.pretrained=none",
                    "--set", "strategy.name=checked_unfreeze",
                    "--set", "domain_adaptation.name=dann", "--set", "train.epochs=3",
                    "--set", "train.batch_size=8", "--set", "eval.bootstrap=0",
                    "--set", "train.threads=1"], env, tmp_path, torchrun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    history = summary["history"]
    assert [h["unfrozen_groups"] for h in history] == [0.0, 1.0, 2.0]
    frozen = [h["frozen_tensors"] for h in history]
    assert frozen[0] > frozen[1] > frozen[2] == 0  # DDP rebuilt as groups unfroze
    assert all(h["dann_lambda"] > 0 for h in history)
    assert summary["target_test"]["n"] == 12


def test_nproc_inside_torchrun_is_refused(monkeypatch, capsys):
    from medxfer.cli import main

    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    assert main(["run", "--nproc", "2", "--set", "train.epochs=1"]) == 2
    assert "under torchrun omit --nproc" in capsys.readouterr().err


def test_nproc_with_a_batch_that_does_not_split_is_refused_before_launch(monkeypatch, capsys,
                                                                           tmp_path):
    from medxfer.cli import launch, main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(launch, "launch_run", lambda *a: pytest.fail("torchrun was started"))
    for check in ([], ["--check"]):
        assert main(["run", "--nproc", "2", *check, "--set", "train.batch_size=7",
                     "--set", "train.epochs=1"]) == 2
        assert ("train.batch_size 7 is the global batch and must split evenly over 2 "
                "processes; set it to a multiple of 2") in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_static_ddp_graph_with_gradual_unfreezing_is_refused_before_launch(monkeypatch,
                                                                            capsys, tmp_path):
    from medxfer.cli import launch, main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(launch, "launch_run", lambda *a: pytest.fail("torchrun was started"))
    assert main(["run", "--nproc", "2", "--set", "strategy.name=gradual_unfreeze",
                 "--set", "train.ddp.static_graph=true", "--set", "train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "train.ddp.static_graph: strategy 'gradual_unfreeze' changes which parameters" in err
    assert "set train.ddp.static_graph: false" in err
    assert not any(tmp_path.iterdir())


def test_a_batch_of_part_cases_is_refused_before_training(monkeypatch, capsys, tmp_path):
    """Patches are drawn whole cases at a time: batch 3 with 2 patches per case trained on
    2 patches; with --nproc 2, batch 2 trained on 4."""
    from medxfer.cli import launch, main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(launch, "launch_run", lambda *a: pytest.fail("torchrun was started"))
    seg = ["--set", "task=segmentation", "--set", "model.backbone.name=monai_unet",
           "--set", "model.backbone.pretrained=none", "--set", "data.patch.size=[32,32,32]",
           "--set", "data.patch.samples_per_case=2", "--set", "train.epochs=1"]
    for args in (["--set", "train.batch_size=3"], ["--check", "--set", "train.batch_size=3"],
                 ["--nproc", "2", "--set", "train.batch_size=2"]):
        assert main(["run", *args, *seg]) == 2
        assert "counts patches, and each case gives data.patch.samples_per_case 2" \
            in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
