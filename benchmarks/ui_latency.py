"""How long the planner makes a user wait: script-run times of the Streamlit app, headless.

    .venv/bin/python benchmarks/ui_latency.py [--repeat 3] 2>/dev/null

(Streamlit's bare-mode notices go to stderr; the table to stdout.)

Runs `planner_ui/app.py` with Streamlit's AppTest (the same script a browser session runs, no
browser) and prints, per view, the wall time of: the first run (cold caches: simulation, capacity
bisection, cost rollup), a rerun with nothing changed (every result from the digest-keyed cache),
an edit that makes a new scenario (new digest: everything recomputed), and the edit undone (the
old digest: cached again). Compare starts with no scenarios, so its figures are the page shell.
The target (issue 7) is that a cached rerun finishes in well under a
second and that an edit shows its progress box before the work starts — the progress boxes are
drawn before each library call, so the time to first feedback is the sidebar's share of a
cached rerun.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "planner_ui" / "app.py"
VIEWS = ("Overview", "Compare", "Capacity", "Inside one run", "Calibration")


def timed(at: AppTest) -> float:
    t0 = time.perf_counter()
    at.run()
    if at.exception:
        raise SystemExit(f"the app raised: {at.exception[0].value}")
    return time.perf_counter() - t0


def one_round(view: str) -> dict[str, float]:
    import streamlit as st

    st.cache_data.clear()  # caches live in the process: start each round cold
    at = AppTest.from_file(str(APP), default_timeout=600)
    if view != "Overview":
        at.run()  # the builder and the view selector exist after one run; then switch (the Overview's work is cached)
        st.cache_data.clear()
        at.segmented_control(key="view").set_value(view)
    out = {"first run": timed(at), "cached rerun": timed(at)}
    seqs = at.number_input(key="sc.engine.max_num_seqs")
    seqs.set_value(seqs.value // 2)
    out["edit (new digest)"] = timed(at)
    at.number_input(key="sc.engine.max_num_seqs").set_value(seqs.value * 2)
    out["edit undone (cached)"] = timed(at)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="rounds per view (median shown)")
    args = ap.parse_args()
    cols = ("first run", "cached rerun", "edit (new digest)", "edit undone (cached)")
    print(f"{'view':<16}" + "".join(f"{c:>22}" for c in cols) + "   (seconds, median of %d)" % args.repeat)
    for view in VIEWS:
        rounds = [one_round(view) for _ in range(args.repeat)]
        print(f"{view:<16}" + "".join(f"{statistics.median(r[c] for r in rounds):>22.2f}" for c in cols))


if __name__ == "__main__":
    main()
