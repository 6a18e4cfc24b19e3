"""Distributed data-parallel pieces without a launcher: shards, samplers, DDP rebuilds.

The multi-process tests fork two gloo ranks from the test process (no re-import, so
they take about a second); ``tests/cli/test_run_distributed.py`` runs whole
``medxfer run`` jobs under torchrun. Select them all with ``-m distributed``.
"""

from __future__ import annotations

import copy
import gc
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from medxfer.cli.launch import describe_failure, torchrun_args
from medxfer.tasks import get_task
from medxfer.workflows.run_folder import run_arguments
from medxfer.training import distributed as D
from medxfer.training import shards as S

pytestmark = pytest.mark.distributed


# -- shards, without processes ------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 7])
def test_unpadded_shards_cover_every_item_once_and_merge_in_order(n, world):
    shards = [list(S.shard_indices(n, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    outputs = [[f"item{i}" for i in s] for s in shards]  # what each rank computed
    assert S.merge_shards(outputs) == [f"item{i}" for i in range(n)]
    samplers = [list(S.ShardSampler(n, r, world)) for r in range(world)]
    assert samplers == shards


def test_merge_arrays_restores_rows_and_tolerates_an_empty_shard():
    parts = [np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[10.0, 11.0]]), np.zeros((0, 0))]
    # a split of 3 over 4 ranks: shards [0], [1], [2], []
    merged = S.merge_arrays([parts[0][:1], parts[1], parts[0][1:], parts[2]])
    assert merged.tolist() == [[0.0, 1.0], [10.0, 11.0], [2.0, 3.0]]


def test_merge_shards_rejects_sizes_no_split_gives():
    with pytest.raises(ValueError, match="shard 0 has 1 items"):
        S.merge_shards([[1], [2, 3]])


def test_the_global_batch_must_split_evenly_over_the_processes():
    from medxfer.errors import ConfigError

    assert S.per_rank_batch_size(8, 2) == 4
    assert S.per_rank_batch_size(7) == 7  # one process: this run's world size
    with pytest.raises(ConfigError, match="train.batch_size 7 .* over 2 processes; set it "
                                          "to a multiple of 2"):
        S.per_rank_batch_size(7, 2)


def test_each_process_batch_must_be_whole_cases_of_patches():
    """A segmentation batch counts patches drawn case by case: 4 patches over 2 processes
    with 2 patches per case is one case each; 2 would have trained on 4 patches."""
    from medxfer.errors import ConfigError

    assert S.per_rank_batch_size(4, 2, samples_per_case=2) == 2
    assert S.per_rank_batch_size(6, 1, samples_per_case=3) == 6
    with pytest.raises(ConfigError, match=r"train.batch_size 2 \(1 per process over 2\) counts "
                                          r"patches.*samples_per_case 2.*multiple of 4"):
        S.per_rank_batch_size(2, 2, samples_per_case=2)
    with pytest.raises(ConfigError, match=r"train.batch_size 3 counts patches.*multiple of 2 "):
        S.per_rank_batch_size(3, 1, samples_per_case=2)


def test_not_distributed_helpers_are_identity():
    assert not D.is_active() and D.is_main() and D.world_size() == 1
    assert S.gather_in_order([3, 1]) == [3, 1]
    assert D.from_rank_zero({"a": 1}) == {"a": 1}
    data = [1, 2, 3]
    assert S.shard_dataset(data) is data


def test_weighted_sampler_splits_one_draw_between_ranks():
    weights = [1.0, 1.0, 1.0, 8.0, 8.0]
    samplers = [S.DistributedWeightedSampler(weights, rank_=r, world=2, seed=3)
                for r in range(2)]
    draws = [list(s) for s in samplers]
    assert [len(d) for d in draws] == [3, 3] == [len(s) for s in samplers]
    generator = torch.Generator().manual_seed(3)
    whole = torch.multinomial(torch.tensor(weights, dtype=torch.double), 6, replacement=True,
                              generator=generator).tolist()
    assert draws == [whole[0::2], whole[1::2]]
    for s in samplers:
        s.set_epoch(1)
    assert [list(s) for s in samplers] != draws


def test_launcher_command_line_and_failure_message():
    args = run_arguments(Path("cfg.yaml"), Path("out"), ["train.epochs=1"], True)
    assert args == ["cfg.yaml", "--output", "out", "--set", "train.epochs=1", "--resume"]
    assert torchrun_args(2, args, 29400)[-9:] == ["-m", "medxfer", "run", *args]
    assert "--nproc_per_node=2" in torchrun_args(2, args, 29400)
    failure = SimpleNamespace(message={"message": "ConfigError: bad key"}, exitcode=2,
                              local_rank=1, signal_name=lambda: "<N/A>")
    error = SimpleNamespace(get_first_failure=lambda: (1, failure))
    assert describe_failure(error) == (
        "rank 1 (local rank 1) failed with exit code 2: ConfigError: bad key; the other "
        "ranks were stopped", 2)
    killed = SimpleNamespace(message="Signal 9 (SIGKILL) received by PID 7", exitcode=-9,
                             local_rank=0, signal_name=lambda: "SIGKILL", timestamp=12)
    error = SimpleNamespace(get_first_failure=lambda: (2, killed))
    assert describe_failure(error) == (
        "rank 2 (local rank 0) was killed by SIGKILL; the other ranks were stopped", 1)
    # rank 0 lost its connection to the killed rank 2 (and logged it first): not the cause
    peer = SimpleNamespace(message={"message": "RuntimeError: [pair.cc:561] Connection closed "
                                               "by peer [127.0.0.1]:1"},
                           exitcode=1, local_rank=0, signal_name=lambda: "<N/A>", timestamp=11)
    error = SimpleNamespace(failures={0: peer, 2: killed},
                            get_first_failure=lambda: (0, peer))
    assert describe_failure(error)[0].startswith("rank 2 (local rank 0) was killed by SIGKILL")
    # the agent stopped rank 0 with SIGTERM in the same second as rank 2 was killed
    stopped = SimpleNamespace(message="Signal 15 (SIGTERM) received by PID 8", exitcode=-15,
                              local_rank=0, signal_name=lambda: "SIGTERM", timestamp=12)
    error = SimpleNamespace(failures={0: stopped, 2: killed},
                            get_first_failure=lambda: (0, stopped))
    assert describe_failure(error)[0].startswith("rank 2 (local rank 0) was killed by SIGKILL")
    # a run stopped from outside (every rank got SIGTERM) still names a rank
    error = SimpleNamespace(failures={1: stopped, 0: stopped},
                            get_first_failure=lambda: (0, stopped))
    assert describe_failure(error)[0].startswith("rank 0 (local rank 0) was killed by SIGTERM")


# -- two forked gloo ranks ----------------------------------------------------------------

def _rank_main(index: int, fn, world: int, store: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=index,
                                         world_size=world)
    try:
        fn(index, world)
    finally:
        torch.distributed.destroy_process_group()


def _run_ranks(fn, tmp_path: Path, world: int = 2) -> None:
    import torch.multiprocessing as mp

    torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)  # its lazy imports, done once
    mp.start_processes(_rank_main, args=(fn, world, str(tmp_path / "store")), nprocs=world,
                       start_method="fork", join=True)


