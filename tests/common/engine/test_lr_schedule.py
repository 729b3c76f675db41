"""LR schedules against hand-computed values (update t runs at base_lr x factor(t))."""
import pytest
import torch
from easydict import EasyDict

from common.engine.lr_schedule import build_lr_schedule


def make(schedule: str, **train):
    cfg = EasyDict(TRAIN=dict(LR_SCHEDULE=schedule, WARMUP=True, WARMUP_STEPS=4, WARMUP_FACTOR=0.0,
                              WARMUP_METHOD="linear", LR_STEP=(1.0, 2.0), LR_FACTOR=0.1, END_EPOCH=3, **train))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for group in optimizer.param_groups:
        group["initial_lr"] = 1.0
    return build_lr_schedule(cfg, optimizer, iters_per_epoch=10), optimizer


def lrs_over(schedule, steps):
    seen = []
    for _ in range(steps):
        seen.append(schedule.current_lrs()[0])
        schedule.step()
    return seen


def test_step_schedule_with_linear_warmup():
    schedule, _ = make("step")
    lrs = lrs_over(schedule, 25)
    # warmup from factor 0: t/4 for t < 4; milestones at updates 10 and 20 multiply by 0.1
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.01)


def test_triangle_schedule():
    schedule, _ = make("triangle")
    lrs = lrs_over(schedule, 31)
    # up over 4 updates, then down to 0 at 3 epochs x 10 updates: (30 - t) / 26
    assert lrs[2] == pytest.approx(0.5)
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[17] == pytest.approx(13 / 26)
    assert lrs[30] == pytest.approx(0.0)


def test_plateau_reduces_after_a_stall_and_survives_resume():
    schedule, optimizer = make("plateau")
    for score in (0.5, 0.6, 0.6):  # patience 1: the second epoch without improvement reduces
        schedule.after_epoch(score)
    assert schedule.current_lrs() == [pytest.approx(1.0)]
    schedule.after_epoch(0.6)
    assert schedule.current_lrs() == [pytest.approx(0.1)]
    saved = schedule.state_dict()
    fresh, fresh_opt = make("plateau")
    fresh.load_state_dict(saved)
    assert fresh.current_lrs() == [pytest.approx(0.1)]
    # cooldown 2 is restored too: two more stalls do not reduce again
    for score in (0.6, 0.6):
        fresh.after_epoch(score)
        schedule.after_epoch(score)
    assert fresh.current_lrs() == schedule.current_lrs()
