"""Build the class tables the D3S recipe and splits ship with, from public checkouts (run once, offline).

    git clone https://github.com/priyathamkat/d3s /tmp/d3s
    git clone https://github.com/MadryLab/backgrounds_challenge /tmp/bgc
    python scripts/build_imagenet_classes.py --d3s /tmp/d3s --backgrounds-challenge /tmp/bgc

Writes
- ``pipelines/recipes/data/imagenet_classes.tsv``: index, wnid, name (the first synonym of the ImageNet label,
  as D3S's prompts use it) and the WordNet 3.0 gloss (D3S's ``metadata/imagenet_dictionary.json``), one row per
  ImageNet-1k class in class-index order;
- ``ffr/datasets/data/imagenet9.json``: the ImageNet-9 super-classes of "Noise or Signal" (Xiao et al. 2020,
  ``in_to_in9.json`` + ``in9_classes.txt``), as {names, wnids, classes: {imagenet index: super-class index}}.
Only public facts (names, ids, glosses, a class mapping) are taken; no code.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# D3S's synset list maps class 134 (crane, the bird) to the machine's synset 03126707 (class 517), so its prompts
# for 134 carried the machine's gloss. The ImageNet wnid of 134 is n02012849 (class order = sorted wnids, which
# the check below enforces); its WordNet 3.0 gloss replaces the machine's.
CORRECTIONS = {134: ("n02012849", "large long-necked wading bird of marshes and plains in many parts of the world")}


def imagenet_rows(d3s: Path) -> list[dict]:
    # imagenet_label_to_wordnet_synset.txt is a Python dict literal: {0: {'id': '01440764-n', 'label': ...}}
    synsets = ast.literal_eval((d3s / "d3s/metadata/imagenet_label_to_wordnet_synset.txt").read_text())
    glosses = json.loads((d3s / "d3s/metadata/imagenet_dictionary.json").read_text())
    rows = []
    for index in range(1000):
        entry = synsets[index]
        offset, pos = entry["id"].split("-")
        if pos != "n" or len(offset) != 8:
            raise SystemExit(f"class {index}: unexpected synset id {entry['id']!r}")
        definition = " ".join(str(glosses[str(index)]).split())  # one line, no tabs
        wnid = f"n{offset}"
        if index in CORRECTIONS:
            wnid, definition = CORRECTIONS[index]
        rows.append({"index": index, "wnid": wnid, "name": entry["label"].split(",")[0].strip(),
                     "definition": definition})
    wnids = [r["wnid"] for r in rows]
    if wnids != sorted(set(wnids)):
        raise SystemExit("wnids are not unique and sorted (ImageNet's class order is the sorted wnid order)")
    return rows


def imagenet9(bgc: Path) -> dict:
    names, wnids = [], []
    for line in (bgc / "in9_classes.txt").read_text().splitlines():
        if line.strip():
            name, wnid = line.split()
            names.append(name.lower())
            wnids.append(wnid)
    mapping = {int(k): int(v) for k, v in json.loads((bgc / "in_to_in9.json").read_text()).items()}
    classes = {str(k): v for k, v in sorted(mapping.items()) if v >= 0}  # -1: in no super-class
    return {"source": "Xiao et al. 2020, Noise or Signal (MadryLab/backgrounds_challenge in_to_in9.json)",
            "names": names, "wnids": wnids, "classes": classes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d3s", type=Path, required=True, help="a checkout of github.com/priyathamkat/d3s")
    parser.add_argument("--backgrounds-challenge", type=Path, required=True,
                        help="a checkout of github.com/MadryLab/backgrounds_challenge")
    args = parser.parse_args()
    out = ROOT / "pipelines/recipes/data/imagenet_classes.tsv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["index", "wnid", "name", "definition"], delimiter="\t",
                                quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writeheader()
        writer.writerows(imagenet_rows(args.d3s))
    in9 = ROOT / "ffr/datasets/data/imagenet9.json"
    in9.parent.mkdir(parents=True, exist_ok=True)
    in9.write_text(json.dumps(imagenet9(args.backgrounds_challenge), indent=1) + "\n")
    print(f"wrote {out} and {in9}")


if __name__ == "__main__":
    main()
