"""Tensor names and shapes shared by ``model_repo`` configs, the Python backend and clients."""

from __future__ import annotations

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2's hidden size

ITEM_ENCODER = "item_encoder"
ENCODER_INPUT_TEXT = "TEXT"  # BYTES [batch, 1]: UTF-8 text, tokenised in the backend
ENCODER_OUTPUT = "EMBEDDING"  # FP32 [batch, EMBEDDING_DIM], L2-normalised

BERT_SCORER = "bert_scorer"
"""The sequence BERT (``streamrec.model.sequence``): retrieval over the catalog and candidate scores."""
HISTORY = "HISTORY"  # BYTES [batch, -1]: the user's item ids, oldest first, padded with b""
HISTORY_TYPES = "HISTORY_TYPES"  # BYTES [batch, -1], optional: click | add_to_cart | purchase per item
TOP_K = "TOP_K"  # INT32 [batch, 1], optional: how many catalog items to return (0: none)
CANDIDATES = "CANDIDATES"  # BYTES [batch, -1], optional: item ids to score, padded with b""
TOPK_ITEMS = "TOPK_ITEMS"  # BYTES [batch, K]: best available items not in the history, best first
TOPK_SCORES = "TOPK_SCORES"  # FP32 [batch, K]
CANDIDATE_SCORES = "CANDIDATE_SCORES"  # FP32 [batch, C]: -inf for padding and unknown ids

# The optional text second stage (not in the default path: it did not add to the sequence model).
CROSS_ENCODER = "cross_encoder"  # the fine-tuned MiniLM cross-encoder (GPU)
CROSS_ENCODER_STUDENT = "cross_encoder_student"  # its distilled 2-layer student
CROSS_ENCODERS = (CROSS_ENCODER, CROSS_ENCODER_STUDENT)
SCORER_INPUT_CONTEXT = "CONTEXT"  # BYTES [batch, 1]: user context text
SCORER_INPUT_ITEM = "ITEM"  # BYTES [batch, 1]: candidate item text
SCORER_OUTPUT = "SCORE"  # FP32 [batch, 1]: relevance logit

# Optional pre-tokenised inputs (clients that tokenise themselves send these instead of
# CONTEXT/ITEM): INT64 [batch, sequence], padded with 0 and masked by ATTENTION_MASK.
SCORER_INPUT_IDS = "INPUT_IDS"
SCORER_INPUT_MASK = "ATTENTION_MASK"
SCORER_INPUT_TYPES = "TOKEN_TYPE_IDS"
