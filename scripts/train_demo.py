"""Reproduce the demo's shipped weights and data files (issue 13).

    PYTHONPATH=src python scripts/train_demo.py            # train (seeded, 1 thread) and write the resources
    PYTHONPATH=src python scripts/train_demo.py --check    # train and compare with the shipped weights

Writes src/superexperts/resources/demo/{weights.safetensors, heldout.txt, train_record.json} and
src/superexperts/resources/tasks/demo_arith.jsonl. Single-threaded on purpose: the thread count
changes floating-point summation order, and the weights must come out bit for bit the same.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from superexperts.models import demo
from superexperts.models.demo_train import TrainSettings, shipped_state, train_demo, write_resources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped weights; write nothing")
    parser.add_argument("--steps", type=int, default=TrainSettings.steps, help="(for trials; the shipped run "
                        f"uses {TrainSettings.steps})")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = TrainSettings(steps=args.steps)
    start = time.perf_counter()

    def log(step: int, loss: float) -> None:
        if step % 50 == 0 or step == settings.steps - 1:
            print(f"step {step:4d}  loss {loss:.4f}  {time.perf_counter() - start:.0f}s", flush=True)

    model, _, losses = train_demo(settings, log=log)
    if args.check:
        from safetensors.torch import load_file

        shipped = load_file(demo.weights_path())
        trained = shipped_state(model)
        differ = [name for name, t in trained.items() if not torch.equal(t, shipped[name])]
        print("identical to the shipped weights" if not differ else f"{len(differ)} tensors differ, e.g. {differ[:3]}")
        return 1 if differ else 0
    for path in write_resources(model, losses, settings, demo.resource_dir("demo"), demo.tasks_path()):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
