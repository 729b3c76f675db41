"""Fixtures of the retrieval tests: a tiny config over the small toy world and a checkpoint of it."""
from __future__ import annotations

import pytest
import torch
from retrieval_fixtures import TOY_CFG, tiny_overrides


@pytest.fixture(scope="session")
def retrieval_tiny_cfg(small_world_root, vocab_only_bert_dir):
    """Factory: retrieval_tiny_cfg(*extra_overrides) -> frozen config of the toy file shrunk to a tiny model."""
    from common.config import load_config
    from retrieval.config import add_retrieval_defaults

    def make(*extra: str):
        return load_config(TOY_CFG, tiny_overrides(vocab_only_bert_dir, small_world_root) + list(extra),
                           add_task_defaults=add_retrieval_defaults)

    return make


@pytest.fixture(scope="session")
def retrieval_tiny_checkpoint(retrieval_tiny_cfg, tmp_path_factory):
    """(config, path): a random tiny module saved as the original layout ({"state_dict": {"module.*": ...}});
    read-only, shared by the session."""
    from retrieval.task import RETRIEVAL

    cfg = retrieval_tiny_cfg()
    torch.manual_seed(0)
    module = RETRIEVAL.build_module(cfg)
    path = str(tmp_path_factory.mktemp("retrieval_ckpt") / "tiny_retrieval.model")
    torch.save({"state_dict": {"module." + k: v for k, v in module.state_dict().items()}}, path)
    return cfg, path
