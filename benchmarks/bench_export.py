"""Export throughput vs a plain copy of the checkpoint folder (issue 6, benchmark c).

    python benchmarks/bench_export.py

Uses the synthetic ~1.7 GB checkpoint of bench_stream.py (hub per-expert layout, 8 shards of
one layer each). Both are timed twice, alternating, and the faster run of each is kept, so the
source is in the page cache for both.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_stream import BIG, WORKDIR, write_synthetic

from superexperts.models.checkpoints.export import export_pruned

EXPERTS = [(1, 68 % BIG["num_experts"]), (2, 7), (3, 42), (3, 43)]


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> dict:
    folder = write_synthetic(WORKDIR / "big", BIG)
    size = sum(p.stat().st_size for p in folder.iterdir())
    copies, exports = [], []
    with tempfile.TemporaryDirectory(dir=WORKDIR) as tmp:
        for i in range(2):
            copies.append(_timed(shutil.copytree, folder, Path(tmp) / f"copy{i}"))
            shutil.rmtree(Path(tmp) / f"copy{i}")
            exports.append(_timed(export_pruned, folder, EXPERTS, Path(tmp) / f"export{i}"))
            shutil.rmtree(Path(tmp) / f"export{i}")
    result = {"checkpoint_GB": size / 1e9, "copy_s": min(copies), "export_s": min(exports),
              "copy_GB_per_s": size / 1e9 / min(copies), "export_GB_per_s": size / 1e9 / min(exports),
              "export_over_copy_throughput": min(copies) / min(exports)}  # fmt: skip
    print("(c) export:", json.dumps({k: round(v, 3) for k, v in result.items()}))
    return result


if __name__ == "__main__":
    import argparse

    # No options; parsing still answers --help (and refuses unknown flags) before ~2 GB are written.
    argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="writes its checkpoint under "
                            "SUPEREXPERTS_BENCH_DIR (default /tmp/superexperts-bench)").parse_args()  # fmt: skip
    main()
