"""Tensor names and shapes shared by ``model_repo`` configs, the Python backend and clients."""

from __future__ import annotations

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2's hidden size

ITEM_ENCODER = "item_encoder"
ENCODER_INPUT_TEXT = "TEXT"  # BYTES [batch, 1]: UTF-8 text, tokenised in the backend
ENCODER_OUTPUT = "EMBEDDING"  # FP32 [batch, EMBEDDING_DIM], L2-normalised

BERT_SCORER = "bert_scorer"
SCORER_INPUT_CONTEXT = "CONTEXT"  # BYTES [batch, 1]: user context text
SCORER_INPUT_ITEM = "ITEM"  # BYTES [batch, 1]: candidate item text
SCORER_OUTPUT = "SCORE"  # FP32 [batch, 1]: relevance logit
