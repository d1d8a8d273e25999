#!/usr/bin/env python3
"""Does the zoomed view answer POPE questions better than the plain view? (issue 6 diagnosis)

`p2dpo pairs` run on POPE questions records, per question, the model's greedy answer on every view
P2-DPO builds: the plain image (focus.original), the image + attention crop (focus.chosen), the
erased image (focus.rejected), contrastive amplification (robust.chosen) and a noisy-image sample
(robust.rejected), plus the crop box. This script scores each view's yes/no against the POPE label
and splits the questions by where the crop fell: on the asked object (positives) or on the present
object of the same colour, the look-alike the adversarial question is about (negatives).

  pope_views.py prompts WORLD SPLIT N OUT.jsonl      the first N questions as `p2dpo pairs` prompts
  pope_views.py score WORLD SPLIT PAIRS_DIR OUT.json  the tables (also printed)

Python 3 standard library only. A yes/no is read with POPE's official rule, as `p2dpo eval pope`
does (evaluation spec 2.3): the text before the first '.', commas removed, split on spaces; "no"
when a token is exactly "No", "no" or "not".
"""
import collections
import json
import os
import sys

# (column, what it is, where the pairs record keeps its answer)
VIEWS = [("plain", "the plain image (the model's own answer)", ("focus", "original")),
         ("zoom", "image + attention crop, P_enh (focus winner)", ("focus", "chosen")),
         ("erased", "attention box erased (focus loser)", ("focus", "rejected")),
         ("CA", "contrastive amplification vs the noisy image (robust winner)", ("robust", "chosen")),
         ("noisy", "sample on the noisy image (robust loser)", ("robust", "rejected"))]


def pope_records(world, split):
    path = "%s/eval/pope/world_pope_%s.json" % (world, split)
    return [json.loads(line) for line in open(path) if line.strip()]


def centre_in(box, obj):
    cx, cy = (obj[0] + obj[2]) / 2, (obj[1] + obj[3]) / 2
    return box[0] <= cx < box[2] and box[1] <= cy < box[3]


def yes_no(text):
    words = text.split(".")[0].replace(",", "").split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


def prompts(world, split, n, out):
    with open(out, "w") as f:
        for r in pope_records(world, split)[:n]:
            f.write(json.dumps({"id": str(r["question_id"]), "image": "images/eval/" + r["image"],
                                "question": r["text"]}) + "\n")


def subset_of(rec, truth, scenes):
    """The question's group: label, size of the object the crop should find, whether it found it."""
    if truth["label"] == "yes":
        where = "crop on the asked object" if centre_in(rec["bbox"], truth["bbox"]) else "crop elsewhere"
        return "yes, %s object, %s" % (truth["size"], where)
    colour = truth["object"].split()[0]
    same = [o for o in scenes[truth["scene"]]["objects"] if o["color"] == colour]
    if not same:
        return "no, no object of that colour"
    where = "crop on the look-alike" if centre_in(rec["bbox"], same[0]["bbox"]) else "crop elsewhere"
    return "no, %s look-alike, %s" % (same[0]["size"], where)


def score(world, split, pairs_dir, out):
    truth = {str(r["question_id"]): r for r in pope_records(world, split)}
    scenes = {}
    for line in open(world + "/scenes.jsonl"):
        s = json.loads(line)
        scenes[s["id"]] = s
    counts = collections.defaultdict(lambda: collections.Counter())
    for line in open(pairs_dir + "/pairs.jsonl"):
        rec = json.loads(line)
        t = truth[rec["id"]]
        groups = ["all", "label " + t["label"], subset_of(rec, t, scenes)]
        for name, _, (kind, field) in VIEWS:
            said = yes_no(rec[kind][field])
            for g in groups:
                c = counts[(g, name)]
                c["n"] += 1
                c["correct"] += said == t["label"]
                c["yes"] += said == "yes"
    groups = sorted({g for g, _ in counts}, key=lambda g: (g != "all", not g.startswith("label"), g))
    table = {g: {"n": counts[(g, VIEWS[0][0])]["n"],
                 "views": {v: {"accuracy": round(100 * counts[(g, v)]["correct"] / counts[(g, v)]["n"], 1),
                               "yes_percent": round(100 * counts[(g, v)]["yes"] / counts[(g, v)]["n"], 1)}
                           for v, _, _ in VIEWS}} for g in groups}
    result = {"split": split, "pairs": pairs_dir, "accuracy_by_view": table,
              "views": {name: {"what": what, "field": "%s.%s" % path} for name, what, path in VIEWS}}
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)
    print("accuracy % (yes %) by view, POPE " + split)
    print("%-50s" % "questions" + "".join("%13s" % v for v, _, _ in VIEWS))
    for g in groups:
        row = table[g]
        print("%-50s" % ("%s (%d)" % (g, row["n"])) +
              "".join("%13s" % ("%.1f (%.0f)" % (row["views"][v]["accuracy"], row["views"][v]["yes_percent"]))
                      for v, _, _ in VIEWS))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "prompts":
        prompts(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) == 6 and sys.argv[1] == "score":
        score(*sys.argv[2:])
    else:
        sys.exit(__doc__)
