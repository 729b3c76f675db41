"""The one short accelerator check of TRAIN.DATA_PARALLEL (run by bench/gpu_fsdp_check.sh; on CPU it runs as well).

1. Toy VQA (tiny model, scalar visual gates on) trained 2 epochs by `dist_run_single.sh N` under ddp, zero1 and
   fsdp + bf16 + async DCP checkpoints, N = the number of GPUs when there are at least 2 (NCCL), else 2 CPU
   processes (gloo); zero1 must equal ddp, fsdp must be close (bf16 in both), and the DCP folder must convert.
2. With a GPU: in one process and a one-rank NCCL group on cuda:0, the FSDP stand-in module under fully_shard with
   fp16 (FsdpGradScaler) and bf16 policies, and an async DCP save of CUDA shards read back: against the same module
   unsharded on the same GPU.
Prints one PASS/FAIL line per check and exits non-zero on any failure.
"""
import argparse
import copy
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
        "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
        "NETWORK.VLBERT.intermediate_size", "64", "NETWORK.VLBERT.visual_ln", "false", "TRAIN.END_EPOCH", "2",
        "DATASET.TRAIN_IMAGE_SET", "val2014", "TRAIN.BATCH_IMAGES", "8", "TRAIN.BF16", "true"]


def train(nproc: int, out: str, world: str, *overrides: str) -> None:
    coco = os.path.join(world, "coco")
    cmd = ["./scripts/dist_run_single.sh", str(nproc), "vqa/train_end2end.py", "cfgs/vqa/toy_cpu.yaml", out,
           "DATASET.DATASET_PATH", coco, "DATASET.ANSWER_VOCAB_FILE", os.path.join(coco, "vqa", "answers_vqa.txt"),
           "NETWORK.BERT_MODEL_NAME", os.path.join(world, "vocab_only"), *TINY, *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(overrides)}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}")


def final_weights(out: str) -> dict:
    from common.model.state_dict_io import read_checkpoint_file

    folder = os.path.join(out, "output/toy/vqa/toy_cpu/val2014_train")
    newest = sorted(n for n in os.listdir(folder) if n.startswith("vl-bert_toy_prec_vqa-0001"))[-1]
    return read_checkpoint_file(os.path.join(folder, newest))["state_dict"]


def check_training(world: str, tmp: str) -> list[tuple[str, bool, str]]:
    gpus = torch.cuda.device_count()
    nproc = gpus if gpus >= 2 else 2
    results = {}
    for mode, extra in (("ddp", []), ("zero1", []), ("fsdp", ["TRAIN.CHECKPOINT_FORMAT", "dcp",
                                                              "TRAIN.CHECKPOINT_ASYNC", "true"])):
        out = os.path.join(tmp, mode)
        train(nproc, out, world, "TRAIN.DATA_PARALLEL", mode, *extra)
        results[mode] = final_weights(out)
    zero_equal = all(torch.equal(results["zero1"][k], v) for k, v in results["ddp"].items())
    worst = max(float((results["fsdp"][k].float() - v.float()).abs().max()) for k, v in results["ddp"].items())
    where = f"{nproc} {'GPUs (nccl)' if gpus >= 2 else 'CPU processes (gloo)'}"
    return [(f"zero1 == ddp bitwise, {where}", zero_equal, ""),
            (f"fsdp (bf16, async DCP) ~ ddp, {where}", worst < 5e-2, f"max |diff| {worst:.2e} (bf16 gathers)")]


def check_one_gpu(tmp: str) -> list[tuple[str, bool, str]]:
    import torch.distributed as torch_dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.fsdp import fully_shard

    from common.engine.amp import MixedPrecision
    from common.engine.parallel import replicated_parameters
    from tests.common.engine.fsdp_standin import FsdpStandInModule

    torch.cuda.set_device(0)
    torch_dist.init_process_group("nccl", init_method=f"file://{tmp}/store", rank=0, world_size=1)
    checks = []
    for dtype in (torch.float16, torch.bfloat16):
        torch.manual_seed(0)
        plain = FsdpStandInModule(0.0).cuda()
        sharded = copy.deepcopy(plain)
        fully_shard(sharded, ignored_params=replicated_parameters(sharded))
        batch = {"x": torch.randn(8, 6, device="cuda"), "y": torch.randn(8, 1, device="cuda")}
        norms = []
        for model, is_sharded in ((plain, False), (sharded, True)):
            amp = MixedPrecision(torch.device("cuda"), dtype, 1024.0, sharded=is_sharded)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            with amp.autocast():
                amp.backward(model(batch)["loss"])
            norms.append(amp.unscale_and_clip(optimizer, list(model.parameters()), 1.0))
            amp.step(optimizer, norms[-1])
        checks.append((f"fully_shard + {dtype} autocast + scaler on cuda", bool(torch.allclose(*norms, rtol=1e-3)),
                       f"grad norms {float(norms[0]):.5f} / {float(norms[1]):.5f}"))
        future = dcp.async_save({"model": sharded.state_dict()}, checkpoint_id=os.path.join(tmp, str(dtype)))
        expected = {k: v.full_tensor().cpu() if hasattr(v, "full_tensor") else v.cpu()
                    for k, v in sharded.state_dict().items()}
        future.result()
        from common.model.dcp_files import load_whole

        got = load_whole(os.path.join(tmp, str(dtype)))["model"]
        checks.append((f"async DCP save of CUDA shards ({dtype} run)",
                       all(torch.equal(got[k], v) for k, v in expected.items()), ""))
    torch_dist.destroy_process_group()
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="/tmp/vlbert_memory_world")
    args = parser.parse_args(argv)
    from bench.memory_parallel import make_world

    make_world(args.world)
    with tempfile.TemporaryDirectory() as tmp:
        checks = check_training(args.world, tmp)
        if torch.cuda.is_available():
            checks += check_one_gpu(tmp)
        else:
            checks.append(("one-GPU checks", True, "skipped: no CUDA device"))
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}".rstrip())
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
