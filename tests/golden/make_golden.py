#!/usr/bin/env python3
"""Golden outputs of HF transformers' LongcatFlashForCausalLM for a LongCat-Flash checkpoint.

Kept out of CI: it needs tests/golden/setup_venv.sh's venv (torch, transformers). Its output is
committed as data and read by the C++ golden tests.

Usage
-----
  make_golden.py --model DIR --out OUTDIR [--prompts-file FILE] [--max-new-tokens 32]
                 [--logits-budget-bytes 1000000] [--keep-last 64]
                 [--check-from-pretrained]
  make_golden.py --write-test-checkpoint DIR [--dtype f32|bf16|fp8] [--shards N]
                 [--tokenizer PATH] [--seed N]

DIR is a checkpoint in HF layout: config.json, model.safetensors (or model-*.safetensors with
model.safetensors.index.json), tokenizer.json, tokenizer_config.json. Tensor names are those of
shared/design/longcat-flash.md section 8. Tensor dtypes: F32, BF16, or F8_E4M3 for the Linear
weights (`*_proj.weight`) with a `<name>_scale_inv` companion (fp32,
[ceil(out/128), ceil(in/128)], i.e. `<module>.weight_scale_inv`); the router classifier,
e_score_correction_bias, norms, embeddings and lm_head are never fp8.
--prompts-file: a JSON array of strings (plain text, not chat). Default: 4 built-in prompts,
the last one cut to 250..400 tokens.
--write-test-checkpoint: writes a tiny random checkpoint of this layout (development and
self-test only: the committed golden data is made from `longcat mkmodel` output).

Reference computation
---------------------
* Weights: BF16 upcast to fp32 exactly; F8_E4M3 decoded in numpy (own e4m3fn table, checked
  against torch) and multiplied blockwise by weight_scale_inv in fp32 (partial edge blocks use
  the scale of their block), giving fp32. "HF in fp32 on the bf16-rounded (or dequantized)
  weights".
* The model is built from config.json (LongcatFlashConfig.from_pretrained) and the weights are
  loaded here, not by from_pretrained: HF's loader re-packs experts into fused tensors of a
  different row count (see below). Every checkpoint tensor must be used and none may be
  missing (checked). Experts: HF's mlp.experts.gate_up_proj[e] = cat(gate_proj[e], up_proj[e])
  on the output dim, down_proj[e] = down_proj[e]; gate_up_proj rows >= n_routed_experts (zero
  experts) are never read and are set to 0.
* CPU, float32, attn_implementation="eager", no KV cache (use_cache=False), torch seed 0.

Outputs (OUTDIR)
----------------
golden.safetensors (all fp32), for each prompt k:
  p{k}.hidden.{j}  [T, hidden], j = 0..num_layers. j = 0: embedding output; j >= 1: output of
                   decoder layer j-1 BEFORE model.norm (forward hooks on the modules).
  p{k}.final_norm  [T, hidden]  model.norm output (input of lm_head)
  p{k}.logits      [R, vocab]   rows logits_positions[0] .. logits_positions[1]-1
  p{k}.mtp_logits  [R', vocab]  MTP rows mtp_logits_positions[0] .. [1]-1 (row i as below)
  A prompt whose full [T, vocab] fp32 logits exceed --logits-budget-bytes keeps only its last
  --keep-last rows of logits (and of mtp_logits); golden.json records the row ranges.
golden.json: versions, config summary, checkpoint dtypes, prompts (text, ids with the BOS the
  tokenizer's post-processor adds, stored row ranges), the tensor conventions, the MTP
  cross-check errors, and the greedy trace of prompt 0: HF's own greedy continuation (up to
  --max-new-tokens tokens, full recompute each step, stops after EOS id 2 if produced), then a
  teacher-forced forward over prompt+continuation giving, at each of the continuation's
  positions, the top-1 id, top-1 minus top-2 logit, and max|logit|; greedy_text = decode of
  the generated ids with skip_special_tokens=True.

MTP convention (numpy, independent of transformers, which ignores model.mtp.*)
-----------------------------------------------------------------------------
Row i (i = 0..T-2) predicts token i+2. Input: e = model.mtp.embed_tokens.weight[token[i+1]],
h = the main model's FINAL-NORMED hidden state at position i (model.norm output, the lm_head
input). z = eh_proj(concat[enorm.m(e), hnorm.m(h)]); z += MLA(input_layernorm(z)) with RoPE
position i, causal over MTP rows 0..i (its own keys only); z += MLP(post_attention_layernorm(z))
(dense SwiGLU); logits = lm_head(model.mtp.norm(z)) with the main lm_head. MLA exactly as HF's
(below): q_a/kv_a layernorm eps 1e-6, other norms rms_norm_eps, q*sqrt(hidden/q_lora_rank),
c_kv*sqrt(hidden/kv_lora_rank), interleaved-pair RoPE with rope_theta on qk_rope_head_dim,
scale qk_head_dim**-0.5. Computed in float64 from the fp32 weights, stored as fp32. The same
numpy MLA/MLP/RMSNorm code is checked against HF's layer-0 self_attn[0], mlps[0] and
input_layernorm[0] on the longest prompt, and the whole numpy MTP against the same MTP built
from HF's own modules (LongcatFlashMLA/MLP/RMSNorm, rotary embedding, explicit causal mask)
in fp32 torch (relative max error max|a-b|/max|b| <= 1e-5 asserted; values in golden.json
mtp.crosscheck).

Findings about HF transformers (5.24.0; paths under site-packages/transformers/)
---------------------------------------------------------------------------------
* hidden_states (output_hidden_states=True) has num_layers+1 entries, not 2*num_layers+1:
  the recorder hooks LongcatFlashDecoderLayer with num_hidden_layers_key="num_layers"
  (models/longcat_flash/modeling_longcat_flash.py:540). Entry 0 is the input of layer 0 = the
  embedding output (utils/output_capturing.py:138-142); entries 1..L-1 are the outputs of layers
  0..L-2; the LAST entry is overwritten with last_hidden_state, i.e. AFTER model.norm
  (utils/output_capturing.py:369-379, tie_last_hidden_states=True). So hidden_states[L] is not
  the last layer's raw output; this script hooks the modules instead, and asserts the above at
  run time.
* q_a_layernorm / kv_a_layernorm: LongcatFlashRMSNorm(dim) without eps (modeling:341, :349),
  class default eps=1e-6 (modeling:49); the decoder-layer and final norms use rms_norm_eps
  (modeling:465-469, :570). RMSNorm = weight * (x * rsqrt(mean(x^2) + eps)) (modeling:57-62).
* RoPE: pairs (x0,x1),(x2,x3),... rotated by inv_freq[j] = theta^(-2j/d); the result is written
  de-interleaved, [rotated evens | rotated odds] (apply_rotary_pos_emb_interleave,
  modeling:308-316), for q and k alike, so q.k is unchanged. inv_freq/cos/sin in fp32
  (modeling:101, :106-111).
* RoPE dimension d comes from config.head_dim, NOT qk_rope_head_dim: `dim = getattr(config,
  "head_dim", None) or hidden_size // num_attention_heads` (modeling:97), and head_dim defaults
  to 64 (configuration_longcat_flash.py:106). It only works because the real model has
  qk_rope_head_dim = 64. A config without head_dim (or with another value) and a
  qk_rope_head_dim != 64 crashes HF; this script sets head_dim = qk_rope_head_dim and records
  it in golden.json (reference.head_dim_override). head_dim is otherwise unused (modeling:573).
* mla_scale_q_lora / mla_scale_kv_lora config flags are NOT read: HF always multiplies q_nope
  and q_rope by sqrt(hidden/q_lora_rank) and the kv_a_layernorm output by
  sqrt(hidden/kv_lora_rank) (modeling:363-364, applied :405-408). This script refuses a
  config with either flag false. Softmax scale = qk_head_dim**-0.5 (modeling:362), YaRN mscale
  only for a non-default rope type (modeling:272-278).
* Router (modeling:142-155): fp32 logits (classifier.weight cast to fp32), softmax over
  n_routed_experts + zero_expert_num; top-k on softmax + e_score_correction_bias
  (sorted=False); weights = UNBIASED softmax probs * routed_scaling_factor for ALL selected
  experts, zero experts included; no renormalisation (norm_topk_prob not read). Zero experts
  (index >= n_routed_experts) are identity: out += weight * x (modeling:195-196, :202).
  router_bias is read by getattr, default False (modeling:138). classifier.weight is in
  _keep_in_fp32_modules (modeling:545-547).
* Experts are fused in memory: gate_up_proj [n_routed_experts + zero_expert_num, 2*I, hidden]
  (zero-expert rows allocated but unused) and down_proj [n_routed_experts, hidden, I]
  (modeling:170-175); the checkpoint per-expert tensors are converted by the qwen2_moe rule
  (conversion_mapping.py:64 maps longcat_flash to the "qwen2_moe" rule at :1386:
  MergeModulelist(dim=0) + Concatenate(dim=1), gate first). The stacked checkpoint has
  n_routed_experts rows where HF allocates n_routed+zero rows for gate_up_proj, so
  from_pretrained FAILS on a LongCat checkpoint ("MISMATCH ... Reinit due to size mismatch -
  ckpt [8, 2I, H] vs model [12, 2I, H]"); with ignore_mismatched_sizes=True it loads and every
  other tensor is identical to this script's loading (--check-from-pretrained: 57 of 59 on the
  test checkpoint; the 2 differing are the re-initialised gate_up_proj).
* Config field names HF reads: vocab_size, hidden_size, num_layers (num_hidden_layers is a
  property = 2*num_layers, configuration_longcat_flash.py:116-122), num_attention_heads,
  num_key_value_heads (default = heads, :125-126), hidden_act, max_position_embeddings,
  rms_norm_eps, tie_word_embeddings (default False), rope_theta / rope_scaling (moved into
  rope_parameters, modeling_rope_utils.py:776-794; default_theta 1e7,
  configuration_longcat_flash.py:63), attention_bias, attention_dropout, ffn_hidden_size,
  q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, head_dim, v_head_dim,
  qk_head_dim (default nope+rope, :128-129), moe_topk, n_routed_experts, zero_expert_num,
  expert_ffn_hidden_size, routed_scaling_factor (:84-114); aliases (attribute_map, :57-62):
  num_local_experts -> n_routed_experts, num_experts_per_tok -> moe_topk, intermediate_size ->
  ffn_hidden_size, moe_intermediate_size -> expert_ffn_hidden_size. Not read: mla_scale_*,
  zero_expert_type, attention_method, norm_topk_prob, router_dtype.
* model.mtp.* is ignored on load (_keys_to_ignore_on_load_unexpected, modeling:544, :642).
"""
import argparse
import json
import math
import os
import re
import shutil
import sys

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from safetensors import safe_open
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import save_file as torch_save_file
from tokenizers import Tokenizer
from transformers import LongcatFlashConfig, LongcatFlashForCausalLM

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EOS_ID = 2
MLA_LORA_NORM_EPS = 1e-6  # HF's LongcatFlashRMSNorm default, used for q_a/kv_a layernorm
CROSSCHECK_TOL = 1e-5

