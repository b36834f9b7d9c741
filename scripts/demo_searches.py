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
    searches = [[patient], [patient, "hémoglobine"], [patient, "HEMOGLOBINES"],
                [patient, "radiographie thoracique"], [patient, "--class", "prescription"]]
    for args in searches:
        print(f"$ carnet search {' '.join(args)}")
        subprocess.run([CARNET, "search", *args, "--limit", "5"], check=True)
        print()
    print("$ carnet search 123 (an invalid patient id is a clear error)")
    subprocess.run([CARNET, "search", "123"], check=False)


if __name__ == "__main__":
    main(sys.argv[1])
