#!/usr/bin/env python3
"""Regenerate testdata/<fixture>/golden.json from Hugging Face transformers.

golden.json holds what the reference implementation,
DistilBertForSequenceClassification in float32 and eval mode, computes for the
fixture model in the same folder (config.json, model.safetensors,
tokenizer.json). agent/tests/golden.rs checks both of the agent's engines
against it. This script is how that file was made and how to make it again,
for example after a change to the fixture or to the texts. It is not run in CI:
CI installs no Python packages, and the committed golden.json is the reference.

Each text is tokenised with the folder's tokenizer.json:
  - padded: all texts at once, padding="max_length", truncation=True,
    max_length=128, forwarded as one batch, giving input_ids, attention_mask,
    logits, probabilities (softmax of the logits), label (id2label of the
    argmax) and cls_last_hidden_state (the [CLS] token's row of the last hidden
    state);
  - unpadded: each text alone, truncation=True, max_length=128, no padding,
    giving unpadded_input_ids and unpadded_logits. The logits with and without
    padding agree, and that proves which way round the attention mask is applied.
The JSON is written as json.dumps(indent=1): one space per level, non-ASCII
text escaped, floats as Python writes the float32 values, no final newline.

Run it from the repository root with a Python environment that has these
packages (the committed file says which versions made it):

    python3 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install torch==2.15.0 transformers==5.24.0 \
        tokenizers==0.23.3 safetensors==0.8.0
    /tmp/golden-venv/bin/python testdata/regenerate_golden.py --check
    /tmp/golden-venv/bin/python testdata/regenerate_golden.py --out /tmp/golden
    /tmp/golden-venv/bin/python testdata/regenerate_golden.py   # rewrites in place

A CPU-only torch wheel (from download.pytorch.org/whl/cpu) is enough. Without
fixture arguments it runs on every folder under testdata/ that has a
config.json. --check writes nothing: it compares with the committed file and
prints the largest difference. Token ids, masks and labels must be equal.
Numbers agree only to float32 rounding, because the order in which the BLAS
library adds up a product depends on the processor. Measured against the
committed file: on an Intel Xeon CPU every number was equal (even with torch
2.11 and transformers 5.17, so only the two version lines differed); on an AMD
EPYC CPU with the versions above the largest difference was 3.1e-6, and on an
H200 GPU (--device cuda) 4.5e-6, both in a logit. The agent's tests allow
1e-4. Keep a regenerated file only when something real changed.
"""
import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

MAX_LENGTH = 128

# The six texts of golden.json, in order: plain positive and negative
# sentences, punctuation, accents, CJK and an emoji (through the BERT
# normaliser), a one-word text, and one longer than MAX_LENGTH tokens
# (truncation).
TEXTS = [
    "I love this movie!",
    "This film was terrible.",
    "A moving, beautifully shot story; the ending left the whole audience in tears.",
    "Na\u00efve caf\u00e9 r\u00e9sum\u00e9 \u2014 accents and UNICODE: \u6771\u4eac \U0001f916",
    "ok",
    " ".join(["the plot drags on and on"] * 40),
]

ABOUT = (
    "Golden outputs of DistilBertForSequenceClassification (Hugging Face "
    "transformers, float32, eval mode) for the model in this folder. Inputs are "
    "padded to max_length {n} with truncation; 'unpadded_*' is each text alone "
    "without padding. Compare with a tolerance of about 1e-4."
)

# Exact fields (must be equal) and numeric fields (compared within tolerance).
EXACT = ["text", "input_ids", "attention_mask", "unpadded_input_ids", "label"]
NUMERIC = ["logits", "unpadded_logits", "probabilities", "cls_last_hidden_state"]


