"""Step 0 of generators from several `dnw benchmark --step0-only` runs on the same concepts,
against the reference inits of the first: per hold-out kind, each generator's wins over each
reference, Wilcoxon p and the median advantage with its 95% bootstrap interval.

    python tools/compare_step0.py REF_DIR [NAME=DIR ...] [--json out.json]

REF_DIR's inits (its ``generated`` is shown as ``generated``) are the references; each
NAME=DIR adds that run's ``generated`` init as ``NAME`` (NAME=DIR:INIT adds its init INIT). A
bare DIR is named by its folder. ``--refs NAME,...`` turns added inits into references (e.g. a
retrieval baseline that came with another run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from denoised_weights.pipeline.significance import by_split, fmt_p


def load(path: str) -> dict:
    return json.loads((Path(path) / "step0.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ref")
    parser.add_argument("others", nargs="*")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--refs", default="", help="added names that are references, not candidates"
    )
    args = parser.parse_args()
    ref = load(args.ref)
    metric, higher = ref["metric"], ref["higher_is_better"]
    rows = {r["concept"]: {**r, "inits": dict(r["inits"])} for r in ref["rows"]}
    candidates = ["generated"] if "generated" in ref["rows"][0]["inits"] else []
    for item in args.others:
        name, _, path = item.rpartition("=")
        path, _, init = path.partition(":")
        init = init or "generated"
        name = name or Path(path).name
        other = load(path)
        if other["metric"] != metric:
            raise SystemExit(f"{path} measures {other['metric']}, {args.ref} {metric}")
        got = {r["concept"]: r["inits"][init] for r in other["rows"]}
        missing = sorted(set(rows) - set(got))
        if missing:
            raise SystemExit(f"{path} lacks {len(missing)} concepts of {args.ref}: {missing[:3]}")
        for cid, row in rows.items():
            row["inits"][name] = got[cid]
        if name not in args.refs.split(","):
            candidates.append(name)
    inits = list(next(iter(rows.values()))["inits"])
    table = list(rows.values())
    refs = [i for i in inits if i not in candidates]
    report = {}
    print(f"step-0 {metric} ({'higher' if higher else 'lower'} is better), {len(table)} concepts")
    for cand in candidates:
        stats = by_split(table, inits, metric, higher_is_better=higher, candidate=cand)
        report[cand] = stats
        print(f"\n{cand}: median [IQR] and wins over each reference (Wilcoxon p)")
        print(
            "| split | n | "
            + " | ".join([cand, *refs, *(c for c in candidates if c != cand)])
            + " |"
        )
        print("|---" * (3 + len(refs) + len(candidates) - 1) + "|")
        for split, entry in stats.items():
            cells = []
            v = entry["inits"][cand]["value"]
            cells.append(f"{v['median']:.4f}")
            for other in [*refs, *(c for c in candidates if c != cand)]:
                st = entry["inits"][other]
                vs = st.get(f"{cand}_vs")
                med = st["value"]["median"]
                if vs is None:
                    cells.append(f"{med:.4f}")
                else:
                    cells.append(f"{med:.4f}: {vs['wins']}/{vs['n']} (p {fmt_p(vs['p_wilcoxon'])})")
            print(f"| {split} | {entry['concepts']} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
