"""Training on two processes (gloo on the CPU, 127.0.0.1): one model, one set of OIM memories.

(a) after some iterations both ranks hold the same lookup tables, queues, sigmas, weights and
    probe magnitudes;
(b) two ranks x batch 1 train as one process x batch 2 on the same frames;
(c) a run stopped by Ctrl-C on one rank and resumed under torchrun ends as the uninterrupted run.

The frames are all 320x192 and trained at one size, so that a global batch is padded alike in
one process and in two. The tiny model at 128 px keeps each run to seconds of CPU.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from galw.probe import GradientProbe
from training.data import load_dataset
from training.data.torch_dataset import EpochBatches
from training.distributed import TrainingProcesses
from training.model.tasks import TASKS
from training.pipeline import RunDir, RunError, TrainingRun, _use_sync_batch_norm
from training.run_config import RunConfig
from training.synth import generate
from training.throughput import main as throughput_main
from training.throughput import phase_throughput
from training.train import build_parser, main
from training.train_loop import StopRequest

pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parents[2]
SIZES = ["--train-sizes", "128,128", "--max-size", "128,77"]
COMMON = ["--dataset", "prw", "--config", "tiny", "--log-every", "1", "--workers", "0",
          "--no-progress", "--device", "cpu", *SIZES]  # fmt: skip
# Sampling-free losses only: the RPN and ROI losses, weighted 0 here, are taken on proposals
# and ROIs that each process samples with its own generator, and the ROI head's BatchNorm1d
# normalises each process's ROIs (SyncBatchNorm has no CPU implementation), so with them the
# two runs differ by sampling noise (tens of per cent in the ROI losses), not by float error.
FCOS_ONLY = ["--weighting", "fixed", "--fixed-weights",
             "rpn_cls=0,rpn_reg=0,roi_cls=0,roi_reg=0,roi_reid=0"]  # fmt: skip
FCOS_TASKS = [task for task in TASKS if task.startswith("fcos")]
TIMEOUT = 300


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four training frames: two global batches of two."""
    root = tmp_path_factory.mktemp("ddp_synth") / "prw"
    return generate(root, "prw", frames=8, identities=6, cameras=3, seed=1, size=(320, 192))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str) -> subprocess.Popen:
    """``torchrun --nproc_per_node 2 -m training.galw ARGS`` on 127.0.0.1."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "training.galw", *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=TIMEOUT)
    return process.returncode, stderr


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def steps(run: Path) -> list[dict]:
    return [record for record in read_log(run) if record["event"] == "step"]


def final_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "final.pth", weights_only=False)


def train_in_one_process(argv: list[str]) -> int:
    """The one-process reference on one thread, as torchrun's workers run (OMP_NUM_THREADS=1):
    a different thread count changes the order of float sums, and six iterations of training
    carry that rounding past the comparison's tolerance."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