def golden_for(fixture, device):
    """The golden.json document for the model in `fixture`."""
    import torch
    import transformers
    from transformers import AutoTokenizer, DistilBertForSequenceClassification

    # Plain float32 on a GPU too: no TF32 in matrix products.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    tokenizer = AutoTokenizer.from_pretrained(fixture)
    model = DistilBertForSequenceClassification.from_pretrained(
        fixture, dtype=torch.float32, attn_implementation="sdpa"
    )
    model = model.to(device).eval()

    def forward(encoding, hidden=False):
        with torch.inference_mode():
            return model(
                input_ids=encoding["input_ids"].to(device),
                attention_mask=encoding["attention_mask"].to(device),
                output_hidden_states=hidden,
            )

    padded = tokenizer(
        TEXTS,
        padding="max_length",
        truncation=True,
        max_length=MAX_LENGTH,
        return_tensors="pt",
    )
    out = forward(padded, hidden=True)
    logits = out.logits.float().cpu()
    probabilities = torch.softmax(logits, dim=-1)
    cls = out.hidden_states[-1][:, 0, :].float().cpu()

    cases = []
    for i, text in enumerate(TEXTS):
        alone = tokenizer(
            text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        unpadded_logits = forward(alone).logits.float().cpu()[0]
        best = int(torch.argmax(logits[i]))
        cases.append(
            {
                "text": text,
                "input_ids": padded["input_ids"][i].tolist(),
                "attention_mask": padded["attention_mask"][i].tolist(),
                "unpadded_input_ids": alone["input_ids"][0].tolist(),
                "logits": logits[i].tolist(),
                "unpadded_logits": unpadded_logits.tolist(),
                "probabilities": probabilities[i].tolist(),
                "label": model.config.id2label[best],
                "cls_last_hidden_state": cls[i].tolist(),
            }
        )
    return {
        "about": ABOUT.format(n=MAX_LENGTH),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "max_length": MAX_LENGTH,
        "cases": cases,
    }


def render(document):
    return json.dumps(document, indent=1)


def compare(new, old):
    """(problems, largest numeric difference, where) between two documents."""
    problems = []
    worst, where = 0.0, "-"
    if new["max_length"] != old["max_length"]:
        problems.append(f"max_length {new['max_length']} != {old['max_length']}")
    if len(new["cases"]) != len(old["cases"]):
        problems.append(f"{len(new['cases'])} cases != {len(old['cases'])}")
    for i, (a, b) in enumerate(zip(new["cases"], old["cases"])):
        for field in EXACT:
            if a[field] != b[field]:
                problems.append(f"case {i} ({a['text'][:30]!r}): {field} differs")
        for field in NUMERIC:
            if len(a[field]) != len(b[field]):
                problems.append(f"case {i}: {field} has another length")
                continue
            for x, y in zip(a[field], b[field]):
                d = abs(x - y)
                if not math.isfinite(d):
                    problems.append(f"case {i}: {field} is not finite")
                elif d > worst:
                    worst, where = d, f"case {i} {field}"
    return problems, worst, where


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0],
        epilog="See the top of this file for the packages and versions it needs.",
    )
    p.add_argument(
        "fixtures",
        nargs="*",
        help="fixture folders (default: every testdata/*/ with a config.json)",
    )
    p.add_argument(
        "--out",
        help="write OUT/<fixture>/golden.json instead of replacing the committed file",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; compare with the committed golden.json",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-5,
        help="largest numeric difference --check accepts (default 1e-5)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    a = p.parse_args()

    fixtures = a.fixtures or sorted(
        os.path.join(HERE, d)
        for d in os.listdir(HERE)
        if os.path.isfile(os.path.join(HERE, d, "config.json"))
    )
    if not fixtures:
        sys.exit("no fixture folder (with a config.json) found")
    failed = False
    for fixture in fixtures:
        fixture = os.path.abspath(fixture)
        name = os.path.basename(fixture.rstrip("/"))
        document = golden_for(fixture, a.device)
        text = render(document)
        committed = os.path.join(fixture, "golden.json")
        if os.path.isfile(committed):
            with open(committed, encoding="utf-8") as f:
                old_text = f.read()
            problems, worst, where = compare(document, json.loads(old_text))
            same = "byte-identical" if text == old_text else "not byte-identical"
            print(f"{name}: largest difference from the committed golden.json "
                  f"{worst:.3g} ({where}); {same}")
            for problem in problems:
                print(f"{name}: {problem}")
            if a.check and (problems or worst > a.tolerance):
                failed = True
        elif a.check:
            print(f"{name}: no committed golden.json to check against")
            failed = True
        if a.check:
            continue
        target = os.path.join(a.out, name) if a.out else fixture
        os.makedirs(target, exist_ok=True)
        path = os.path.join(target, "golden.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{name}: wrote {path}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
