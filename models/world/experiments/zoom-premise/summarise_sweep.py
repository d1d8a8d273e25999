#!/usr/bin/env python3
"""Summarise attention_sweep.sh's OUT folder into attention-sweep.json (and print a table)."""
import glob
import json
import os
import sys

out = sys.argv[1]
rows = {}
for kept_file in sorted(glob.glob(os.path.join(out, "*-kept.json"))):
    name = os.path.basename(kept_file)[:-len("-kept.json")]
    kept = json.load(open(kept_file))
    every = json.load(open(kept_file.replace("-kept.json", "-all.json")))
    cfg = json.load(open(os.path.join(out, name, "config.json")))
    cfg = cfg.get("pairs", cfg)
    wv = kept["winners_vs_original"]
    pct = lambda v: round(100 * v, 1)
    rows[name] = {
        "attention_prompt": cfg["prompt"]["attention"], "attention_method": cfg["attention"]["method"],
        "attention_layers": cfg["attention"]["layers"],
        "crop_contains_asked_object_all": pct(every["crop_contains_asked_object"]["attention_crop"]),
        "random_box_same_size_all": pct(every["crop_contains_asked_object"]["random_box_same_size"]),
        "kept": kept["pairs"],
        "focus_chosen_more_faithful": pct(kept["focus"]["chosen_more_faithful"]),
        "focus_rejected_more_faithful": pct(kept["focus"]["rejected_more_faithful"]),
        "focus_winner_more_faithful_than_own": pct(wv["focus"]["winner_more_faithful"]),
        "focus_own_more_faithful": pct(wv["focus"]["original_more_faithful"]),
        "robust_winner_more_faithful_than_own": pct(wv["robust"]["winner_more_faithful"]),
        "robust_own_more_faithful": pct(wv["robust"]["original_more_faithful"])}
with open(os.path.join(out, "attention-sweep.json"), "w") as f:
    json.dump(rows, f, indent=1)
for name, r in rows.items():
    print("%-16s crop hit %5.1f (random %4.1f)  kept %3d  focus chosen/rejected %4.1f/%4.1f  "
          "winner/own focus %4.1f/%4.1f robust %4.1f/%4.1f" % (
              name, r["crop_contains_asked_object_all"], r["random_box_same_size_all"], r["kept"],
              r["focus_chosen_more_faithful"], r["focus_rejected_more_faithful"],
              r["focus_winner_more_faithful_than_own"], r["focus_own_more_faithful"],
              r["robust_winner_more_faithful_than_own"], r["robust_own_more_faithful"]))
