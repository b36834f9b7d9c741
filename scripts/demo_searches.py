"""Print a few example searches over the demo's index (patients taken from the feed's
expected outcomes), through the same ``carnet search`` command a user would type."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

CARNET = str(Path(sys.executable).with_name("carnet"))


def main(expected_path: str) -> None:
    docs = [json.loads(line) for line in Path(expected_path).read_text().splitlines()]
    good = [d for d in docs if d["expected_status"] in ("indexed", "replaced") and d["patient_id"]]
    # The patient with the most documents makes the most telling example.
    patient, _ = Counter(d["patient_id"] for d in good).most_common(1)[0]
    own = [d for d in good if d["patient_id"] == patient and d["key_terms"] and not d.get("replaced_by")]
    terms = list(dict.fromkeys(d["key_terms"][0] for d in own))[:2]
    searches = [[patient], *([patient, t] for t in terms)]
    if terms:
        # Case, accents and plural do not matter: the same documents come back.
        shouted = terms[0].upper().replace("É", "E").replace("È", "E") + "S"
        searches.append([patient, shouted])
    classes = Counter(d["doc_class"] for d in own)
    if classes:
        searches.append([patient, "--class", classes.most_common()[-1][0]])
    for args in searches:
        print(f"$ carnet search {' '.join(args)}")
        subprocess.run([CARNET, "search", *args, "--limit", "5"], check=True)
        print()
    print("$ carnet search 123 (an invalid patient id is a clear error)")
    subprocess.run([CARNET, "search", "123"], check=False)


if __name__ == "__main__":
    main(sys.argv[1])
