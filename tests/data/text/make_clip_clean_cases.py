#!/usr/bin/python3
"""Writes clip_clean_cases.json: inputs and the text HF's BasicTokenizer(strip_accents=False,
do_split_on_punc=False) produces for them, i.e. " ".join(BasicTokenizer.tokenize(text)), the
cleanup CLIPTokenizer applies when ftfy is absent. transformers is not installed here, so the steps
of transformers 4.45 models/bert/tokenization_bert.py BasicTokenizer are restated below with
Python 3.11's unicodedata (Unicode 14.0.0). Run: /usr/bin/python3 make_clip_clean_cases.py
"""
import json
import unicodedata


def is_control(ch):
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_chinese(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_clean(text):
    text = "".join(" " if is_whitespace(c) else c for c in text
                   if not (ord(c) == 0 or ord(c) == 0xFFFD or is_control(c)))
    text = "".join(" %s " % c if is_chinese(ord(c)) else c for c in text)
    text = unicodedata.normalize("NFC", text)
    words = [w.lower() for w in text.strip().split()]
    return " ".join(" ".join(words).strip().split())


CASES = [
    "A Photo OF a Cat",
    "  tabs\tand\nnewlines\r\n  ",
    "control\x00chars\x07and\x7fdel\u200bzero-width",
    "no-break\u00a0space and\u3000ideographic space",
    "Cafe\u0301 cre\u0300me bru\u0302le\u0301e",
    "\u00c9COLE \u00c0 P\u00c9KIN",
    "\u1e63\u0323 q\u0307\u0323 a\u0323\u0302",
    "\u212b ohm \u2126",
    "\u1100\u1161\u11a8 \ud55c\uad6d\uc5b4",
    "\u6f22\u5b57\u304b\u306a\u4ea4\u3058\u308a",
    "\u0394\u0395\u039b\u03a4\u0391 \u0416\u0423\u041a",
    "line\u2028separator",
]

if __name__ == "__main__":
    cases = [{"input": c, "expected": basic_clean(c)} for c in CASES]
    with open("clip_clean_cases.json", "w", encoding="utf-8") as f:
        json.dump({"unicode_version": unicodedata.unidata_version, "cases": cases}, f,
                  ensure_ascii=True, indent=1)
        f.write("\n")