def train_on_rank(rank: int, port: int, argv: list[str], dump: Path) -> None:
    """One of two processes of the training program's probe and main run (as torchrun starts
    them), saving this rank's model, weighting and probe magnitudes to dump/rank<N>.pt."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    config = RunConfig.from_arguments(build_parser().parse_args(argv))
    processes = TrainingProcesses.from_environment()
    device = torch.device("cpu")
    processes.start(device)
    try:
        run = RunDir(config.out)
        if processes.is_main:
            run.root.mkdir(parents=True)
        train = load_dataset("prw", config.data_root, "train")
        training = TrainingRun(config, run, train, device, processes)
        history = training.run_probe(None, StopRequest())
        grouping = training.choose_grouping(None)
        model = training.run_main(grouping, None, StopRequest())
        state = {
            "model": model.state_dict(),
            "weighting": training.weighting.state_dict(),
            "weights": training.weighting.weights(),
            "magnitudes": history.magnitudes,
            "groups": grouping.groups,
        }
        torch.save(state, dump / f"rank{rank}.pt")
    finally:
        processes.close()


def spawn_two_ranks(argv: list[str], dump: Path) -> list[dict]:
    dump.mkdir(parents=True, exist_ok=True)
    context = mp.spawn(train_on_rank, args=(free_port(), argv, dump), nprocs=2, join=False)
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=2):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two training processes did not finish (a collective hangs?)")
    return [torch.load(dump / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


def galw_options(frames: Path) -> list[str]:
    return [
        *COMMON, "--data-root", str(frames), "--probe-epochs", "2", "--epochs", "1",
        "--batch-size", "2", "--probe-samples", "1", "--no-eval", "--no-export",
    ]  # fmt: skip


def test_both_ranks_hold_the_same_memories_sigmas_weights_and_probe(frames, tmp_path):
    """(a), and the probe measures the global batch's gradients, not one rank's shard."""
    options = galw_options(frames)
    ranks = spawn_two_ranks([*options, "--out", str(tmp_path / "two")], tmp_path / "dump")
    first, second = ranks
    # 4 probe + 2 main iterations; the memories were written
    for branch in ("fcos_oim", "roi_oim"):
        assert first["model"][f"{branch}.lut"].norm(dim=1).gt(0).any(), branch
        assert int(first["model"][f"{branch}.queue_head"]) > 0, branch
    for key, value in first["model"].items():
        if "running_" in key or "num_batches_tracked" in key:
            continue  # BatchNorm statistics are per process without SyncBatchNorm (CPU)
        assert torch.equal(value, second["model"][key]), key
    assert torch.equal(first["weighting"]["log_var"], second["weighting"]["log_var"])
    assert first["weighting"]["log_var"].abs().gt(0).all()  # the sigmas have moved
    assert first["weights"] == second["weights"]
    assert first["magnitudes"] == second["magnitudes"] and first["groups"] == second["groups"]
    # rank 0 alone wrote the log: each step once
    logged = [(r["phase"], r["step"]) for r in steps(tmp_path / "two")]
    assert logged == [("probe", i) for i in range(1, 5)] + [("main", i) for i in range(1, 3)]

    # one process on the same global batches: its first probe epoch's magnitudes (probed on
    # the epoch's first batch, before any update) are those of the two ranks together
    assert (
        train_in_one_process([*options, "--out", str(tmp_path / "one"), "--stop-after-iters", "2"])
        == 0
    )
    (one,) = [r for r in read_log(tmp_path / "one") if r["event"] == "probe_epoch"]
    two = [r for r in read_log(tmp_path / "two") if r["event"] == "probe_epoch"][0]
    for task in FCOS_TASKS:
        assert two["magnitudes"][task] == pytest.approx(one["magnitudes"][task], rel=1e-4), task
    for task in FCOS_TASKS:
        assert steps(tmp_path / "two")[0]["losses"][task] == pytest.approx(
            steps(tmp_path / "one")[0]["losses"][task], rel=1e-5
        )


def fcos_options(frames: Path) -> list[str]:
    return [*COMMON, "--data-root", str(frames), *FCOS_ONLY, "--epochs", "3", "--batch-size", "2"]


@pytest.fixture(scope="module")
def torchrun_run(frames, tmp_path_factory) -> Path:
    """The README's torchrun command on two CPU processes, evaluated by rank 0 (the export, the
    same code as in one process, is left to tests/training/test_train_galw.py to save CI time)."""
    run = tmp_path_factory.mktemp("torchrun") / "run"
    code, stderr = finished(torchrun(*fcos_options(frames), "--no-export", "--out", str(run)))
    assert code == 0, stderr[-4000:]
    return run


def test_two_ranks_of_batch_one_train_as_one_process_of_batch_two(frames, torchrun_run, tmp_path):
    """(b) on the sampling-free losses: float-error agreement over 6 iterations."""
    for name in ("config.json", "train_log.jsonl", "metrics.json", "checkpoints/final.pth"):
        assert (torchrun_run / name).is_file(), name
    one = tmp_path / "one"
    assert (
        train_in_one_process([*fcos_options(frames), "--no-eval", "--no-export", "--out", str(one)])
        == 0
    )
    two_steps, one_steps = steps(torchrun_run), steps(one)
    assert [r["step"] for r in two_steps] == [r["step"] for r in one_steps] == list(range(1, 7))
    for two, single in zip(two_steps, one_steps, strict=True):
        assert two["loss"] == pytest.approx(single["loss"], rel=1e-5)
        assert two["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-5)
        for task in FCOS_TASKS:
            assert two["losses"][task] == pytest.approx(single["losses"][task], rel=1e-4, abs=1e-6)
    two_model, one_model = final_state(torchrun_run)["model"], final_state(one)["model"]
    for key, value in one_model.items():
        if key.startswith("roi_oim.") or "running_" in key or "num_batches" in key:
            continue  # filled from sampled ROIs / per-process BatchNorm statistics
        torch.testing.assert_close(two_model[key], value, rtol=1e-4, atol=1e-5, msg=key)


def worker_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes (its children with RANK set)."""
    ranks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent != launcher.pid:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
        rank = [entry for entry in environ if entry.startswith(b"RANK=")]
        if rank:
            ranks[int(rank[0].split(b"=")[1])] = int(stat.parent.name)
    return ranks