DEFAULT_PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Copyright (C) 2007 Free Software Foundation, Inc. Everyone is permitted to copy and "
    "distribute verbatim copies of this license document, but changing it is not allowed.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 40))\n",
]
LONG_PROMPT_SOURCE = (
    "A serving engine for a mixture-of-experts model has to keep many requests in flight at "
    "once. Each request arrives as plain text, is turned into tokens, and waits in a queue "
    "until the scheduler admits it. The prefill step reads the whole prompt and fills the "
    "key-value cache; the decode steps then produce one token at a time. Every token is sent "
    "to a few experts chosen by the gate, and some of the chosen experts do no work at all: "
    "they pass the input through unchanged. This keeps the average cost per token low while "
    "the model stays large. The attention layers compress keys and values into a small latent "
    "vector, so the cache for a long context fits in memory. When the batch is small, the "
    "engine overlaps communication with computation inside a single batch, so that the "
    "network transfers for the experts hide behind the dense layers. A speculative draft "
    "layer guesses the next token, and the main model checks the guess in the following step; "
    "when the guess is right, two tokens come out of one step. The gateway streams the text "
    "back to the user as soon as each piece is ready, stops at the end-of-sequence token or at "
    "a stop string, and reports the usage when the request is done. Operators watch the queue "
    "depth, the time to the first token, the time between tokens, and the share of tokens "
    "that were routed to real experts, and they add or remove expert workers as the load "
    "changes through the day. Each of these parts can fail on its own, so every message has a "
    "deadline, every worker reports its health, and a request that loses its worker is either "
    "retried or ended with a clear error instead of hanging forever. "
) * 4
LONG_MIN, LONG_MAX, LONG_TARGET = 250, 400, 320


# ----------------------------------------------------------------------------- checkpoint I/O

ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
             torch.float8_e4m3fn: "F8_E4M3"}


def fp8_e4m3fn_table():
    """float32 value of each of the 256 float8_e4m3fn bit patterns (bias 7, no inf, S.1111.111 = NaN)."""
    table = np.empty(256, dtype=np.float32)
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        exp = (b >> 3) & 0xF
        man = b & 0x7
        if exp == 0xF and man == 0x7:
            table[b] = np.nan
        elif exp == 0:
            table[b] = sign * (man / 8.0) * 2.0 ** -6
        else:
            table[b] = sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)
    return table


FP8_TABLE = fp8_e4m3fn_table()


