#!/usr/bin/env python3
"""Writes the tokenizer golden files: what HF `tokenizers` does with each test string.

For each tokenizer NAME in (gpt2, llama3, bytefallback) it writes
tests/golden/data/tokenizers/NAME.json:

  {"tokenizer": "<path of its tokenizer.json, relative to the repo root>",
   "tokenizers_version": "...",
   "cases": [{"text": str,
              "ids": [int],            encode(text, add_special_tokens=False).ids
              "tokens": [str],         the token strings of "ids"
              "ids_special": [int],    encode(text, add_special_tokens=True).ids (BOS prepended)
              "decoded": str,          decode(ids, skip_special_tokens=False)
              "decoded_skip": str}],   decode(ids, skip_special_tokens=True)
   "pairs": [{"a": str, "b": str, "ids_special": [int]}]}   encode(a, b) with special tokens

The strings are fixed literals plus a few generated from a fixed-seed LCG, so the output is
deterministic for a given tokenizers version. Needs only the `tokenizers` package.

Usage: .venv-golden/bin/python tests/golden/make_tokenizer_golden.py [--repo DIR]
"""
import argparse
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer

TOKENIZERS = {
    "gpt2": "model/tokenizers/gpt2/tokenizer.json",
    "llama3": "model/tokenizers/llama3/tokenizer.json",
    "bytefallback": "tests/golden/data/tokenizers/bytefallback/tokenizer.json",
}

PROSE = [
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "This program is free software: you can redistribute it and/or modify it.",
    "Everyone is permitted to copy and distribute verbatim copies of this license document.",
    "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND.",
    "A serving engine streams tokens to many users at once; each one waits less.",
    "Mixture-of-experts models route every token to a few experts.",
    "She sells sea-shells by the sea-shore.",
    "e.g. i.e. etc. Mr. Mrs. Dr. St. U.S.A.",
    "The year 2025 had 365 days, not 366.",
    "Email me at someone@example.com or visit https://example.org/path?q=1&r=two#frag",
    "Ellipsis... and em\u2014dash \u2013 en-dash, \u201cquotes\u201d and \u2018single\u2019.",
    "(parentheses) [brackets] {braces} <angles>",
    "semi;colon:comma,period.question?exclaim!",
    "CamelCaseWordsAndXMLHttpRequest and snake_case_words",
    "ALL CAPS SENTENCE WITH NUMBERS 123 AND SYMBOLS #$%",
    "a",
    "A",
    "I",
    ".",
    "!!!",
    "??",
    "hello",
    " hello",
    "hello ",
    "  hello  ",
    "Licensor",
    "licensee's",
    "Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
]

CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }\n",
    "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "if [ -f \"$HOME/.bashrc\" ]; then source ~/.bashrc; fi",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares",
    "a->b; c::d; e=>f; g!=h; i<=j; k>=l; m&&n; o||p; q<<r; s>>t;",
    "    indented four\n        indented eight\n",
    "\tTab\tseparated\tvalues\n1\t2\t3\n",
    "const re = /^[a-z0-9_\\-]+@[a-z]+\\.[a-z]{2,}$/i;",
    "printf(\"%d %s\\n\", 42, \"str\");",
    "// comment\n/* block\n   comment */\n",
    "key: value\nlist:\n  - one\n  - two\n",
    "0x1F 0b1010 0o17 1e-5 3.0f 1_000_000",
    "```python\nprint('hi')\n```",
    "fn main() { let s: &str = \"r\\u{e9}sum\\u{e9}\"; }",
    "SELECT*FROM t;--comment",
    "$$\\sum_{i=1}^{n} x_i^2$$",
]

