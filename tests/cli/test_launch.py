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