def check_fp8_table():
    bits = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
    ref = bits.to(torch.float32).numpy()
    ok = np.array_equal(np.isnan(ref), np.isnan(FP8_TABLE)) and \
        np.array_equal(ref[~np.isnan(ref)], FP8_TABLE[~np.isnan(FP8_TABLE)])
    assert ok, "own float8_e4m3fn decode table disagrees with torch"


def is_linear_weight(name):
    return name.endswith("_proj.weight") or name.endswith("_proj_with_mqa.weight")


class Checkpoint:
    """All tensors of a checkpoint directory, with use tracking and fp32 conversion."""

    def __init__(self, model_dir):
        self.dir = model_dir
        index_path = os.path.join(model_dir, "model.safetensors.index.json")
        single = os.path.join(model_dir, "model.safetensors")
        if os.path.exists(index_path):
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
            self.sharded = True
        elif os.path.exists(single):
            weight_map, files, self.sharded = None, ["model.safetensors"], False
        else:
            raise SystemExit(f"{model_dir}: no model.safetensors nor model.safetensors.index.json")
        self.tensors = {}
        for fn in files:
            with safe_open(os.path.join(model_dir, fn), framework="pt") as f:
                for k in f.keys():
                    if k in self.tensors:
                        raise SystemExit(f"tensor {k} appears in more than one shard")
                    if weight_map is not None and weight_map.get(k) != fn:
                        raise SystemExit(f"tensor {k} is in {fn} but the index says "
                                         f"{weight_map.get(k)}")
                    self.tensors[k] = f.get_tensor(k)
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self.tensors))
            if missing:
                raise SystemExit(f"index lists tensors absent from the shards: {missing[:5]}")
        self.used = set()
        self.fp8_round_bf16 = False
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        qc = self.config.get("quantization_config") or {}
        self.block = tuple(qc.get("weight_block_size", (128, 128)))
        self.validate_dtypes()

    def dtype_name(self, name):
        t = self.tensors[name]
        if t.dtype not in ST_DTYPES:
            raise SystemExit(f"{name}: unsupported dtype {t.dtype}")
        return ST_DTYPES[t.dtype]

    def validate_dtypes(self):
        for name in self.tensors:
            dt = self.dtype_name(name)
            if name.endswith("_scale_inv"):
                base = name[: -len("_scale_inv")]
                if base not in self.tensors or self.dtype_name(base) != "F8_E4M3":
                    raise SystemExit(f"{name}: scale without an F8_E4M3 weight {base}")
                if dt != "F32":
                    raise SystemExit(f"{name}: scale must be F32, is {dt}")
            elif dt == "F8_E4M3":
                if not is_linear_weight(name):
                    raise SystemExit(f"{name}: only Linear weights may be F8_E4M3")
                if name + "_scale_inv" not in self.tensors:
                    raise SystemExit(f"{name}: F8_E4M3 without {name}_scale_inv")

    def weight_names(self):
        return sorted(n for n in self.tensors if not n.endswith("_scale_inv"))

    def dtype_summary(self):
        counts = {}
        for n in self.tensors:
            dt = self.dtype_name(n)
            counts[dt] = counts.get(dt, 0) + 1
        linear = sorted({self.dtype_name(n) for n in self.weight_names() if is_linear_weight(n)})
        return counts, linear

    def f32(self, name):
        """The tensor as an fp32 numpy array (fp8 dequantized blockwise); marks it used."""
        if name not in self.tensors:
            raise SystemExit(f"checkpoint lacks tensor {name}")
        self.used.add(name)
        t = self.tensors[name]
        if t.dtype == torch.float8_e4m3fn:
            scale_name = name + "_scale_inv"
            self.used.add(scale_name)
            w = FP8_TABLE[t.view(torch.uint8).numpy()]
            s = self.tensors[scale_name].numpy().astype(np.float32)
            out_dim, in_dim = w.shape
            bo, bi = self.block
            want = (math.ceil(out_dim / bo), math.ceil(in_dim / bi))
            if s.shape != want:
                raise SystemExit(f"{scale_name}: shape {s.shape}, expected {want}")
            full = np.repeat(np.repeat(s, bo, axis=0), bi, axis=1)[:out_dim, :in_dim]
            out = (w * full).astype(np.float32)
            if self.fp8_round_bf16:
                out = torch.from_numpy(out).to(torch.bfloat16).to(torch.float32).numpy()
            return out
        return t.to(torch.float32).numpy().copy()


# ----------------------------------------------------------------------------- names and config

def expected_main_names(num_layers, n_routed_experts):
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for l in range(num_layers):
        p = f"model.layers.{l}"
        for i in (0, 1):
            names += [f"{p}.input_layernorm.{i}.weight", f"{p}.post_attention_layernorm.{i}.weight"]
            names += [f"{p}.self_attn.{i}.{m}.weight" for m in
                      ("q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa",
                       "kv_a_layernorm", "kv_b_proj", "o_proj")]
            names += [f"{p}.mlps.{i}.{m}.weight" for m in ("gate_proj", "up_proj", "down_proj")]
        names += [f"{p}.mlp.router.classifier.weight", f"{p}.mlp.router.e_score_correction_bias"]
        for e in range(n_routed_experts):
            names += [f"{p}.mlp.experts.{e}.{m}.weight" for m in ("gate_proj", "up_proj",
                                                                  "down_proj")]
    return names


MTP = "model.mtp.layers.0"


def expected_mtp_names():
    names = ["model.mtp.embed_tokens.weight", "model.mtp.norm.weight",
             f"{MTP}.eh_proj.weight", f"{MTP}.enorm.m.weight", f"{MTP}.hnorm.m.weight",
             f"{MTP}.input_layernorm.weight", f"{MTP}.post_attention_layernorm.weight"]
    names += [f"{MTP}.self_attn.{m}.weight" for m in
              ("q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm",
               "kv_b_proj", "o_proj")]
    names += [f"{MTP}.transformer_layer.mlp.{m}.weight" for m in ("gate_proj", "up_proj",
                                                                   "down_proj")]
    return names


def check_config(raw):
    """Refuse configs whose meaning HF would silently change."""
    problems = []
    for flag in ("mla_scale_q_lora", "mla_scale_kv_lora"):
        if raw.get(flag, True) is not True:
            problems.append(f"{flag}={raw[flag]!r}: HF ignores it and always scales")
    if raw.get("zero_expert_type", "identity") != "identity":
        problems.append("zero_expert_type must be identity")
    for flag in ("router_bias", "attention_bias", "norm_topk_prob", "tie_word_embeddings"):
        if raw.get(flag, False):
            problems.append(f"{flag} must be false (no tensors / semantics for it)")
    if raw.get("hidden_act", "silu") != "silu":
        problems.append("hidden_act must be silu")
    if raw.get("rope_scaling"):
        problems.append("rope_scaling is not supported by the numpy MTP reference")
    if problems:
        raise SystemExit("config.json: " + "; ".join(problems))


