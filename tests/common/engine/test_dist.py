"""Launch-environment parsing (torchrun and SLURM) and the single-process fallback."""
import os
import stat

import pytest
import torch

from common.engine import dist


def test_torchrun_variables_are_read(monkeypatch):
    for key, value in {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7",
                       "MASTER_PORT": "1234"}.items():
        monkeypatch.setenv(key, value)
    assert dist.read_launch_env() == {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7",
                                      "MASTER_PORT": "1234"}
    assert dist.launched_distributed()


def test_slurm_variables_and_master_from_scontrol(monkeypatch, tmp_path):
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\n# stands in for `scontrol show hostname LIST`\necho gpu-a01\necho gpu-a02\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    for key, value in {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5",
                       "SLURM_JOB_NODELIST": "gpu-a[01-02]"}.items():
        monkeypatch.setenv(key, value)
    assert dist.read_launch_env(slurm=True) == {"RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "5",
                                                "MASTER_ADDR": "gpu-a01", "MASTER_PORT": "29500"}


def test_slurm_flag_without_slurm_variables_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    with pytest.raises(RuntimeError, match="SLURM_PROCID"):
        dist.read_launch_env(slurm=True)


def test_one_process_without_launcher_has_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = dist.setup()
    assert (env.rank, env.world_size, env.is_main, env.is_distributed) == (0, 1, True, False)
    assert not dist.is_initialized()
    assert dist.broadcast_object({"a": 1}) == {"a": 1} and dist.all_gather_object(3) == [3]
    assert dist.all_reduce_mean(torch.tensor([2.0])).tolist() == [2.0]
