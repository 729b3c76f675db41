"""The evaluation path: checkpoints with or without `module.`, outputs in dataset order, each sample once, gathered on
rank 0 only, batches that do not depend on the world size, and a test script under two processes writing the file
one process writes."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from common.config import load_config
from common.data.loader import DealtBatches, build_loader, make_inference_loader
from common.engine import dist
from common.engine.dist import DistEnv
from common.engine.evaluate import load_module_for_inference, predict
from common.engine.trainer import fit
from tests.common.engine import standin_eval
from tests.common.engine.standin_task import STANDIN, StandInModule
from tests.common.engine.test_engine import YAML
from tests.script_runs import files_under, run_launcher


def standin_cfg(out):
    return load_config(YAML, ["OUTPUT_PATH", str(out), "TRAIN.END_EPOCH", "1"])


def test_checkpoints_with_and_without_module_prefix_load_alike(tmp_path):
    cfg = standin_cfg(tmp_path)
    fit(STANDIN, cfg, DistEnv(), "standin")
    path = tmp_path / "standin/train_train/standin-0000.model"
    payload = torch.load(path, weights_only=True)
    prefixed = tmp_path / "prefixed.model"
    torch.save({"state_dict": {f"module.{k}": v for k, v in payload["state_dict"].items()}}, prefixed)
    for source in (path, prefixed):
        module = load_module_for_inference(STANDIN, cfg, str(source))
        assert not module.training
        for key, value in module.state_dict().items():
            assert torch.equal(value, payload["state_dict"][key]), (source, key)


def test_single_process_outputs_follow_dataset_order(tmp_path):
    cfg = standin_cfg(tmp_path)
    module = STANDIN.build_module(cfg).eval()
    loader = build_loader(STANDIN, cfg, "val", DistEnv())
    outputs = predict(module, loader, show_progress=False)
    dataset = loader.dataset
    assert [o["index"] for o in outputs] == list(range(len(dataset)))
    expected = module.net(dataset.x)
    torch.testing.assert_close(torch.stack([o["prediction"] for o in outputs]), expected.detach())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inference_worker(rank: int, world: int, port: int, out_dir: str, result_path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    env = dist.setup(distributed=True)
    try:
        cfg = standin_cfg(out_dir)
        torch.manual_seed(0)
        module = STANDIN.build_module(cfg).eval()
        outputs = predict(module, build_loader(STANDIN, cfg, "val", env), show_progress=False)
        if rank == 0:
            torch.save(outputs, result_path)
        elif outputs is not None:
            raise AssertionError(f"rank {rank} received the gathered outputs: only rank 0 should")
    finally:
        dist.teardown()


@pytest.mark.slow
def test_two_ranks_gather_every_sample_once_in_order(tmp_path):
    result = tmp_path / "outputs.pt"
    mp.spawn(_inference_worker, args=(2, _free_port(), str(tmp_path), str(result)), nprocs=2, join=True)
    outputs = torch.load(result, weights_only=True)
    assert [o["index"] for o in outputs] == list(range(11))  # 6 + 5 samples, none duplicated
    torch.manual_seed(0)
    module = STANDIN.build_module(standin_cfg(tmp_path)).eval()
    x = STANDIN.build_dataset(None, "val").x
    torch.testing.assert_close(torch.stack([o["prediction"] for o in outputs]), module.net(x).detach())


def test_dealt_batches_are_the_one_process_batches():
    """11 items in batches of 3: one process cuts [0-2] [3-5] [6-8] [9-10]; N processes deal those same batches."""
    one = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    assert list(DealtBatches(11, 3)) == one
    assert [list(DealtBatches(11, 3, 2, r)) for r in range(2)] == [[one[0], one[2]], [one[1], one[3]]]
    assert [len(DealtBatches(11, 3, 3, r)) for r in range(3)] == [2, 1, 1]
    assert list(DealtBatches(2, 3, 2, 1)) == []  # a rank may get nothing: the gather still completes
    with pytest.raises(ValueError, match="rank 2"):
        DealtBatches(11, 3, 2, 2)


def test_inference_loader_batches_do_not_depend_on_the_world_size(tmp_path):
    cfg = standin_cfg(tmp_path)
    dataset = STANDIN.build_dataset(cfg, "val")
    one = [b["index"].tolist() for b in make_inference_loader(dataset, cfg, "val", DistEnv(), batch_size=4)]
    two = [[b["index"].tolist() for b in make_inference_loader(dataset, cfg, "val", DistEnv(rank=r, world_size=2),
                                                                batch_size=4)] for r in range(2)]
    assert one == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert two == [[one[0], one[2]], [one[1]]]


def test_standin_eval_script_two_processes_write_the_one_process_file(tmp_path):
    """tests/common/engine/standin_eval.py (test_main) under dist_run_single.sh 2 writes the file that one process
    writes, to the last bit of every prediction; the file holds each sample once, in order."""
    torch.manual_seed(0)
    module = StandInModule(0.0)
    ckpt = tmp_path / "standin.model"
    torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, ckpt)
    flags = ["--ckpt", str(ckpt), "--split", "heldout", "--bs", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the launched processes
    try:
        result = standin_eval.main(["--cfg", YAML, *flags, "--result-path", str(tmp_path / "one")])
    finally:
        torch.set_num_threads(threads)
    output = run_launcher(2, "tests/common/engine/standin_eval.py", YAML, tmp_path / "model",
                          [*flags, "--result-path", str(tmp_path / "two")])
    one, two = files_under(tmp_path / "one"), files_under(tmp_path / "two")
    assert "in 2 process(es)" in output
    assert result.path == str(tmp_path / "one" / "standin_standin_heldout.json")
    assert list(one) == ["standin_standin_heldout.json"] and one == two
    rows = json.loads(one["standin_standin_heldout.json"])
    x = STANDIN.build_dataset(None, "test").x
    with torch.no_grad():
        expected = module.eval().net(x)[:, 0].tolist()
    assert [r[0] for r in rows] == list(range(11))
    assert [float(r[1]) for r in rows] == pytest.approx(expected, rel=1e-6)