def load_hf_config(ckpt):
    raw = ckpt.config
    check_config(raw)
    cfg = LongcatFlashConfig.from_pretrained(ckpt.dir)
    head_dim_in_file = raw.get("head_dim")
    override = None
    if cfg.head_dim != cfg.qk_rope_head_dim:
        override = {"config_head_dim": head_dim_in_file, "hf_default_head_dim": cfg.head_dim,
                    "used": cfg.qk_rope_head_dim}
        cfg.head_dim = cfg.qk_rope_head_dim
    cfg._attn_implementation = "eager"
    assert cfg.rope_parameters.get("rope_type", "default") == "default"
    return cfg, override


def build_hf_model(ckpt, cfg):
    torch.manual_seed(0)
    model = LongcatFlashForCausalLM(cfg).to(torch.float32).eval()

    # state dict in HF's in-memory layout
    n_exp, n_zero = cfg.n_routed_experts, cfg.zero_expert_num or 0
    inter = cfg.expert_ffn_hidden_size
    sd = {}
    for name in expected_main_names(cfg.num_layers, n_exp):
        if ".mlp.experts." in name:
            continue
        sd[name] = torch.from_numpy(ckpt.f32(name))
    for l in range(cfg.num_layers):
        p = f"model.layers.{l}.mlp.experts"
        gate_up = np.zeros((n_exp + n_zero, 2 * inter, cfg.hidden_size), dtype=np.float32)
        down = np.zeros((n_exp, cfg.hidden_size, inter), dtype=np.float32)
        for e in range(n_exp):
            gate_up[e, :inter] = ckpt.f32(f"{p}.{e}.gate_proj.weight")
            gate_up[e, inter:] = ckpt.f32(f"{p}.{e}.up_proj.weight")
            down[e] = ckpt.f32(f"{p}.{e}.down_proj.weight")
        sd[f"{p}.gate_up_proj"] = torch.from_numpy(gate_up)
        sd[f"{p}.down_proj"] = torch.from_numpy(down)
    own = model.state_dict()
    for k, v in sd.items():
        if k not in own:
            raise SystemExit(f"HF model has no parameter {k}")
        if tuple(own[k].shape) != tuple(v.shape):
            raise SystemExit(f"{k}: checkpoint shape {tuple(v.shape)}, HF {tuple(own[k].shape)}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    if missing:
        raise SystemExit(f"HF parameters not provided by the checkpoint: {missing}")
    if model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr():
        raise SystemExit("lm_head is tied to embed_tokens; expected untied")
    for name, prm in list(model.named_parameters()) + list(model.named_buffers()):
        if prm.dtype != torch.float32:
            raise SystemExit(f"{name} is {prm.dtype}, expected float32")
    return model


# ----------------------------------------------------------------------------- numpy reference

def rms_norm(x, w, eps):
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(w, np.float64) * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_cos_sin(positions, dim, theta):
    """cos/sin [T, dim/2] for the pair j angle pos * theta^(-2j/dim), fp32 like HF."""
    j = np.arange(0, dim, 2, dtype=np.float64)
    inv_freq = (1.0 / (theta ** (j / dim))).astype(np.float32)
    ang = (np.asarray(positions, dtype=np.float32)[:, None] * inv_freq[None, :]).astype(np.float32)
    return np.cos(ang.astype(np.float64)), np.sin(ang.astype(np.float64))


def rope_interleaved(x, cos, sin):
    """x [..., T, d] (or [T, heads, d] via broadcasting by caller); pairs (2j, 2j+1)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x2 * cos + x1 * sin
    return out


class NumpyMLA:
    def __init__(self, get, prefix, c):
        self.c = c
        self.wqa = get(f"{prefix}.q_a_proj.weight").astype(np.float64)
        self.nqa = get(f"{prefix}.q_a_layernorm.weight")
        self.wqb = get(f"{prefix}.q_b_proj.weight").astype(np.float64)
        self.wkva = get(f"{prefix}.kv_a_proj_with_mqa.weight").astype(np.float64)
        self.nkva = get(f"{prefix}.kv_a_layernorm.weight")
        self.wkvb = get(f"{prefix}.kv_b_proj.weight").astype(np.float64)
        self.wo = get(f"{prefix}.o_proj.weight").astype(np.float64)

    def __call__(self, x, positions):
        c = self.c
        T = x.shape[0]
        H, nope, rope, vd = (c["num_attention_heads"], c["qk_nope_head_dim"],
                             c["qk_rope_head_dim"], c["v_head_dim"])
        kvr, qr, hid = c["kv_lora_rank"], c["q_lora_rank"], c["hidden_size"]
        x = np.asarray(x, np.float64)
        q = rms_norm(x @ self.wqa.T, self.nqa, MLA_LORA_NORM_EPS) @ self.wqb.T
        q = q.reshape(T, H, nope + rope) * math.sqrt(hid / qr)
        q_nope, q_rope = q[..., :nope], q[..., nope:]
        ckv = x @ self.wkva.T
        c_kv = rms_norm(ckv[:, :kvr], self.nkva, MLA_LORA_NORM_EPS) * math.sqrt(hid / kvr)
        k_rope = ckv[:, kvr:]
        cos, sin = rope_cos_sin(positions, rope, c["rope_theta"])
        q_rope = rope_interleaved(q_rope, cos[:, None, :], sin[:, None, :])
        k_rope = rope_interleaved(k_rope, cos, sin)
        kv = (c_kv @ self.wkvb.T).reshape(T, H, nope + vd)
        k_nope, v = kv[..., :nope], kv[..., nope:]
        scale = (nope + rope) ** -0.5
        scores = (np.einsum("ihd,jhd->hij", q_nope, k_nope)
                  + np.einsum("ihd,jd->hij", q_rope, k_rope)) * scale
        scores = np.where(np.tril(np.ones((T, T), dtype=bool))[None], scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        out = np.einsum("hij,jhd->ihd", p, v).reshape(T, H * vd)
        return out @ self.wo.T


class NumpyMLP:
    def __init__(self, get, prefix):
        self.g = get(f"{prefix}.gate_proj.weight").astype(np.float64)
        self.u = get(f"{prefix}.up_proj.weight").astype(np.float64)
        self.d = get(f"{prefix}.down_proj.weight").astype(np.float64)

    def __call__(self, x):
        x = np.asarray(x, np.float64)
        return (silu(x @ self.g.T) * (x @ self.u.T)) @ self.d.T


def mtp_config(ckpt, cfg):
    return {"num_attention_heads": cfg.num_attention_heads,
            "qk_nope_head_dim": cfg.qk_nope_head_dim, "qk_rope_head_dim": cfg.qk_rope_head_dim,
            "v_head_dim": cfg.v_head_dim, "kv_lora_rank": cfg.kv_lora_rank,
            "q_lora_rank": cfg.q_lora_rank, "hidden_size": cfg.hidden_size,
            "rope_theta": float(cfg.rope_parameters["rope_theta"]),
            "rms_norm_eps": cfg.rms_norm_eps}


class NumpyMTP:
    def __init__(self, ckpt, c):
        get = ckpt.f32
        self.c = c
        self.embed = get("model.mtp.embed_tokens.weight")
        self.enorm = get(f"{MTP}.enorm.m.weight")
        self.hnorm = get(f"{MTP}.hnorm.m.weight")
        self.eh = get(f"{MTP}.eh_proj.weight").astype(np.float64)
        self.in_ln = get(f"{MTP}.input_layernorm.weight")
        self.post_ln = get(f"{MTP}.post_attention_layernorm.weight")
        self.attn = NumpyMLA(get, f"{MTP}.self_attn", c)
        self.mlp = NumpyMLP(get, f"{MTP}.transformer_layer.mlp")
        self.norm = get("model.mtp.norm.weight")
        self.lm_head = get("lm_head.weight").astype(np.float64)  # shared; also used by HF

    def logits(self, ids, final_normed):
        """ids [T], final_normed [T, hidden] -> [T-1, vocab]; row i predicts token i+2."""
        eps = self.c["rms_norm_eps"]
        T = len(ids)
        e = self.embed[np.asarray(ids[1:])]
        h = final_normed[: T - 1]
        z = np.concatenate([rms_norm(e, self.enorm, eps), rms_norm(h, self.hnorm, eps)], axis=-1)
        z = z @ self.eh.T
        z = z + self.attn(rms_norm(z, self.in_ln, eps), np.arange(T - 1))
        z = z + self.mlp(rms_norm(z, self.post_ln, eps))
        z = rms_norm(z, self.norm, eps)
        return (z @ self.lm_head.T).astype(np.float32)


def rel_err(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def crosscheck_numpy_against_hf(model, ckpt, c, ids):
    """Runs the numpy MLA/MLP/RMSNorm on main layer 0 and compares with HF's modules."""
    layer = model.model.layers[0]
    seen = {}

    def hook(key):
        def f(module, args, kwargs, output):
            x = kwargs.get("hidden_states", args[0] if args else None)
            seen[key] = (x.detach()[0].numpy().copy(),
                         (output[0] if isinstance(output, tuple) else output).detach()[0].numpy())
        return f

    handles = [layer.input_layernorm[0].register_forward_hook(hook("norm"), with_kwargs=True),
               layer.self_attn[0].register_forward_hook(hook("attn"), with_kwargs=True),
               layer.mlps[0].register_forward_hook(hook("mlp"), with_kwargs=True)]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    # the weights come straight from the HF modules (same fp32 values as the checkpoint)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    def get(name):
        return sd[name]
    p = "model.layers.0"
    x, y = seen["norm"]
    e_norm = rel_err(rms_norm(x, get(f"{p}.input_layernorm.0.weight"), c["rms_norm_eps"]), y)
    x, y = seen["attn"]
    e_attn = rel_err(NumpyMLA(get, f"{p}.self_attn.0", c)(x, np.arange(len(ids))), y)
    x, y = seen["mlp"]
    e_mlp = rel_err(NumpyMLP(get, f"{p}.mlps.0")(x), y)
    errs = {"input_layernorm": e_norm, "self_attn": e_attn, "mlp": e_mlp,
            "tolerance": CROSSCHECK_TOL, "num_tokens": len(ids)}
    bad = {k: v for k, v in errs.items() if k in ("input_layernorm", "self_attn", "mlp")
           and not v <= CROSSCHECK_TOL}
    if bad:
        raise SystemExit(f"numpy reference disagrees with HF layer 0: {errs}")
    return errs


def crosscheck_mtp_with_hf_modules(model, ckpt, cfg, ids, final_normed, numpy_logits):
    """Recomputes the MTP logits with HF's own building blocks (LongcatFlashMLA, LongcatFlashMLP,
    LongcatFlashRMSNorm, rotary embedding) in fp32 torch, and compares with the numpy MTP."""
    from transformers.models.longcat_flash import modeling_longcat_flash as lm
    get = ckpt.f32
    eps = cfg.rms_norm_eps
    H = cfg.hidden_size

    def norm(name, dim, e=eps):
        m = lm.LongcatFlashRMSNorm(dim, eps=e)
        m.weight.data = torch.from_numpy(get(name))
        return m

    attn = lm.LongcatFlashMLA(cfg, layer_idx=0).eval()
    attn.load_state_dict({k: torch.from_numpy(get(f"{MTP}.self_attn.{k}"))
                          for k in attn.state_dict()})
    mlp = lm.LongcatFlashMLP(cfg, intermediate_size=cfg.ffn_hidden_size).eval()
    mlp.load_state_dict({k: torch.from_numpy(get(f"{MTP}.transformer_layer.mlp.{k}"))
                         for k in mlp.state_dict()})
    T = len(ids) - 1
    with torch.no_grad():
        e = torch.from_numpy(get("model.mtp.embed_tokens.weight"))[torch.tensor(ids[1:])]
        h = torch.from_numpy(final_normed[:T])
        z = torch.cat([norm(f"{MTP}.enorm.m.weight", H)(e), norm(f"{MTP}.hnorm.m.weight", H)(h)],
                      dim=-1) @ torch.from_numpy(get(f"{MTP}.eh_proj.weight")).T
        z = z[None]
        pos = torch.arange(T)[None]
        pe = model.model.rotary_emb(z, pos)
        mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)[None, None]
        a, _ = attn(norm(f"{MTP}.input_layernorm.weight", H)(z), position_embeddings=pe,
                    attention_mask=mask)
        z = z + a
        z = z + mlp(norm(f"{MTP}.post_attention_layernorm.weight", H)(z))
        z = norm("model.mtp.norm.weight", H)(z)
        logits = model.lm_head(z)[0].numpy()
    err = rel_err(numpy_logits, logits)
    if not err <= CROSSCHECK_TOL:
        raise SystemExit(f"numpy MTP disagrees with the HF-module MTP: rel err {err}")
    return err