def test_ctrl_c_on_one_rank_stops_all_and_torchrun_resumes_the_same_run(
    frames, torchrun_run, tmp_path
):
    """(c): the resumed run ends with the uninterrupted run's weights and memories."""
    run = tmp_path / "run"
    options = [*fcos_options(frames), "--no-eval", "--no-export"]
    launcher = torchrun(*options, "--out", str(run))
    log = run / "train_log.jsonl"
    deadline = time.monotonic() + TIMEOUT
    while not (log.is_file() and log.read_text().strip()) and time.monotonic() < deadline:
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        time.sleep(0.1)
    os.kill(worker_pids(launcher)[1], signal.SIGINT)
    code, stderr = finished(launcher)
    assert code != 0, stderr[-3000:]  # the workers end with 130, as one process does
    assert "interrupted (Ctrl-C)" in stderr
    assert f"torchrun --nproc_per_node 2 -m training.galw --out {run} --resume" in stderr
    checkpoint = torch.load(run / "checkpoints" / "last.pth", weights_only=False)
    assert len(checkpoint["rng_ranks"]) == 2 and checkpoint["progress"]["iteration"] < 6

    code, stderr = finished(
        torchrun("--out", str(run), "--resume", "--workers", "0", "--no-progress")
    )
    assert code == 0, stderr[-4000:]
    whole, resumed = final_state(torchrun_run), final_state(run)
    for key, value in whole["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    expected = [(r["step"], r["losses"]) for r in steps(torchrun_run)]
    assert [(r["step"], r["losses"]) for r in steps(run)] == expected
    np.testing.assert_array_equal(
        [r["grad_norm"] for r in steps(run)], [r["grad_norm"] for r in steps(torchrun_run)]
    )


def test_each_process_takes_its_consecutive_share_of_every_global_batch():
    whole = list(EpochBatches(7, 4, seed=3, epoch=2))
    shares = [list(EpochBatches(7, 4, seed=3, epoch=2, rank=r, world_size=2)) for r in (0, 1)]
    assert [first + second for first, second in zip(*shares, strict=True)] == whole
    assert [len(share) for share in shares[0]] == [2, 2] and [len(s) for s in shares[1]] == [2, 1]
    # resumable by batch index; reshuffled per epoch
    assert list(EpochBatches(7, 4, 3, 2, start=1, rank=1, world_size=2)) == shares[1][1:]
    assert list(EpochBatches(7, 4, 3, 3, rank=0, world_size=2))[0] != shares[0][0]
    # a last batch of one image for two processes: the second borrows the epoch's first image
    last = [list(EpochBatches(5, 4, 0, 0, rank=r, world_size=2))[-1] for r in (0, 1)]
    order = list(EpochBatches(5, 4, 0, 0))
    assert last == [order[-1], [order[0][0]]]


def test_sync_batch_norm_is_refused_on_the_cpu_and_automatic_on_cuda():
    two = TrainingProcesses(rank=0, world_size=2)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    with pytest.raises(RunError, match="CUDA only"):
        _use_sync_batch_norm("on", two, cpu)
    assert not _use_sync_batch_norm("auto", two, cpu)
    assert _use_sync_batch_norm("auto", two, cuda) and not _use_sync_batch_norm("off", two, cuda)
    assert not _use_sync_batch_norm("on", TrainingProcesses(), cuda)  # one process: plain BN


def test_throughput_of_a_run_from_its_log(torchrun_run, capsys):
    rates = phase_throughput(torchrun_run / "train_log.jsonl")
    assert set(rates) == {"main"} and rates["main"] > 0
    assert throughput_main([str(torchrun_run)]) == 0
    assert "main" in capsys.readouterr().out


def test_probe_measures_the_norm_of_the_gradient_averaged_over_shards():
    """What each process's probe does with its all-reduce, with the other shard's gradient
    at hand: the magnitude of the whole batch's gradient, not a mean of the shards' norms."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3, generator=generator))
    shards = [torch.randn(4, 3, generator=generator) for _ in range(2)]

    def losses(inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"task": (inputs @ weight).pow(2).mean()}

    own, other = (torch.autograd.grad(losses(x)["task"], [weight])[0] for x in shards)
    probe = GradientProbe(
        [weight], ["task"], reduce_gradients=lambda tensors: [(tensors[0] + other) / 2, tensors[1]]
    )
    taken = probe.record(losses(shards[0]))["task"]
    whole = torch.autograd.grad(losses(torch.cat(shards))["task"], [weight])[0]
    assert taken == pytest.approx(float(whole.norm()), rel=1e-6)
    assert taken < (float(own.norm()) + float(other.norm())) / 2
