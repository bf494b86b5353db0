"""The demo's data: the built-in text plus a seeded addition corpus, split once into train and held-out.

The split is fixed here, before any training or measuring (issue 13: the evaluation text is never
tuned to reach a number):
- text: the built-in text's paragraphs; the last `HELDOUT_PARAGRAPHS` are held out;
- addition: every line "a + b = c ." with 0 <= a, b <= `ARITH_MAX`; a seeded `HELDOUT_FRACTION` of
  the (a, b) pairs is held out, so held-out sums are never seen in training.

The held-out text and pairs ship with the package (`resources/demo/heldout.txt`, the lm-eval task
`resources/tasks/demo_arith.jsonl`); `scripts/train_demo.py` writes them from these functions.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..runs.cache import cache_root

ARITH_MAX = 29  # operands 0..29, sums 0..58: one word-level token each
HELDOUT_FRACTION = 0.2
HELDOUT_PARAGRAPHS = 3  # of the built-in text's 14
SPLIT_SEED = 13

# The demo's names the input checks read before torch loads (demo.py, which builds it, imports torch);
# demo.py re-exports them.
DEMO_SPEC = "demo"  # MODEL for subcommands that read a checkpoint folder (export, audit): the demo's copy
# A key in the demo's config.json: a saved or exported copy is recognised as the synthetic demo.
DEMO_MARKER = "superexperts_synthetic_demo"
DEMO_PPL = "demo-heldout"  # the demo's default perplexity data: heldout.txt in BOS-first windows
# The demo runs on the built-in text and its held-out split (~1.3k tokens each): short windows.
DEMO_WINDOWS = {"seq_len": 64, "samples": 16}


def resource_dir(*parts: str) -> Path:
    """A folder of the package's resources (e.g. resource_dir("tasks"))."""
    return Path(str(resources.files("superexperts").joinpath("resources", *parts)))


DEMO_VERSION = 3  # bump when the planted recipe or the shipped weights change: it keys the cache folder
WEIGHTS_FILE = "weights.safetensors"


def weights_path() -> Path:
    return resource_dir("demo") / WEIGHTS_FILE


def default_cache_dir() -> Path:
    """Where the demo's saved copy lives (demo.demo_checkpoint builds it there once); named here, without
    torch, so that the input checks can read its config.json when it is built."""
    # The weights' hash too: a retrained weights file (scripts/train_demo.py) never meets a stale cache.
    return cache_root() / f"demo-v{DEMO_VERSION}-{_weights_digest()}"


@functools.lru_cache(maxsize=1)
def _weights_digest() -> str:
    return hashlib.sha256(weights_path().read_bytes()).hexdigest()[:12]


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def arithmetic_words() -> list[str]:
    """The tokens the addition lines add to the demo's word-level vocabulary."""
    return [str(n) for n in range(2 * ARITH_MAX + 1)] + ["+", "="]


def addition_line(a: int, b: int) -> str:
    return f"{a} + {b} = {a + b} ."


@dataclass(frozen=True)
class DemoSplit:
    train_text: list[str]  # paragraphs
    heldout_text: list[str]
    train_pairs: list[tuple[int, int]]  # in the seeded shuffled order (held-out lines are not sorted:
    heldout_pairs: list[tuple[int, int]]  # sorted operands would be predictable, unlike in training)

    def train_units(self) -> list[str]:
        """Training documents: each paragraph and each addition line (shuffled per step by the trainer)."""
        return self.train_text + [addition_line(a, b) for a, b in self.train_pairs]

    def prompts(self) -> list[str]:
        """Generation prompts from held-out data: each held-out paragraph's first five words, and
        three held-out addition lines followed by a fourth question."""
        lines = [addition_line(a, b) for a, b in self.heldout_pairs[:3]]
        a, b = self.heldout_pairs[3]
        return [" ".join(p.split()[:5]) for p in self.heldout_text] + [" ".join([*lines, f"{a} + {b} ="])]

    def arithmetic(self) -> str:
        """The training addition lines, one per line: the demo's second calibration domain."""
        return "".join(addition_line(a, b) + "\n" for a, b in self.train_pairs)

    def heldout(self) -> str:
        """The held-out evaluation text: held-out paragraphs, then held-out addition lines."""
        lines = " ".join(addition_line(a, b) for a, b in self.heldout_pairs)
        return "\n\n".join([*self.heldout_text, lines]) + "\n"


def demo_split(text: str) -> DemoSplit:
    """The fixed train / held-out split of `text` (the built-in text) and of the addition pairs."""
    paras = paragraphs(text)
    pairs = [(a, b) for a in range(ARITH_MAX + 1) for b in range(ARITH_MAX + 1)]
    random.Random(SPLIT_SEED).shuffle(pairs)
    n_held = round(HELDOUT_FRACTION * len(pairs))
    return DemoSplit(
        train_text=paras[:-HELDOUT_PARAGRAPHS], heldout_text=paras[-HELDOUT_PARAGRAPHS:],
        train_pairs=pairs[n_held:], heldout_pairs=pairs[:n_held],
    )  # fmt: skip


def arithmetic_records(pairs: list[tuple[int, int]]) -> list[dict[str, int]]:
    """Rows of the lm-eval task: {"a", "b", "sum"}."""
    return [{"a": a, "b": b, "sum": a + b} for a, b in pairs]