# ----------------------------------------------------------------------------- running HF

def run_hf(model, ids):
    """Returns dict of fp32 numpy arrays: hidden.{j}, final_norm, logits."""
    cap = {}
    L = model.config.num_layers

    def save(key):
        def f(module, args, output):
            cap[key] = (output[0] if isinstance(output, tuple) else output).detach()[0].numpy().copy()
        return f

    handles = [model.model.embed_tokens.register_forward_hook(save("hidden.0")),
               model.model.norm.register_forward_hook(save("final_norm"))]
    handles += [layer.register_forward_hook(save(f"hidden.{j + 1}"))
                for j, layer in enumerate(model.model.layers)]
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), use_cache=False, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    cap["logits"] = out.logits[0].detach().numpy().copy()
    # what HF's own hidden_states tuple holds (documented in the docstring)
    hs = [t[0].numpy() for t in out.hidden_states]
    assert len(hs) == L + 1, (len(hs), L)
    for j in range(L):
        assert np.array_equal(hs[j], cap[f"hidden.{j}"]), f"hidden_states[{j}] != hook"
    assert np.array_equal(hs[L], cap["final_norm"]), "hidden_states[-1] is not the normed state"
    if L > 0:
        assert not np.array_equal(hs[L], cap[f"hidden.{L}"])
    return cap


