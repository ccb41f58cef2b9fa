#!/usr/bin/env python3
"""Trains the project's small BPE tokenizers (committed as data) with HF `tokenizers`.

Corpus: the license texts of Debian's `base-files` package, /usr/share/common-licenses/*
(plain English, pure ASCII, ~237 KB). Symlinks (GPL -> GPL-3, ...) are skipped and the
regular files are read in sorted name order, so the corpus is fixed for a given base-files
version; its sha256 is printed. Training is deterministic (no limit_alphabet, whose tie
breaking is not; BPE merge ties are broken by pair order in `tokenizers`); running the script
twice gives byte-identical files (checked with --check).

Outputs (paths relative to the repo root):
  model/tokenizers/gpt2/tokenizer.json     GPT-2 style byte-level BPE, 1000 ids
  model/tokenizers/llama3/tokenizer.json   Llama-3 / DeepSeek-V3 style byte-level BPE, 1500 ids
  tests/golden/data/tokenizers/bytefallback/tokenizer.json
                                           Llama-2 / Mistral style BPE with byte fallback, 600 ids

All three: ids 0..3 are the special added tokens <longcat_unk>, <longcat_s> (BOS),
</longcat_s> (EOS), <longcat_pad>; further added tokens (special and not) come last; the
post-processor is a TemplateProcessing that prepends <longcat_s>.

Usage: .venv-golden/bin/python tests/golden/train_tokenizers.py [--repo DIR] [--check]
  --check: train into memory and fail if the committed files differ.
"""
import argparse
import hashlib
import json
import os
import sys

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

CORPUS_DIR = "/usr/share/common-licenses"

UNK, BOS, EOS, PAD = "<longcat_unk>", "<longcat_s>", "</longcat_s>", "<longcat_pad>"
SPECIALS = [UNK, BOS, EOS, PAD]  # ids 0..3, in this order

# Llama-3's pre-tokenizer regex (tokenizer.json of Meta-Llama-3), verbatim.
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def special(content, **flags):
    return AddedToken(content, special=True, normalized=False, **flags)


def extra_added_tokens(normalized_word=False):
    """Added tokens after the trained vocab: (token, is_special) in id order."""
    extra = [
        (special("<longcat_tool_call>"), True),
        (special("</longcat_tool_call>"), True),
        # lstrip/rstrip: swallows the whitespace around it (like RoBERTa's <mask>)
        (special("<longcat_mask>", lstrip=True, rstrip=True), True),
        # a plain added word, matched on the raw (un-normalized) text
        (AddedToken("LongCat", special=False, normalized=False), False),
    ]
    if normalized_word:
        # a plain added word matched on the normalized text (after "▁" replacement)
        extra.append((AddedToken("meow", special=False, normalized=True), False))
    return extra


def read_corpus():
    names = sorted(n for n in os.listdir(CORPUS_DIR)
                   if not os.path.islink(os.path.join(CORPUS_DIR, n)))
    texts = []
    for n in names:
        with open(os.path.join(CORPUS_DIR, n), "rb") as f:
            texts.append(f.read().decode("utf-8"))
    digest = hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest()
    return names, texts, digest


def template_processing():
    return processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS}:1 $B:1",
        special_tokens=[(BOS, 1)],
    )


def add_extras(tok, normalized_word=False):
    for t, is_special in extra_added_tokens(normalized_word):
        if is_special:
            tok.add_special_tokens([t])
        else:
            tok.add_tokens([t])


def check_ids(tok, total):
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    n = tok.get_vocab_size(with_added_tokens=True)
    assert n == total, f"vocab size {n} != {total}"
    # ids must be dense 0..total-1
    assert sorted(tok.get_vocab(with_added_tokens=True).values()) == list(range(total))