def _ddp_rebuilds(rank: int, world: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    extra = nn.Parameter(torch.ones(1))  # like a plugin's discriminator: not in the model
    model[0].requires_grad_(False)
    optimizer = torch.optim.SGD([{"params": list(model[1].parameters())},
                                 {"params": [extra]}], lr=0.1)

    def step_fn(x: torch.Tensor) -> torch.Tensor:
        return ((model(x) * extra) ** 2).mean()

    def expected_grads() -> dict[str, torch.Tensor]:
        grads = []
        for r in range(world):  # each rank's own gradients, then their mean
            m, e = copy.deepcopy(model), extra.detach().clone().requires_grad_(True)
            ((m(torch.full((2, 3), r + 1.0)) * e) ** 2).mean().backward()
            grads.append({**{n: p.grad for n, p in m.named_parameters() if p.requires_grad},
                          "extra": e.grad})
        return {k: sum(g[k] for g in grads) / world for k in grads[0]}

    runner = D.DistributedStep(model, step_fn, lambda: optimizer, torch.device("cpu"))
    x = torch.full((2, 3), rank + 1.0)  # different data on each rank
    for unfrozen in (False, True):
        if unfrozen:  # what gradual unfreezing does between epochs
            model[0].requires_grad_(True)
            optimizer.add_param_group({"params": list(model[0].parameters())})
        want = expected_grads()
        optimizer.zero_grad(set_to_none=True)
        runner(x).backward()
        got = {**{n: p.grad for n, p in model.named_parameters() if p.requires_grad},
               "extra": extra.grad}
        assert set(got) == set(want)
        for key in want:
            torch.testing.assert_close(got[key], want[key])
        if not unfrozen:
            assert model[0].weight.grad is None  # frozen stays frozen
    assert runner.builds == 2
    runner(x).backward()
    assert runner.builds == 2  # same trainable set: no rebuild


def test_ddp_step_averages_gradients_and_is_rebuilt_when_layers_unfreeze(tmp_path):
    _run_ranks(_ddp_rebuilds, tmp_path)


def _ddp_options(rank: int, world: int) -> None:
    import warnings

    from medxfer.config import DDPConfig
    from medxfer.errors import MedxferWarning

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    model[0].requires_grad_(False)
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)
    options = DDPConfig(bucket_cap_mb=0.5, gradient_as_bucket_view=True, static_graph=True)
    runner = D.DistributedStep(model, lambda x: model(x).pow(2).mean(), lambda: optimizer,
                               torch.device("cpu"), options)
    x = torch.full((2, 3), rank + 1.0)
    for step in range(3):  # a static graph is learnt on the first step, used from the second
        optimizer.zero_grad(set_to_none=True)
        runner(x).backward()
        ddp = runner._ddp
        assert (ddp.bucket_bytes_cap, ddp.gradient_as_bucket_view, ddp.static_graph) == \
            (512 * 1024, True, True)
        assert ddp.find_unused_parameters is False  # the static graph finds them itself
        mean = model[1].weight.grad.clone()
        torch.distributed.all_reduce(mean)
        torch.testing.assert_close(model[1].weight.grad, mean / world)  # alike on every rank
    # the gradients are views into DDP's flat buckets, not tensors of their own
    assert model[1].weight.grad._base is not None
    model[0].requires_grad_(True)  # a layer unfreezes, as no static graph allows
    optimizer.add_param_group({"params": list(model[0].parameters())})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.zero_grad(set_to_none=True)
        runner(x).backward()
    told = [str(w.message) for w in caught if issubclass(w.category, MedxferWarning)]
    assert len(told) == (1 if rank == 0 else 0)  # said once, by the rank that writes
    assert all("train.ddp.static_graph is off from now on" in t for t in told)
    assert runner.builds == 2 and runner._ddp.static_graph is False
    assert runner._ddp.find_unused_parameters is True
    assert runner._ddp.gradient_as_bucket_view is True  # the other options stay
    weight = model[0].weight.grad.clone()
    torch.distributed.all_reduce(weight)
    torch.testing.assert_close(model[0].weight.grad, weight / world)