def last_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].numpy()


def greedy_trace(model, tok, ids, max_new):
    gen = []
    cur = list(ids)
    for _ in range(max_new):
        nxt = int(np.argmax(last_logits(model, cur)))
        gen.append(nxt)
        cur.append(nxt)
        if nxt == EOS_ID:
            break
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([cur]), use_cache=False).logits[0].numpy()
    trace = []
    for i, tok_id in enumerate(gen):
        pos = len(ids) - 1 + i
        row = logits[pos].astype(np.float64)
        order = np.argsort(-row, kind="stable")
        top1, top2 = int(order[0]), int(order[1])
        trace.append({"position": pos, "top1": top1, "margin": float(row[top1] - row[top2]),
                      "max_abs_logit": float(np.max(np.abs(row))),
                      "generated": tok_id, "agrees": top1 == tok_id})
    return {"prompt": 0, "max_new_tokens": max_new, "ids": gen,
            "stopped_at_eos": bool(gen and gen[-1] == EOS_ID),
            "greedy_text": tok.decode(gen, skip_special_tokens=True),
            "teacher_forced_agrees_with_greedy": all(t["agrees"] for t in trace),
            "trace": trace}


# ----------------------------------------------------------------------------- prompts

def fit_long_prompt(tok, source):
    """Longest word prefix of `source` with at most LONG_TARGET tokens (with BOS)."""
    words = source.split(" ")
    lo, hi = 1, len(words)
    while lo < hi:  # largest prefix with <= LONG_TARGET tokens
        mid = (lo + hi + 1) // 2
        if len(tok.encode(" ".join(words[:mid])).ids) <= LONG_TARGET:
            lo = mid
        else:
            hi = mid - 1
    text = " ".join(words[:lo])
    n = len(tok.encode(text).ids)
    if not LONG_MIN <= n <= LONG_MAX:
        raise SystemExit(f"long prompt has {n} tokens, wanted {LONG_MIN}..{LONG_MAX}")
    return text


def load_prompts(args, tok):
    if args.prompts_file:
        with open(args.prompts_file, encoding="utf-8") as f:
            prompts = json.load(f)
        if not (isinstance(prompts, list) and prompts and all(isinstance(p, str) for p in prompts)):
            raise SystemExit("--prompts-file must hold a non-empty JSON array of strings")
        lengths = [len(tok.encode(p).ids) for p in prompts]
        if len(prompts) < 4 or not any(LONG_MIN <= n <= LONG_MAX for n in lengths):
            print(f"warning: {len(prompts)} prompts of {lengths} tokens; the golden tests expect "
                  f">= 4 prompts, one of {LONG_MIN}..{LONG_MAX} tokens", file=sys.stderr)
        return prompts
    return DEFAULT_PROMPTS + [fit_long_prompt(tok, LONG_PROMPT_SOURCE)]


# ----------------------------------------------------------------------------- main

