"""VL-BERT for VQA: `[CLS] question [SEP] [MASK] [SEP]` over every box; the output state at `[MASK]` is classified
over the answer vocabulary with a sigmoid per answer (BCE against the soft scores)."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.data.tokenizer import BertTokenizer
from common.model.bert_encoder import activation
from common.model.pretrained import find_bert_files, normalize_bert_keys, resolve_bert_path
from common.model.state_dict_io import load_state_dict_with_report, read_checkpoint_file
from common.model.task_base import VLBertTaskModule, gather_by_tags
from vqa.dataset import read_answer_vocab

log = logging.getLogger(__name__)
BERT_MLM_TRANSFORM = "cls.predictions.transform."


class PredictionTransform(nn.Module):
    """dense + activation + LayerNorm, laid out as BERT's `cls.predictions.transform` (and VL-BERT's
    `mlm_head.predictions.transform`) so both load into `final_mlp.0`."""

    def __init__(self, hidden: int, act: str):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.transform_act_fn = activation(act)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


def build_final_mlp(classifier_type: str, hidden: int, mlp_hidden: int, dropout: float, num_answers: int,
                    act: str) -> nn.Sequential:
    """`mlm`: transform, Dropout, Linear(h, V); `1fc`: Dropout, Linear(h, V);
    `2fc`: Dropout, Linear(h, mlp_hidden), ReLU, Dropout, Linear(mlp_hidden, V). Linear layers: Xavier, bias 0."""
    if classifier_type == "mlm":
        mlp = nn.Sequential(PredictionTransform(hidden, act), nn.Dropout(dropout), nn.Linear(hidden, num_answers))
    elif classifier_type == "1fc":
        mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_answers))
    elif classifier_type == "2fc":
        mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, mlp_hidden), nn.ReLU(inplace=True),
                            nn.Dropout(dropout), nn.Linear(mlp_hidden, num_answers))
    else:
        raise ValueError(f"NETWORK.CLASSIFIER_TYPE {classifier_type!r} is not supported for VQA "
                         f"(use 'mlm', '1fc' or '2fc')")
    for layer in mlp.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return mlp


def question_text(question: Tensor, cls_id: int, sep_id: int, mask_id: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """[B, L] question ids (left-aligned, padded 0) -> `[CLS] q [SEP] [MASK] [SEP]` rows.

    Returns ids [B, L + 4], token types (0 up to the first [SEP], 1 after), text mask [B, L + 4] and the
    [MASK] position [B].
    """
    batch, width = question.shape
    lengths = (question > 0).sum(1)
    ids = question.new_zeros(batch, width + 4)
    ids[:, 0] = cls_id
    ids[:, 1:width + 1] = question
    rows = torch.arange(batch, device=question.device)
    mask_pos = lengths + 2
    ids[rows, lengths + 1] = sep_id
    ids[rows, mask_pos] = mask_id
    ids[rows, lengths + 3] = sep_id
    t = torch.arange(width + 4, device=question.device).unsqueeze(0)
    text_mask = t <= (lengths + 3).unsqueeze(1)
    token_types = ((t >= mask_pos.unsqueeze(1)) & text_mask).long()
    return ids, token_types, text_mask, mask_pos


class ResNetVLBERTForVQA(VLBertTaskModule):
    """Outputs `label_logits` [B, V]; with `answer_scores` in the batch also `ans_loss` and `loss`."""

    def __init__(self, cfg, tokenizer: BertTokenizer, answer_vocab: list[str]):
        super().__init__(cfg)
        net = cfg.NETWORK
        if net.VLBERT.object_word_embed_mode != 2:
            raise ValueError("VQA uses NETWORK.VLBERT.object_word_embed_mode 2 (one shared object word vector)")
        self.answer_vocab = list(answer_vocab)
        self.tokenizer = tokenizer
        self.cls_id, self.sep_id, self.mask_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id
        self.no_grounding = bool(net.NO_GROUNDING)
        self.final_mlp = build_final_mlp(net.CLASSIFIER_TYPE, net.VLBERT.hidden_size, net.CLASSIFIER_HIDDEN_SIZE,
                                         net.CLASSIFIER_DROPOUT, len(self.answer_vocab), net.VLBERT.hidden_act)

    @classmethod
    def build(cls, cfg) -> ResNetVLBERTForVQA:
        """Construct with the BERT folder's wordpieces and DATASET.ANSWER_VOCAB_FILE's answers."""
        tokenizer = BertTokenizer.from_pretrained_dir(cfg.NETWORK.BERT_MODEL_NAME)
        return cls(cfg, tokenizer, read_answer_vocab(cfg.DATASET.ANSWER_VOCAB_FILE, int(cfg.DATASET.ANSWER_VOCAB_SIZE)))

    def load_pretrained_parts(self) -> None:
        """BERT (and the ResNet) as the original `init_weight`; then `mlm` takes BERT's MLM transform, and
        CLASSIFIER_PRETRAINED sets the answer rows from the word embeddings."""
        super().load_pretrained_parts()
        if self.cfg.NETWORK.CLASSIFIER_TYPE == "mlm":
            self.load_bert_mlm_transform()
        if self.cfg.NETWORK.CLASSIFIER_PRETRAINED:
            self.init_classifier_from_word_embeddings(self.tokenizer)

    # ---- initialisation ---------------------------------------------------------------------------------------
    def load_bert_mlm_transform(self) -> None:
        """final_mlp.0 <- BERT's `cls.predictions.transform.*` when the BERT checkpoint has it."""
        path = resolve_bert_path(self.cfg.NETWORK)
        if path is None:
            return
        weights_file, _ = find_bert_files(path)
        state = normalize_bert_keys(read_checkpoint_file(weights_file))
        state = {k[len(BERT_MLM_TRANSFORM):]: v for k, v in state.items() if k.startswith(BERT_MLM_TRANSFORM)}
        if not state:
            log.info("%s has no %s* weights: the VQA `mlm` transform keeps its random init", weights_file,
                     BERT_MLM_TRANSFORM)
            return
        load_state_dict_with_report(self.final_mlp[0], state, source=f"{weights_file} ({BERT_MLM_TRANSFORM}*)",
                                    allow_missing=False)

    @torch.no_grad()
    def init_classifier_from_word_embeddings(self, tokenizer: BertTokenizer) -> None:
        """Each answer's row of the last Linear = mean word embedding of its wordpieces (bias untouched)."""
        words = self.vlbert.word_embeddings.weight
        last = self.final_mlp[-1]
        if last.in_features != words.shape[1]:
            raise ValueError(f"NETWORK.CLASSIFIER_PRETRAINED needs a classifier input of size {words.shape[1]} (the "
                             f"word embedding size); the last layer takes {last.in_features} (CLASSIFIER_TYPE "
                             f"{self.cfg.NETWORK.CLASSIFIER_TYPE})")
        for row, answer in enumerate(self.answer_vocab):
            ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(answer)) or [tokenizer.unk_id]
            last.weight[row] = words[torch.tensor(ids, device=words.device)].mean(0).to(last.weight.dtype)

    # ---- forward ----------------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict[str, Tensor]:
        regions = self.encode_regions(batch)
        ids, token_types, text_mask, mask_pos = question_text(batch["question"], self.cls_id, self.sep_id,
                                                              self.mask_id)
        text_visual = gather_by_tags(regions.obj_reps, torch.zeros_like(ids))  # every token: the whole-image box
        if self.no_grounding:
            text_visual = torch.zeros_like(text_visual)
        states = self.vlbert(ids, token_types, text_visual, text_mask, self.object_inputs(regions.obj_reps),
                             regions.box_mask, output_all_encoded_layers=False, output_text_and_object_separately=True)
        at_mask = states.text[torch.arange(ids.shape[0], device=ids.device), mask_pos]
        logits = self.final_mlp(at_mask).float()
        outputs = {"label_logits": logits}
        if "answer_scores" in batch:
            target = batch["answer_scores"].float()
            loss = F.binary_cross_entropy_with_logits(logits, target) * target.shape[1]
            outputs.update(ans_loss=loss, loss=loss)
        return outputs