def test_ddp_options_reach_the_wrapper_and_a_static_graph_ends_at_a_rebuild(tmp_path):
    _run_ranks(_ddp_options, tmp_path)


class _Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(4, generator=g), "label": i % 2, "id": f"case{i}"}


def _sharded_predict(rank: int, world: int) -> None:
    from medxfer.config import load_config
    from medxfer.training.amp import resolve_precision
    from medxfer.training.evaluate import predict
    from medxfer.training.loaders import make_loader

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    config = load_config(None, ["train.batch_size=2", "train.imbalance=balanced_sampler"])
    cpu = torch.device("cpu")
    precision = resolve_precision("off", cpu)
    loss_fn = nn.CrossEntropyLoss()
    loader = make_loader(_Items(), config, train=False)
    assert S.is_sharded(loader) and len(loader.sampler) == (3 if rank == 0 else 2)
    got = predict(model, loader, cpu, precision, get_task("classification"), loss_fn)
    whole = torch.utils.data.DataLoader(_Items(), batch_size=1)
    want = predict(model, whole, cpu, precision, get_task("classification"), loss_fn)
    assert got.ids == want.ids == [f"case{i}" for i in range(5)]
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    np.testing.assert_array_equal(got.targets, want.targets)
    assert got.loss == pytest.approx(want.loss, rel=1e-6)
    assert S.gather_in_order([i * 10 for i in S.shard_dataset(list(range(5)))]) == \
        [0, 10, 20, 30, 40]
    # training: a class-balanced sample split between the ranks, half the global batch
    train = make_loader(_Items(), config, train=True, labels=[i % 2 for i in range(5)])
    assert isinstance(train.sampler, S.DistributedWeightedSampler)
    assert train.batch_size == 1 and len(train.sampler) == 3
    whole = S.whole_loader(train)  # for hooks reading data after the fit (AdaBN)
    assert len(whole.dataset) == 5 and whole.batch_size == 2
    config = load_config(None, ["train.batch_size=3"])
    from medxfer.errors import ConfigError

    with pytest.raises(ConfigError, match="train.batch_size 3"):
        make_loader(_Items(), config, train=True)
    with pytest.raises(ConfigError, match="train.sync_batchnorm"):
        D.sync_batchnorm(nn.BatchNorm1d(2), cpu, True)
    assert isinstance(D.sync_batchnorm(nn.BatchNorm1d(2), cpu, False), nn.BatchNorm1d)


def test_evaluation_shards_are_gathered_in_dataset_order(tmp_path):
    _run_ranks(_sharded_predict, tmp_path)


def test_peer_failures_are_told_from_causes():
    lost = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection "
                        "closed by peer [127.0.0.1]:1")
    assert D.is_peer_failure(lost)
    assert not D.is_peer_failure(RuntimeError("CUDA out of memory"))
    assert not D.is_peer_failure(ValueError("connection closed by peer"))


def test_rank_seed_keeps_rank_zero_and_differs_elsewhere(monkeypatch):
    from medxfer.training import distributed as dist

    seeds = []
    for r in range(3):
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        seeds.append(dist.rank_seed(7))
    assert seeds[0] == 7 and len(set(seeds)) == 3


def _session_frees_ddp(index: int, port: int) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    with D.session("cpu") as device:
        assert device == torch.device("cpu") and D.is_active()
        holder: dict = {}
        holder["self"] = holder  # a reference cycle, as trainer, hooks and context make
        holder["ddp"] = nn.parallel.DistributedDataParallel(nn.Linear(2, 1))
        holder["ddp"](torch.ones(1, 2)).sum().backward()
        del holder
    assert not D.is_active()
    alive = [o for o in gc.get_objects() if isinstance(o, nn.parallel.DistributedDataParallel)]
    assert not alive, "a DDP wrapper (and its process group) outlived the session"


def test_session_frees_ddp_wrappers_before_leaving_the_process_group():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_session_frees_ddp, args=(port,), nprocs=1,
                       start_method="fork", join=True)