def compact_json(obj):
    """Indented JSON with lists of numbers kept on one line."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    text = re.sub(r"\[\s*(-?[0-9][-0-9.eE+]*(?:,\s*-?[0-9][-0-9.eE+]*)*)\s*\]",
                  lambda m: ("[" + re.sub(r",\s*", ", ", m.group(1)) + "]"
                             if "\n" in m.group(0) else m.group(0)), text)  # never in strings
    assert json.loads(text) == obj
    return text + "\n"


FP8_DEQUANT_DUMP = ("model.layers.0.mlps.0.gate_proj.weight", "model.layers.0.mlps.0.down_proj.weight",
                    "model.layers.0.self_attn.0.q_b_proj.weight")


def make_golden(args):
    check_fp8_table()
    torch.manual_seed(0)
    ckpt = Checkpoint(args.model)
    ckpt.fp8_round_bf16 = args.fp8_round_bf16
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        if not os.path.exists(os.path.join(args.model, fn)):
            raise SystemExit(f"{args.model}: missing {fn}")
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))

    raw = ckpt.config
    cfg, head_dim_override = load_hf_config(ckpt)
    names_main = expected_main_names(cfg.num_layers, cfg.n_routed_experts)
    has_mtp = any(n.startswith("model.mtp.") for n in ckpt.tensors)
    expected = set(names_main) | (set(expected_mtp_names()) if has_mtp else set())
    present = set(ckpt.weight_names())
    if present != expected:
        raise SystemExit(f"checkpoint tensors: missing {sorted(expected - present)[:10]}, "
                         f"unexpected {sorted(present - expected)[:10]}")

    model = build_hf_model(ckpt, cfg)
    c = mtp_config(ckpt, cfg)
    mtp = NumpyMTP(ckpt, c) if has_mtp else None
    unused = set(ckpt.tensors) - ckpt.used
    if unused:
        raise SystemExit(f"checkpoint tensors not used: {sorted(unused)[:10]}")

    prompts = load_prompts(args, tok)
    vocab = cfg.vocab_size
    tensors, prompt_info, mtp_inputs, mtp_full = {}, [], {}, {}
    for k, text in enumerate(prompts):
        ids = tok.encode(text, add_special_tokens=True).ids
        if len(ids) < 2:
            raise SystemExit(f"prompt {k} has fewer than 2 tokens")
        if max(ids) >= vocab:
            raise SystemExit(f"prompt {k}: token id {max(ids)} >= vocab_size {vocab}")
        cap = run_hf(model, ids)
        T = len(ids)
        keep = T * vocab * 4 > args.logits_budget_bytes
        start = max(0, T - args.keep_last) if keep else 0
        for j in range(cfg.num_layers + 1):
            tensors[f"p{k}.hidden.{j}"] = cap[f"hidden.{j}"]
        tensors[f"p{k}.final_norm"] = cap["final_norm"]
        tensors[f"p{k}.logits"] = cap["logits"][start:]
        info = {"text": text, "ids": ids, "num_tokens": T, "logits_positions": [start, T]}
        if mtp is not None:
            m = mtp.logits(ids, cap["final_norm"])
            mtp_inputs[k], mtp_full[k] = cap["final_norm"], m
            mstart = max(0, (T - 1) - args.keep_last) if keep else 0
            tensors[f"p{k}.mtp_logits"] = m[mstart:]
            info["mtp_logits_positions"] = [mstart, T - 1]
        prompt_info.append(info)
        print(f"prompt {k}: {T} tokens, logits rows {start}..{T}", file=sys.stderr)

    longest = max(range(len(prompt_info)), key=lambda k: prompt_info[k]["num_tokens"])
    crosscheck = crosscheck_numpy_against_hf(model, ckpt, c, prompt_info[longest]["ids"])
    if mtp is not None:
        crosscheck["mtp_vs_hf_modules"] = crosscheck_mtp_with_hf_modules(
            model, ckpt, cfg, prompt_info[longest]["ids"], mtp_inputs[longest],
            mtp_full[longest])
    greedy = greedy_trace(model, tok, prompt_info[0]["ids"], args.max_new_tokens)

    # FP8: a few dequantized weights (fp32, never rounded) so the C++ loader's bf16 result can
    # be compared with this numpy dequantization element by element.
    for name in FP8_DEQUANT_DUMP:
        if name in ckpt.tensors and ckpt.dtype_name(name) == "F8_E4M3":
            keep = ckpt.fp8_round_bf16
            ckpt.fp8_round_bf16 = False
            tensors["dequant." + name] = ckpt.f32(name)
            ckpt.fp8_round_bf16 = keep
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    os.makedirs(args.out, exist_ok=True)
    np_save_file(tensors, os.path.join(args.out, "golden.safetensors"),
                 metadata={"generator": "tests/golden/make_golden.py"})
    counts, linear_dtypes = ckpt.dtype_summary()
    config_summary = {k: raw[k] for k in sorted(raw) if k not in ("auto_map",)}
    doc = {
        "generator": "tests/golden/make_golden.py",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__,
                     "safetensors": safetensors.__version__,
                     "tokenizers": tokenizers.__version__},
        "config": config_summary,
        "checkpoint": {"linear_weight_dtype": linear_dtypes[0] if len(linear_dtypes) == 1
                       else linear_dtypes,
                       "tensor_dtype_counts": counts, "num_tensors": len(ckpt.tensors),
                       "sharded": ckpt.sharded,
                       "fp8_block": list(ckpt.block) if "F8_E4M3" in counts else None},
        "reference": {
            "implementation": "transformers LongcatFlashForCausalLM",
            "device": "cpu", "compute_dtype": "float32", "attn_implementation": "eager",
            "weights": "checkpoint values converted to fp32 (bf16 exact; fp8 * scale_inv "
                       "blockwise in fp32)" + (", then rounded to bf16" if args.fp8_round_bf16 else ""),
            "fp8_round_bf16": bool(args.fp8_round_bf16),
            "head_dim_override": head_dim_override,
            "num_hidden_layers_hf": cfg.num_hidden_layers,
            "rope_theta": float(cfg.rope_parameters["rope_theta"]),
            "mla_lora_norm_eps": MLA_LORA_NORM_EPS, "rms_norm_eps": cfg.rms_norm_eps,
            "hf_hidden_states_tuple": "num_layers+1 entries: [0] embedding output, [j] output "
                                      "of layer j-1 for j<num_layers, [num_layers] = model.norm "
                                      "output (NOT the last layer's raw output)",
        },
        "tensors": {
            "p{k}.hidden.{j}": "[T, hidden]; j=0 embedding output, j>=1 output of decoder "
                               "layer j-1 before model.norm",
            "p{k}.final_norm": "[T, hidden] model.norm output",
            "p{k}.logits": "[rows, vocab] rows logits_positions[0]..logits_positions[1]-1",
            "p{k}.mtp_logits": "[rows, vocab] MTP row i (predicts token i+2) for i in "
                               "mtp_logits_positions[0]..[1]-1",
        },
        "mtp": None if mtp is None else {
            "implementation": "numpy float64 (make_golden.py NumpyMTP)",
            "convention": "row i = 0..T-2: e = model.mtp.embed_tokens[token[i+1]], h = main "
                          "final-normed hidden at position i, RoPE position i, causal over "
                          "MTP rows 0..i; logits = lm_head(mtp.norm(layer(eh_proj(concat["
                          "enorm(e), hnorm(h)]))))",
            "crosscheck": crosscheck,
        },
        "prompts": prompt_info,
        "greedy": greedy,
    }
    with open(os.path.join(args.out, "golden.json"), "w", encoding="utf-8") as f:
        f.write(compact_json(doc))
    size = os.path.getsize(os.path.join(args.out, "golden.safetensors"))
    print(f"wrote {args.out}/golden.safetensors ({size} bytes, {len(tensors)} tensors) and "
          f"golden.json; crosscheck {crosscheck}; greedy {greedy['ids']} "
          f"(eos={greedy['stopped_at_eos']}, agrees={greedy['teacher_forced_agrees_with_greedy']})",
          file=sys.stderr)
    if args.check_from_pretrained:
        check_from_pretrained(args.model, model)


def check_from_pretrained(model_dir, model):
    """Reports whether HF's own loader reproduces our state dict (informational)."""
    kwargs = {"dtype": torch.float32}
    try:
        ref = LongcatFlashForCausalLM.from_pretrained(model_dir, **kwargs)
    except Exception as exc:  # noqa: BLE001 - report whatever HF raises
        print(f"from_pretrained failed: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
        print("retrying with ignore_mismatched_sizes=True", file=sys.stderr)
        ref = LongcatFlashForCausalLM.from_pretrained(model_dir, ignore_mismatched_sizes=True,
                                                      **kwargs)
    ours = model.state_dict()
    same = 0
    for k, v in ref.state_dict().items():
        if k not in ours:
            print(f"from_pretrained: extra {k}", file=sys.stderr)
        elif v.shape != ours[k].shape:
            print(f"from_pretrained: {k} shape {tuple(v.shape)} vs ours {tuple(ours[k].shape)}",
                  file=sys.stderr)
        elif not torch.equal(v, ours[k]):
            print(f"from_pretrained: {k} differs", file=sys.stderr)
        else:
            same += 1
    print(f"from_pretrained: {same} of {len(ours)} tensors identical to ours", file=sys.stderr)


# ----------------------------------------------------------------------------- test checkpoint

TEST_CONFIG = {
    "architectures": ["LongcatFlashForCausalLM"],
    "model_type": "longcat_flash",
    "attention_method": "MLA",
    "vocab_size": 1500,
    "hidden_size": 320,
    "num_layers": 2,
    "num_attention_heads": 4,
    "q_lora_rank": 160,
    "kv_lora_rank": 96,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16,
    "v_head_dim": 24,
    "head_dim": 16,
    "ffn_hidden_size": 272,
    "expert_ffn_hidden_size": 144,
    "n_routed_experts": 8,
    "zero_expert_num": 4,
    "zero_expert_type": "identity",
    "moe_topk": 3,
    "routed_scaling_factor": 6.0,
    "mla_scale_q_lora": True,
    "mla_scale_kv_lora": True,
    "rope_theta": 10000000.0,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
}


def write_test_checkpoint(args):
    """A tiny random checkpoint in the layout of longcat-flash.md section 8 (self-test only)."""
    rng = np.random.default_rng(args.seed)
    c = dict(TEST_CONFIG)
    H = c["hidden_size"]
    dims = {
        "q_a_proj": (c["q_lora_rank"], H),
        "q_b_proj": (c["num_attention_heads"] * (c["qk_nope_head_dim"] + c["qk_rope_head_dim"]),
                     c["q_lora_rank"]),
        "kv_a_proj_with_mqa": (c["kv_lora_rank"] + c["qk_rope_head_dim"], H),
        "kv_b_proj": (c["num_attention_heads"] * (c["qk_nope_head_dim"] + c["v_head_dim"]),
                      c["kv_lora_rank"]),
        "o_proj": (H, c["num_attention_heads"] * c["v_head_dim"]),
    }
    norm_dims = {"q_a_layernorm": c["q_lora_rank"], "kv_a_layernorm": c["kv_lora_rank"]}
    w = {}

    def linear(name, out_dim, in_dim, gain=1.0):
        w[name] = rng.standard_normal((out_dim, in_dim)) * gain / math.sqrt(in_dim)

    def norm(name, dim):
        w[name] = 1.0 + 0.1 * rng.standard_normal(dim)

    def attn(prefix):
        for m, (o, i) in dims.items():
            linear(f"{prefix}.{m}.weight", o, i)
        for m, d in norm_dims.items():
            norm(f"{prefix}.{m}.weight", d)

    def mlp(prefix, inter):
        linear(f"{prefix}.gate_proj.weight", inter, H)
        linear(f"{prefix}.up_proj.weight", inter, H)
        linear(f"{prefix}.down_proj.weight", H, inter)

    w["model.embed_tokens.weight"] = rng.standard_normal((c["vocab_size"], H))
    for l in range(c["num_layers"]):
        p = f"model.layers.{l}"
        for i in (0, 1):
            norm(f"{p}.input_layernorm.{i}.weight", H)
            norm(f"{p}.post_attention_layernorm.{i}.weight", H)
            attn(f"{p}.self_attn.{i}")
            mlp(f"{p}.mlps.{i}", c["ffn_hidden_size"])
        n_all = c["n_routed_experts"] + c["zero_expert_num"]
        linear(f"{p}.mlp.router.classifier.weight", n_all, H, gain=2.0)
        w[f"{p}.mlp.router.e_score_correction_bias"] = 0.02 * rng.standard_normal(n_all)
        for e in range(c["n_routed_experts"]):
            mlp(f"{p}.mlp.experts.{e}", c["expert_ffn_hidden_size"])
    norm("model.norm.weight", H)
    linear("lm_head.weight", c["vocab_size"], H, gain=3.0)
    w["model.mtp.embed_tokens.weight"] = rng.standard_normal((c["vocab_size"], H))
    linear(f"{MTP}.eh_proj.weight", H, 2 * H)
    for m in ("enorm.m", "hnorm.m", "input_layernorm", "post_attention_layernorm"):
        norm(f"{MTP}.{m}.weight", H)
    attn(f"{MTP}.self_attn")
    mlp(f"{MTP}.transformer_layer.mlp", c["ffn_hidden_size"])
    norm("model.mtp.norm.weight", H)

    out = {}
    for name, arr in w.items():
        t = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        fp32_only = name.endswith("classifier.weight") or name.endswith("e_score_correction_bias")
        if args.dtype == "f32" or fp32_only:
            out[name] = t
        elif args.dtype == "bf16" or not is_linear_weight(name):
            out[name] = t.to(torch.bfloat16)
        else:  # fp8 with 128x128 block scales, partial edge blocks
            o, i = t.shape
            so, si = math.ceil(o / 128), math.ceil(i / 128)
            pad = torch.zeros(so * 128, si * 128)
            pad[:o, :i] = t
            amax = pad.abs().reshape(so, 128, si, 128).amax(dim=(1, 3)).clamp(min=1e-12)
            scale = amax / 448.0
            q = (pad.reshape(so, 128, si, 128) / scale[:, None, :, None]).reshape(so * 128,
                                                                                  si * 128)
            out[name] = q[:o, :i].to(torch.float8_e4m3fn).contiguous()
            out[name + "_scale_inv"] = scale.to(torch.float32).contiguous()
    if args.dtype == "fp8":
        c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3",
                                    "quant_method": "fp8", "weight_block_size": [128, 128]}
    os.makedirs(args.write_test_checkpoint, exist_ok=True)
    d = args.write_test_checkpoint
    names = sorted(out)
    if args.shards <= 1:
        torch_save_file(out, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    else:
        per = math.ceil(len(names) / args.shards)
        weight_map = {}
        for s in range(args.shards):
            fn = f"model-{s + 1:05d}-of-{args.shards:05d}.safetensors"
            part = {n: out[n] for n in names[s * per:(s + 1) * per]}
            torch_save_file(part, os.path.join(d, fn), metadata={"format": "pt"})
            weight_map.update({n: fn for n in part})
        total = sum(t.numel() * t.element_size() for t in out.values())
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    shutil.copyfile(args.tokenizer, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<longcat_s>",
                   "eos_token": "</longcat_s>", "pad_token": "<longcat_pad>",
                   "unk_token": "<longcat_unk>", "add_bos_token": True, "add_eos_token": False,
                   "model_max_length": c["max_position_embeddings"]}, f, indent=1)
    print(f"wrote test checkpoint {d} ({args.dtype}, {len(out)} tensors)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint directory (HF layout)")
    ap.add_argument("--out", help="output directory for golden.safetensors and golden.json")
    ap.add_argument("--prompts-file", help="JSON array of prompt strings")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--logits-budget-bytes", type=int, default=1_000_000,
                    help="a prompt whose fp32 [T, vocab] logits exceed this keeps --keep-last rows")
    ap.add_argument("--keep-last", type=int, default=64)
    ap.add_argument("--fp8-round-bf16", action="store_true",
                    help="round dequantized fp8 weights to bf16 (what the C++ CPU loader keeps)")
    ap.add_argument("--check-from-pretrained", action="store_true",
                    help="also try HF's from_pretrained and report how it differs (informational)")
    ap.add_argument("--write-test-checkpoint", metavar="DIR",
                    help="write a tiny random checkpoint to DIR and exit")
    ap.add_argument("--dtype", choices=("f32", "bf16", "fp8"), default="bf16")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--tokenizer", default=os.path.join(REPO, "model/tokenizers/llama3/tokenizer.json"))
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    if args.write_test_checkpoint:
        write_test_checkpoint(args)
        return 0
    if not args.model or not args.out:
        ap.error("--model and --out are required")
    make_golden(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
