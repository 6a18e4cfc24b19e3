"""``medxfer run --nproc``: nothing it starts listens beyond loopback."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medxfer.cli.launch import loopback_rendezvous, torchrun_args

REPO = Path(__file__).resolve().parents[2]


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """The (address, port) of every TCP socket listening in processes ``pids`` (Linux)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
        except OSError:  # the process ended meanwhile
            continue
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


def process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


linux_only = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")


@linux_only
def test_the_rendezvous_store_listens_on_loopback_only():
    with loopback_rendezvous() as port:
        assert listening({os.getpid()}) == {("127.0.0.1", port)}
    args = torchrun_args(2, ["cfg.yaml"], port)
    assert f"--rdzv-endpoint=127.0.0.1:{port}" in args and "--local-addr=127.0.0.1" in args
    assert "--standalone" not in args


@linux_only
@pytest.mark.slow
@pytest.mark.distributed
def test_a_nproc_run_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    proc = subprocess.Popen(
        [sys.executable, "-m", "medxfer", "run", "--nproc", "2", "--output", str(tmp_path / "run"),
         "--set", "model.backbone.name=basic_cnn", "--set", "train.epochs=2",
         "--set", "eval.bootstrap=0", "--set", "train.batch_size=8", "--set", "data.limit=16",
         "--set", "train.threads=1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, int]] = set()
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        seen |= listening(process_tree(proc.pid))
        time.sleep(0.1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert len(seen) >= 2, seen  # the stores were seen
    assert all(ipaddress.ip_address(address).is_loopback for address, _ in seen), seen


def test_nodes_are_checked_together():
    from medxfer.cli.launch import Nodes, parse_nodes, torchrun_nodes_args
    from medxfer.errors import ConfigError

    assert parse_nodes(1, 0, None) == Nodes() and Nodes().single and Nodes().loopback
    nodes = parse_nodes(2, 1, "node0.cluster:29500")
    assert nodes == Nodes(2, 1, ("node0.cluster", 29500)) and not nodes.loopback
    assert parse_nodes(2, 0, "[::1]:29500").loopback
    args = torchrun_nodes_args(4, ["cfg.yaml", "--output", "r"], nodes)
    assert args[:5] == ["--nnodes=2", "--node-rank=1", "--nproc_per_node=4",
                        "--rdzv-backend=static", "--rdzv-endpoint=node0.cluster:29500"]
    assert args[-6:] == ["-m", "medxfer", "run", "cfg.yaml", "--output", "r"]
    for nnodes, rank, endpoint, named in [(2, 0, None, "--rdzv-endpoint"),
                                          (2, 2, "h:1", "--node-rank 2"),
                                          (2, 0, "h", "'h'"), (2, 0, "h:99999", "'h:99999'"),
                                          (1, 1, None, "--node-rank"),
                                          (1, 0, "h:1", "--rdzv-endpoint")]:
        with pytest.raises(ConfigError, match=named):
            parse_nodes(nnodes, rank, endpoint)


def test_nodes_options_are_refused_with_one_message(tmp_path, capsys):
    from medxfer.cli import main

    assert main(["run", "--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:29500",
                 "--output", str(tmp_path / "r")]) == 2
    assert "give --nproc N too" in capsys.readouterr().err
    assert main(["run", "--nproc", "1", "--nnodes", "2", "--node-rank", "1",
                 "--rdzv-endpoint", "localhost:29500"]) == 2
    assert "--node-rank > 0 needs --output" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@linux_only
@pytest.mark.slow
@pytest.mark.distributed
def test_two_nodes_on_loopback_train_one_run(tmp_path):
    """Two nodes x one process, as two machines would run them (here both on loopback):
    one run folder, written by node rank 0, trained by a world of two."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    port, run = _free_port(), tmp_path / "run"
    common = ["--set", "model.backbone.name=basic_cnn", "--set", "train.epochs=1",
              "--set", "eval.bootstrap=0", "--set", "train.batch_size=8",
              "--set", "data.limit=16", "--set", "train.threads=1"]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "medxfer", "run", "--nproc", "1", "--nnodes", "2",
         "--node-rank", str(rank), "--rdzv-endpoint", f"127.0.0.1:{port}",
         "--output", str(run), *common],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    # the static rendezvous waits for both nodes: each one finishing means both trained
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [e[-3000:] for e in errors]
    assert (run / "metrics.json").is_file() and (run / "report.md").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # node 1 wrote no folder of its own