SCRIPTS = [
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01",  # 你好，世界！
    "\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8",  # 我爱北京天安门
    "\u7f8e\u56e2\u7684\u6a21\u578b LongCat-Flash \u662f\u4e00\u4e2a\u6df7\u5408\u4e13\u5bb6\u6a21\u578b\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",  # こんにちは世界
    "\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4.",  # 한국어 문장입니다.
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",  # Привет, мир!
    "\u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445 "
    "\u043c\u044f\u0433\u043a\u0438\u0445 \u0444\u0440\u0430\u043d\u0446\u0443\u0437\u0441\u043a"
    "\u0438\u0445 \u0431\u0443\u043b\u043e\u043a.",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",  # مرحبا بالعالم
    "\u0627\u0644\u0644\u063a\u0629 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0664\u0665\u0666",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",  # नमस्ते दुनिया
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u0967\u0968\u0969",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",  # Γειά σου Κόσμε
    "\u03b1\u03b2\u03b3\u03b4\u03b5 \u0391\u0392\u0393\u0394\u0395 \u03c0\u2248"
    "3.14",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",  # שלום עולם
    "\u05e2\u05d1\u05e8\u05d9\u05ea \u05e2\u05dd \u05e0\u05d9\u05e7\u05d5\u05d3: "
    "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",  # สวัสดีชาวโลก
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48"
    "\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07",
    "Mixed: English \u4e2d\u6587 \u0420\u0443\u0441\u0441\u043a\u0438\u0439 "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0939\u093f\u0928\u094d\u0926\u0940",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u00e5ngstr\u00f6m",
    "\u00c0\u00c9\u00ce\u00d5\u00dc \u00e0\u00e9\u00ee\u00f5\u00fc \u00c7\u00e7 \u00d1\u00f1",
    "Zo\u00eb Bront\u00eb \u0141\u00f3d\u017a \u0160koda \u00d8resund",
    "\u1f00\u1f10\u1f20 polytonic Greek",
    "\u0531\u0580\u0574\u0565\u0576\u056b\u0561 \u10e1\u10d0\u10e5\u10d0\u10e0\u10d7\u10d5"
    "\u10d4\u10da\u10dd",
    "\u1780\u1798\u17d2\u1796\u17bb\u1787\u17b6 \u0dc1\u0dca\u200d\u0dbb\u0dd3 "
    "\u0bb2\u0b99\u0bcd\u0b95\u0bc8",
    "\u1e00\u1e01 \u0250\u0251\u0252 \u2c60\u2c61",
    "\U00020000\U0002a6d6 CJK extension B",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff21\uff22\uff23",  # fullwidth
    "\u2160\u2161\u2162 \u2460\u2461\u2462 \u00bd\u00bc\u00be",
]

EMOJI = [
    "\U0001f600",
    "\U0001f600\U0001f603\U0001f604",
    "I love \U0001f431 cats \U0001f408!",
    "\U0001f44d\U0001f3fd",  # thumbs up, medium skin tone
    "\U0001f44b\U0001f3fb\U0001f44b\U0001f3fc\U0001f44b\U0001f3fd\U0001f44b\U0001f3fe"
    "\U0001f44b\U0001f3ff",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",  # family ZWJ
    "\U0001f469\U0001f3fd\u200d\U0001f4bb",  # woman technologist, skin tone
    "\U0001f3f3\ufe0f\u200d\U0001f308",  # rainbow flag
    "\U0001f1eb\U0001f1f7\U0001f1e8\U0001f1f3\U0001f1fa\U0001f1f8",  # flags
    "1\ufe0f\u20e3 #\ufe0f\u20e3",  # keycaps
    "\u2764\ufe0f \u2764 \u2665",
    "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",
    "emoji\U0001f680in\U0001f525the\u2728middle",
    "\U0001f600 \U0001f600  \U0001f600   \U0001f600",
    "\u263a\ufe0e vs \u263a\ufe0f",
]

NORMALIZATION = [
    "e\u0301",  # e + combining acute (NFC: é)
    "cafe\u0301",
    "A\u030a",  # A + ring (NFC: Å)
    "\u212b",  # Angstrom sign (NFC: Å)
    "\u2126",  # Ohm sign (NFC: Ω)
    "\u1e9b\u0323",  # long s with dot above + dot below
    "\u1100\u1161\u11a8",  # Hangul jamo (NFC: 각)
    "\u0065\u0301\u0302\u0303\u0304",  # stacked combining marks
    "\u0301 leading combining mark",
    "\ufb01 ligature and \ufb03",  # ﬁ ﬃ (NFC keeps)
    "\u00c5 vs A\u030a vs \u212b",
    "o\u0308 u\u0308 a\u0308",
    "\u0915\u093c \u0958",  # Devanagari nukta (composition exclusion)
    "\u2000\u2001\u2002 odd spaces",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349"
    "\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L",
]

