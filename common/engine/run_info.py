"""What a run was made with, written as the first record of every start in metrics.jsonl: the resolved config, the
git commit, package versions, world size and every rank's device name, and the peak rate MFU is measured against.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from typing import Any

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("torch", "torchvision", "numpy", "tokenizers", "safetensors", "tensorboardX", "timm", "webdataset",
            "pillow", "pycocotools", "pyyaml")


def git_state(root: str = REPO_ROOT) -> dict[str, Any]:
    """{"commit": sha or None, "dirty": bool or None}; None where the code is not a git checkout or git is absent."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    versions["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_model()} ({torch.get_num_threads()} threads)"


def all_device_names(device: torch.device) -> list[str]:
    """Every rank's device name, in rank order (a collective when distributed: every rank calls it)."""
    name = device_name(device)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [name]
    names: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(names, name)
    return names


def run_header(config: dict[str, Any], cfg_name: str, world_size: int, devices: list[str],
               peak_flops: float | None, peak_source: str) -> dict[str, Any]:
    """The "run" record (see common/engine/sinks.py)."""
    return {"kind": "run", "time": time.time(), "cfg_name": cfg_name, "world_size": world_size, "devices": devices,
            "peak_tflops": None if peak_flops is None else peak_flops / 1e12, "peak_source": peak_source,
            "git": git_state(), "packages": package_versions(), "config": config}