def train_byte_level(texts, total, pre_tokenizer, normalizer, ignore_merges):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([special(s) for s in SPECIALS])
    trainer = trainers.BpeTrainer(
        vocab_size=total - len(extra_added_tokens()),
        special_tokens=[special(s) for s in SPECIALS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = template_processing()
    add_extras(tok)
    check_ids(tok, total)
    return tok


def train_gpt2(texts):
    return train_byte_level(
        texts, 1000,
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        normalizer=None, ignore_merges=False)


def train_llama3(texts):
    pre = pre_tokenizers.Sequence([
        # DeepSeek-V3 puts its digit split first; here every digit is its own piece.
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return train_byte_level(texts, 1500, pre, normalizers.NFC(), ignore_merges=True)


def train_bytefallback(texts, total=600):
    """Llama-2 / Mistral layout: ids 0..3 specials, 4..259 <0x00>..<0xFF>, then the pieces."""
    norm = normalizers.Sequence([normalizers.NFC(), normalizers.Prepend("▁"),
                                 normalizers.Replace(" ", "▁")])
    # Train on lines of printable ASCII only, so that newlines, tabs and every non-ASCII
    # character go through byte fallback as in Llama-2. Words are split before each "▁"
    # during training only (like SentencePiece, merges never cross a word start); the final
    # tokenizer has no pre-tokenizer.
    lines = []
    for t in texts:
        for line in t.split("\n"):
            line = "".join(c for c in line if " " <= c <= "~").strip()
            if line:
                lines.append(line)
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = norm
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    n_fixed = len(SPECIALS) + 256
    trainer = trainers.BpeTrainer(vocab_size=total - n_fixed - len(extra_added_tokens(True)),
                                  show_progress=False)
    trainer_tok.train_from_iterator(lines, trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    pieces = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in pieces:
        assert piece not in vocab, piece
        vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = norm
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(content=" ", left=1, right=0)])
    tok.post_processor = template_processing()
    tok.add_special_tokens([special(s) for s in SPECIALS])
    add_extras(tok, normalized_word=True)
    check_ids(tok, total)
    return tok


def describe(tok):
    """The components a tokenizer.json uses, as a list of strings."""
    j = json.loads(tok.to_str())

    def comp(node):
        if node is None:
            return "null"
        t = node["type"]
        if t == "Sequence":
            inner = node.get("normalizers") or node.get("pretokenizers") or \
                node.get("decoders") or node.get("processors") or []
            return "Sequence[" + ", ".join(comp(x) for x in inner) + "]"
        args = {k: v for k, v in node.items() if k not in ("type", "special_tokens")}
        if t == "Split":
            args["pattern"] = node["pattern"]
        if t == "TemplateProcessing":
            def tmpl(seq):
                out = []
                for p in seq:
                    if "SpecialToken" in p:
                        out.append(f'{p["SpecialToken"]["id"]}:{p["SpecialToken"]["type_id"]}')
                    else:
                        out.append(f'${p["Sequence"]["id"]}:{p["Sequence"]["type_id"]}')
                return " ".join(out)
            args = {"single": tmpl(node["single"]), "pair": tmpl(node["pair"])}
        return f"{t}({json.dumps(args, ensure_ascii=False)})"

    m = j["model"]
    model_flags = {k: m[k] for k in ("type", "dropout", "unk_token", "continuing_subword_prefix",
                                     "end_of_word_suffix", "fuse_unk", "byte_fallback",
                                     "ignore_merges") if k in m}
    added = [f'{a["id"]}:{a["content"]}(special={a["special"]},normalized={a["normalized"]},'
             f'lstrip={a["lstrip"]},rstrip={a["rstrip"]},single_word={a["single_word"]})'
             for a in j["added_tokens"]]
    return [
        f"normalizer: {comp(j['normalizer'])}",
        f"pre_tokenizer: {comp(j['pre_tokenizer'])}",
        f"model: {json.dumps(model_flags)} vocab={len(m['vocab'])} merges={len(m['merges'])}",
        f"decoder: {comp(j['decoder'])}",
        f"post_processor: {comp(j['post_processor'])}",
        "added_tokens: " + "; ".join(added),
        f"total ids (with added): {tok.get_vocab_size(with_added_tokens=True)}",
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                                   "..", "..")))
    ap.add_argument("--check", action="store_true",
                    help="fail if the committed files differ from a fresh training run")
    args = ap.parse_args()

    names, texts, digest = read_corpus()
    print(f"corpus: {CORPUS_DIR}: {', '.join(names)}")
    print(f"corpus: {sum(len(t) for t in texts)} chars, sha256 {digest}")

    outputs = {
        "model/tokenizers/gpt2/tokenizer.json": train_gpt2(texts),
        "model/tokenizers/llama3/tokenizer.json": train_llama3(texts),
        "tests/golden/data/tokenizers/bytefallback/tokenizer.json": train_bytefallback(texts),
    }
    bad = 0
    for rel, tok in outputs.items():
        text = tok.to_str(pretty=True) + "\n"
        path = os.path.join(args.repo, rel)
        if args.check:
            with open(path, encoding="utf-8") as f:
                same = f.read() == text
            print(f"{rel}: {'same' if same else 'DIFFERS'}")
            bad += not same
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {rel}")
        for line in describe(tok):
            print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
