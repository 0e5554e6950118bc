"""Tensor names and shapes shared by ``model_repo`` configs, the Python backend and clients."""

from __future__ import annotations

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2's hidden size

ITEM_ENCODER = "item_encoder"
ENCODER_INPUT_TEXT = "TEXT"  # BYTES [batch, 1]: UTF-8 text, tokenised in the backend
ENCODER_OUTPUT = "EMBEDDING"  # FP32 [batch, EMBEDDING_DIM], L2-normalised

BERT_SCORER = "bert_scorer"  # the fine-tuned MiniLM cross-encoder (GPU in production)
BERT_SCORER_STUDENT = "bert_scorer_student"  # the distilled 2-layer student (the CPU default)
SCORER_MODELS = (BERT_SCORER, BERT_SCORER_STUDENT)
SCORER_INPUT_CONTEXT = "CONTEXT"  # BYTES [batch, 1]: user context text
SCORER_INPUT_ITEM = "ITEM"  # BYTES [batch, 1]: candidate item text
SCORER_OUTPUT = "SCORE"  # FP32 [batch, 1]: relevance logit

# Optional pre-tokenised inputs (clients that tokenise themselves send these instead of
# CONTEXT/ITEM): INT64 [batch, sequence], padded with 0 and masked by ATTENTION_MASK.
SCORER_INPUT_IDS = "INPUT_IDS"
SCORER_INPUT_MASK = "ATTENTION_MASK"
SCORER_INPUT_TYPES = "TOKEN_TYPE_IDS"
