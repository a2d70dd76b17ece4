"""Keeps a fuzz corpus within a byte budget, so the committed corpora stay a few MB.

    python3 fuzz/trim.py <target> <budget-KiB> <dir>...

Copies into fuzz/corpus/<target> every input that once crashed (`crash-*`, `timeout-*`, `oom-*`)
and every named test input (`deep-*`) found in the dirs, then the others smallest first (a
libFuzzer `-set_cover_merge=1` of a long run's corpus, plus the seeds) until the budget is spent.
Files are named by their SHA-1, as libFuzzer names them, except the kept named ones.
"""

import hashlib
import shutil
import sys
from pathlib import Path

KEEP = ("crash-", "timeout-", "oom-", "deep-")


def main(target, budget_kib, dirs):
    out = Path(__file__).resolve().parent / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    files = [f for d in dirs for f in Path(d).iterdir() if f.is_file()]
    budget = int(budget_kib) * 1024
    seen = {hashlib.sha1(f.read_bytes()).hexdigest() for f in out.iterdir()}
    spent = sum(f.stat().st_size for f in out.iterdir())
    named = [f for f in files if f.name.startswith(KEEP)]
    others = sorted((f for f in files if not f.name.startswith(KEEP)), key=lambda f: f.stat().st_size)
    for f in named + others:
        data = f.read_bytes()
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen:
            continue
        if not f.name.startswith(KEEP) and spent + len(data) > budget:
            break
        seen.add(digest)
        spent += len(data)
        shutil.copyfile(f, out / (f.name if f.name.startswith(KEEP) else digest))
    print(f"{target}: {len(list(out.iterdir()))} inputs, {spent // 1024} KiB")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
