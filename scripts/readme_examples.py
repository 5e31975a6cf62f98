"""Regenerate the README's example outputs from real runs (issue #21 item 6).

Each example is a fenced block between ``<!-- example:NAME -->`` and ``<!-- /example:NAME -->``
in README.md; this script runs the example's command (in a fresh temporary directory, or the
project root for `make demo`), and writes the command line and what it printed into the block.
Nothing in those blocks is typed by hand.

    .venv/bin/python scripts/readme_examples.py            # every example
    .venv/bin/python scripts/readme_examples.py demo       # one
    .venv/bin/python scripts/readme_examples.py --check    # exit 1 if a block is missing
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
COLUMNS = "120"  # the width the blocks are written at


@dataclass(frozen=True)
class Example:
    name: str
    shown: str  # the command as the README shows it
    argv: tuple[str, ...]  # what runs (console scripts from this venv)
    in_root: bool = False  # run in the project root (else an empty temporary directory)
    expect: tuple[int, ...] = (0,)  # exit codes that are the example's point


EXAMPLES = (
    Example("jetson", "$ plan --target jetson-nano --max-latency 30ms",
            ("plan", "--target", "jetson-nano", "--max-latency", "30ms")),
    Example("infeasible", "$ plan --target arduino-nano-33-ble --max-flash 4KB --model "
            "lenet5-mnist",
            ("plan", "--target", "arduino-nano-33-ble", "--max-flash", "4KB", "--model",
             "lenet5-mnist"), expect=(1,)),
    Example("demo", "$ make demo", ("bash", "scripts/demo.sh"), in_root=True),
    Example("devices", "$ edgefit devices", ("edgefit", "devices")),
)


def run(example: Example) -> str:
    env = {**os.environ, "COLUMNS": COLUMNS, "PYTHON": str(BIN / "python"),
           "NO_COLOR": "1", "TERM": "dumb"}
    argv = [str(BIN / example.argv[0]) if (BIN / example.argv[0]).exists() else example.argv[0],
            *example.argv[1:]]
    with tempfile.TemporaryDirectory(prefix="edgefit-readme-") as tmp:
        cwd = ROOT if example.in_root else Path(tmp)
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=3600)
    if proc.returncode not in example.expect:
        raise SystemExit(f"{example.name}: exit {proc.returncode}, expected "
                         f"{example.expect}:\n{proc.stderr[-2000:]}")
    text = proc.stdout + (proc.stderr if proc.stderr.strip() else "")
    lines = [ln.rstrip() for ln in text.splitlines()]
    return "\n".join([example.shown, *lines])


def block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- example:{name} -->\n```\n)(.*?)(\n```\n<!-- /example:{name} -->)",
                      re.S)


def main(argv: list[str]) -> int:
    text = README.read_text()
    missing = [e.name for e in EXAMPLES if not block(e.name).search(text)]
    if "--check" in argv:
        if missing:
            print(f"README.md has no block for: {', '.join(missing)}")
            return 1
        return 0
    if missing:
        raise SystemExit(f"README.md has no block for: {', '.join(missing)}")
    wanted = [a for a in argv if not a.startswith("-")]
    for example in EXAMPLES:
        if wanted and example.name not in wanted:
            continue
        output = run(example)
        text = block(example.name).sub(lambda m, out=output: m.group(1) + out + m.group(3),
                                       text)
        print(f"{example.name}: {len(output.splitlines())} lines")
    README.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
