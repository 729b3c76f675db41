"""A stand-in task for the data-parallel modes: the stand-in regression data through a module with the parts FSDP
treats specially, a transformer layer (`BertLayer`, one FSDP unit), a BatchNorm with frozen statistics and a 0-dim
gate (both replicated). No fixed dropout anywhere: one process with batch 2B computes what two with batch B do."""
from __future__ import annotations

import torch
from torch import nn

from common.engine.task import Task
from common.model.bert_encoder import BertLayer
from tests.common.engine.standin_task import NegativeMSE, build_dataset


class FsdpStandInModule(nn.Module):
    """x [B, 6] -> 3 tokens of 2 features -> Linear(2, 16) -> BertLayer -> mean -> BatchNorm -> Linear(16, 1) x gate."""

    def __init__(self, dropout: float):
        super().__init__()
        self.embed = nn.Linear(2, 16)
        self.layer = BertLayer(16, 2, 32, "gelu", dropout, dropout)
        self.norm = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 1)
        self.gate = nn.Parameter(torch.tensor(1.0))  # 0-dim, as VL-BERT's visual_scale_* gates

    def train(self, mode: bool = True) -> FsdpStandInModule:
        """The BatchNorm keeps its running statistics (as VL-BERT's frozen ResNet BatchNorms): per-rank batch
        statistics would make two processes differ from one."""
        super().train(mode)
        self.norm.eval()
        return self

    @classmethod
    def from_config(cls, cfg, load_pretrained: bool = True) -> FsdpStandInModule:
        return cls(cfg.NETWORK.VLBERT.hidden_dropout_prob)  # nothing pretrained to load

    def forward(self, batch: dict) -> dict:
        tokens = self.embed(batch["x"].view(-1, 3, 2))
        hidden, _ = self.layer(tokens, torch.ones(tokens.shape[0], 1, 1, 3, dtype=torch.bool, device=tokens.device))
        prediction = self.head(self.norm(hidden.mean(1))) * self.gate
        loss = nn.functional.mse_loss(prediction, batch["y"])
        return {"loss": loss, "prediction": prediction}


FSDP_STANDIN = Task(
    name="fsdp_standin",
    add_defaults=lambda cfg: None,
    build_dataset=build_dataset,
    modules={"StandIn": FsdpStandInModule},
    build_metrics=lambda cfg: [NegativeMSE("NegMSE")],
)