WHITESPACE = [
    " ",
    "  ",
    "   ",
    "        ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\n\n\n\n",
    "\r\n",
    "\r\n\r\n",
    "\r",
    " \n ",
    "a b",
    "a  b",
    "a   b",
    "a\tb",
    "a\t\tb",
    "a\nb",
    "a\n\nb",
    "a\r\nb",
    "a \n b",
    "trailing spaces   ",
    "   leading spaces",
    "trailing newline\n",
    "trailing tab\t",
    "mixed \t \n \r\n whitespace",
    "line one\nline two\n\nline four\n",
    "word\u00a0nbsp\u00a0word",
    "ideographic\u3000space",
    "line\u2028separator\u2029para",
    "zero\u200bwidth\u200cnon\u200djoiner",
    "form\x0cfeed and vertical\x0btab",
    "\n\nHello\n\n",
    "  \t  \n  \t  ",
    "end with space and newline \n",
]

DIGITS = [
    "0",
    "7",
    "12",
    "123",
    "1234",
    "12345",
    "123456789",
    "12345678901234567890",
    "3.14159",
    "-42",
    "+1 (555) 123-4567",
    "1,000,000",
    "1.000.000,50",
    "2025-11-29T08:35:00Z",
    "v1.2.3",
    "abc123def456",
    "123abc",
    "a1b2c3",
    "1st 2nd 3rd 4th",
    "0.5 .5 5.",
    "\u0661\u0662\u0663 \u0967\u0968\u0969 \uff11\uff12\uff13",  # Arabic-Indic, Devanagari, fullwidth
    "x\u00b2 + y\u00b3",
    "100%",
    "$9.99",
    "1e10 1E-10",
    "  123  ",
    "007",
    "9" * 40,
]

CONTRACTIONS = [
    "it's", "don't", "we're", "I've", "I'm", "you'll", "he'd",
    "IT'S", "DON'T", "WE'RE", "I'VE", "I'M", "YOU'LL", "HE'D",
    "It'S", "dOn'T",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
    "'S 'T 'RE 'VE 'M 'LL 'D",
    "the dog's bone",
    "they've said they'd go, but they'll not; we're sure it's fine, isn't it?",
    "rock 'n' roll",
    "''quoted''",
    "it\u2019s curly",
    "'hello'",
    "O'Neil's",
    "y'all'd've",
    "'",
    "''",
    "can't won't shan't",
]

SPECIAL = [
    "<longcat_s>",
    "</longcat_s>",
    "<longcat_pad>",
    "<longcat_unk>",
    "<longcat_s>Hello</longcat_s>",
    "Hello</longcat_s>",
    "</longcat_s> [Round 1] USER:hi ASSISTANT:",
    "SYSTEM:You are a helpful assistant. [Round 0] USER:What is 2+2? ASSISTANT:",
    "<longcat_pad><longcat_pad><longcat_pad>",
    "<longcat_tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</longcat_tool_call>",
    "call: <longcat_tool_call>x</longcat_tool_call> done",
    "a <longcat_mask> b",
    "a<longcat_mask>b",
    "a   <longcat_mask>   b",
    "a\n<longcat_mask>\nb",
    "LongCat",
    "LongCat-Flash",
    "LongCatFlash",
    " LongCat ",
    "longcat LONGCAT Longcat",
    "meow",
    "homeowner",
    " meow meow",
    "<longcat_",
    "<longcat_s",
    "longcat_s>",
    "<<longcat_s>>",
    "< longcat_s >",
    "<LONGCAT_S>",
    "<longcat_s><longcat_s>",
    "text<longcat_unk>text",
]

EDGE = [
    "",
    "\x00",
    "a\x00b",
    "\x01\x02\x03\x1f\x7f",
    "\ufffd",
    "\ufffd\ufffd bad bytes \ufffd",
    "\ufeffBOM at start",
    "\ue000 private use \U000f0000",
    "\uffff \ufffe noncharacters",
    "\U0010ffff",
    "<0x41>",
    "<0x0A><0xFF><0xZZ>",
    "\\x00 \\u0000 \\n",
    "\u0120\u010a \u2581",  # byte-level symbols Ġ Ċ and SentencePiece ▁
    "\u2581\u2581hello\u2581world",
    "\u00e2\u0122\u013b mojibake",
    "\u00ef\u00bb\u00bf",
    "\u00c3\u00a9",
    "%00%FF%e2%82%ac",
    "&#x1F600; &amp; &lt;",
    "\u202eRTL override\u202c",
    "\u0000\u0000\u0000",
    "a" * 300,
    "ab" * 150,
    "=" * 100,
    "-" * 64 + "\n" + "*" * 64,
    "\U0001f600" * 50,
    "\u4e2d" * 100,
    "\u00e9" * 60,
]


def lcg_strings(seed, count):
    """Deterministic pseudo-random strings over a mix of Unicode blocks."""
    ranges = [(0x20, 0x7e), (0x20, 0x7e), (0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff),
              (0x400, 0x4ff), (0x590, 0x6ff), (0x900, 0x97f), (0xe00, 0xe7f),
              (0x3040, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0x1f300, 0x1faff),
              (0x300, 0x36f), (0x9, 0xd), (0x2000, 0x206f)]
    state = seed
    out = []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        length = 1 + (state >> 33) % 40
        chars = []
        for _ in range(length):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            lo, hi = ranges[(state >> 33) % len(ranges)]
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            chars.append(chr(lo + (state >> 33) % (hi - lo + 1)))
        out.append("".join(chars))
    return out


def long_text():
    para = ("This License applies to any program or other work which contains a notice placed "
            "by the copyright holder saying it may be distributed under the terms of this "
            "General Public License. ")
    return (para * 6 + "\n\n" + "\u4e2d\u6587\u6bb5\u843d\u3002" * 20 + "\n"
            + "def g(n):\n    return [k for k in range(n)]\n" * 5)


def all_strings():
    strings = (PROSE + CODE + SCRIPTS + EMOJI + NORMALIZATION + WHITESPACE + DIGITS
               + CONTRACTIONS + SPECIAL + EDGE + lcg_strings(20251129, 24) + [long_text()])
    seen, out = set(), []
    for s in strings:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


PAIRS = [
    ("Hello", "world"),
    ("", ""),
    ("question?", "answer."),
    ("<longcat_s>", "x"),
    ("\u4f60\u597d", "  spaced  "),
]


def golden_for(tok, rel):
    cases = []
    for text in all_strings():
        enc = tok.encode(text, add_special_tokens=False)
        enc_sp = tok.encode(text, add_special_tokens=True)
        cases.append({
            "text": text,
            "ids": enc.ids,
            "tokens": enc.tokens,
            "ids_special": enc_sp.ids,
            "decoded": tok.decode(enc.ids, skip_special_tokens=False),
            "decoded_skip": tok.decode(enc.ids, skip_special_tokens=True),
        })
    pairs = [{"a": a, "b": b, "ids_special": tok.encode(a, b, add_special_tokens=True).ids}
             for a, b in PAIRS]
    return {"tokenizer": rel, "tokenizers_version": tokenizers.__version__,
            "cases": cases, "pairs": pairs}


def dump(obj):
    """One case per line: readable diffs, compact file."""
    head = {k: v for k, v in obj.items() if k not in ("cases", "pairs")}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    for key in ("cases", "pairs"):
        lines.append(f' "{key}": [')
        items = [" " + json.dumps(c, ensure_ascii=False) for c in obj[key]]
        lines.append(",\n".join(items))
        lines.append(" ]," if key == "cases" else " ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == obj
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                                   "..", "..")))
    args = ap.parse_args()
    strings = all_strings()
    assert len(strings) >= 220, len(strings)
    out_dir = os.path.join(args.repo, "tests/golden/data/tokenizers")
    os.makedirs(out_dir, exist_ok=True)
    for name, rel in TOKENIZERS.items():
        tok = Tokenizer.from_file(os.path.join(args.repo, rel))
        obj = golden_for(tok, rel)
        path = os.path.join(out_dir, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(dump(obj))
        n_ids = sum(len(c["ids"]) for c in obj["cases"])
        roundtrip = sum(c["decoded"] == c["text"] for c in obj["cases"])
        print(f"wrote {os.path.relpath(path, args.repo)}: {len(obj['cases'])} cases, "
              f"{n_ids} ids, decode(encode(text)) == text for {roundtrip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
