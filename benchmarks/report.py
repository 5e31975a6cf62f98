"""docs/report.md and its figures, rebuilt from the committed benchmark outputs (`make report`).

Run: .venv/bin/python benchmarks/report.py [--out-dir DIR]   (default: docs/)

Nothing in docs/report.md is written by hand. The benchmarks (`make bench`) write markdown
documents (docs/bench-*.md, docs/cost-model-*.md, docs/accuracy-estimators.md) and the scenario
examples write their plan output (examples/scenarios/output/*.txt); this script parses their
tables (markdown-it-py, already installed with rich) and the plan outputs, and quotes cells as
the benchmark printed them. The techniques benchmark also writes a JSON sidecar beside its
markdown (the printed cells and the values behind them); where one exists it is read instead
of the markdown table (the committed runs predate it). Every section names the file, the
table's line and the command that made it. Nothing is computed into a number the report
prints: the figures compute (an accuracy drop from the two accuracies of a cell, a value from
its cell's leading number) and 'Which technique wins where' picks rows, and both say so. An
input that is missing is reported as missing in its section, never filled in. Deterministic:
the same inputs give the same report and the same PNGs (tests/benchmarks/test_report.py checks
both).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ".venv/bin/python benchmarks/report.py"
MISSING = "missing input:"  # the marker of a source the report could not read

TECHNIQUE_FILES = (  # the techniques benchmark's outputs, in the order their rows are shown
    "docs/bench-techniques.md", "docs/bench-techniques-nm.md",
    "docs/bench-techniques-mobilenet.md", "docs/bench-techniques-mobilenet-channels.md",
    "docs/bench-techniques-minilm.md")
ESTIMATORS = "docs/accuracy-estimators.md"
QAT = "docs/bench-qat.md"
STUDENT = "docs/bench-student.md"
MINILM = "docs/bench-minilm.md"
SKELETON = "docs/bench-walking-skeleton.md"
PLANNING = "docs/bench-accuracy-planning.md"
ACCURACY = "docs/cost-model-accuracy.md"
FIT = "docs/cost-model-fit.md"
PEERS = "docs/bench-peers.md"
DEEP = "docs/bench-deep-compression.md"
INT8 = "docs/bench-int8-qlinear.md"
ORDER_STUDY = "docs/bench-order-study.md"
INPUTS = (*TECHNIQUE_FILES, DEEP, ORDER_STUDY, ESTIMATORS, QAT, STUDENT, MINILM, SKELETON, INT8,
          PLANNING, ACCURACY, FIT, PEERS)  # every markdown input, in the order the Inputs
# table lists them
SCENARIOS = "examples/scenarios/output"
SCENARIO_RUN = "examples/scenarios/run.sh"
COMPARE = "benchmarks/compare_techniques.py"  # its ORDERS list names the order pairs

NUMBER = re.compile(r"(?<![\w.#])(?<!\w-)\d[\d,]*(?:\.\d+)?")
MADE_BY = re.compile(r"\b(?:Made|Produced|Generated|printed) by\b")
TERMINATOR = re.compile(r";|\.\s|\.$")
COVERAGE = re.compile(r"\s*\((\d+/\d+ layers|the layers with an N:M form)\)$")


def number_tokens(text: str) -> set[str]:
    """The numbers a text states, as written (thousands separators kept, trailing commas cut);
    digits inside names (int8, lenet5, S-TINY05, x86-64, LeNet-5) and issue numbers (#20) are
    not numbers."""
    return {m.group().rstrip(",") for m in NUMBER.finditer(text)}


# ---------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Table:
    path: str  # repository-relative source file
    line: int  # 1-based line of the header row
    command: tuple[str, ...]  # the command(s) the source names for this table; () if none
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def column(self, prefix: str) -> int:
        """Index of the first header that starts with ``prefix``."""
        for i, name in enumerate(self.header):
            if name.startswith(prefix):
                return i
        raise KeyError(f"{self.path}:{self.line}: no column {prefix!r} in {self.header}")

    def get(self, row: tuple[str, ...], prefix: str) -> str:
        return row[self.column(prefix)]


@dataclass(frozen=True)
class Source:
    path: str
    text: str
    tables: tuple[Table, ...]
    commands: tuple[tuple[str, ...], ...]  # every command the file names, in order

    def table(self, first_header: str, containing: str = "") -> Table:
        """The first table whose header starts with ``first_header`` and has a column starting
        with ``containing``."""
        for t in self.tables:
            if t.header and t.header[0] == first_header and (
                    not containing or any(h.startswith(containing) for h in t.header)):
                return t
        raise KeyError(f"{self.path}: no table ({first_header!r}, {containing!r})")


def commands_in(text: str) -> list[str] | None:
    """The backticked commands of a 'Made by `...`' sentence (None: no such sentence; []: the
    sentence names its command in the fenced block that follows)."""
    m = MADE_BY.search(text)
    if m is None:
        return None
    spans: list[str] = []
    for k, part in enumerate(text[m.end():].split("`")):
        if k % 2:
            spans.append(part)
            continue
        if spans and (flags := re.match(r"\s*\((--[^)]*)\)", part)):
            spans[-1] += " " + flags.group(1)  # "`script.py` (--rounds 4 ...)": its flags
        if TERMINATOR.search(part):
            break
    return spans


def parse_markdown(path: str, text: str) -> Source:
    """Every table of a markdown file with the command named above it (the nearest preceding
    'Made by' sentence, or the fenced block after a 'printed by' / 'run of' sentence)."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables: list[Table] = []
    commands: list[tuple[str, ...]] = []
    command: tuple[str, ...] = ()
    awaiting_fence = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "table_open":
            table, i = _table(tokens, i, path, command)
            tables.append(table)
            continue
        if tok.type == "fence" and awaiting_fence:
            command = tuple(line.strip() for line in tok.content.splitlines() if line.strip())
            commands.append(command)
            awaiting_fence = False
        elif tok.type == "inline" and (spans := commands_in(tok.content)) is not None:
            awaiting_fence = not spans
            if spans:
                command = tuple(spans)
                commands.append(command)
        i += 1
    return Source(path, text, tuple(tables), tuple(commands))


def _table(tokens: list, start: int, path: str,  # noqa: ANN401 (markdown-it tokens)
           command: tuple[str, ...]) -> tuple[Table, int]:
    line = tokens[start].map[0] + 1 if tokens[start].map else 0
    header: list[str] = []
    rows: list[list[str]] = []
    i = start + 1
    while tokens[i].type != "table_close":
        tok = tokens[i]
        if tok.type == "tr_open":
            rows.append([])
        elif tok.type == "inline":
            rows[-1].append(tok.content)
        i += 1
    header, *body = rows
    return Table(path, line, command, tuple(header), tuple(tuple(r) for r in body)), i + 1


def read_source(root: Path, rel: str) -> Source | None:
    path = root / rel
    if not path.is_file():
        return None
    return parse_markdown(rel, path.read_text(encoding="utf-8"))


def read_techniques(root: Path, rel: str) -> Source | None:
    """A techniques benchmark output: the rows of its JSON sidecar (``.json`` beside the
    markdown, the cells as printed) when the run wrote one, else the markdown's table."""
    json_rel = str(Path(rel).with_suffix(".json"))
    if not (root / json_rel).is_file():
        return read_source(root, rel)
    text = (root / json_rel).read_text(encoding="utf-8")
    data = json.loads(text)
    command = (data["command"],)
    tables = tuple(Table(json_rel, 0, command, tuple(header), tuple(
        tuple(r["cells"]) for r in data["rows"] if r["metric"] == metric))
        for metric, header in data["headers"].items())
    return Source(json_rel, text, tables, (command,))


def paragraph(text: str, prefix: str) -> str:
    """The paragraph (blank-line separated, lines joined) that starts with ``prefix``."""
    for block in re.split(r"\n\s*\n", text):
        if block.lstrip().startswith(prefix):
            return " ".join(line.strip() for line in block.strip().splitlines())
    return ""


def bullets_after(text: str, heading: str) -> list[str]:
    """The '- ' list items (continuation lines joined) of the section under ``heading``."""
    lines = text.split(heading, 1)[1].splitlines()[1:] if heading in text else []
    items: list[str] = []
    for line in lines:
        if line.startswith("#"):
            break
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    return items


def leading_number(cell: str) -> float | None:
    """The first number of a cell ('16.8 (-5.1 %)' -> 16.8; '10,592 (5,888 + ...)' -> 10592)."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell)
    return float(m.group().replace(",", "")) if m else None


# ------------------------------------------------------------------------- the techniques


@dataclass(frozen=True)
class Row:
    """One row of a techniques table, cells as printed."""
    model: str
    label: str  # the technique, without the '(k/n layers)' note
    size_ratio: str  # '4.0x'
    latency_ratio: str  # '0.73'
    before: str  # the fp32 quality ('97.35', '1.0000')
    after: str  # the compressed quality ('97.30 %', '0.8553 (0.8277)')
    refused: str  # the benchmark's refusal, '' when the row ran
    path: str

    def cell(self) -> str:
        if self.refused:
            return "refused"
        return f"{self.size_ratio} · {self.latency_ratio} · {self.after}"


def technique_rows(sources: Sequence[Source]) -> list[Row]:
    rows = []
    for src in sources:
        t = src.table("model", "technique")
        for r in t.rows:
            label = COVERAGE.sub("", t.get(r, "technique"))
            image = t.get(r, "flash image")
            before, _, after = r[-1].partition(" -> ")  # the quality column is the last
            rows.append(Row(t.get(r, "model"), label, t.get(r, "size ratio"),
                            t.get(r, "latency ratio"), before, after,
                            image if image.startswith(("refused", "failed")) else "", src.path))
    return rows


def order_pairs(root: Path) -> list[tuple[str, str]]:
    """The techniques benchmark's order pairs: consecutive ORDERS entries with the same option
    and fine-tuning (read from its source, so a pair added there shows up here)."""
    tree = ast.parse((root / COMPARE).read_text(encoding="utf-8"))
    orders: list[tuple[str, str, int, str]] = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "ORDERS":
            orders = ast.literal_eval(node.value)  # type: ignore[arg-type]
    pairs, i = [], 0
    while i + 1 < len(orders):
        if orders[i][1:3] == orders[i + 1][1:3]:
            pairs.append((orders[i][0], orders[i + 1][0]))
            i += 2
        else:
            i += 1
    return pairs


def is_single(label: str) -> bool:
    return "->" not in label and "distill" not in label


FAMILIES = (  # label prefix -> (family, what it stores / changes), from the benchmark's notes
    ("fp16", "quantisation", "half-precision floats"),
    ("int8 (w+a)", "quantisation", "int8 weights and activations (integer kernels)"),
    ("int8 weights", "quantisation", "int8 weights, int16 activations"),
    ("int", "quantisation", "weights only, symmetric codes bit-packed"),
    ("uint", "quantisation", "weights only, asymmetric codes with zero points"),
    ("prune", "unstructured pruning", "zeros stored as bitmask / CSR; onnxruntime has no "
     "sparse kernels, so size changes, not speed"),
    ("N:M", "semi-structured pruning", "2 of every 4 weights along the input"),
    ("low-rank", "factorisation", "each layer as two thin dense layers"),
    ("share", "weight sharing", "k-means codebook, Huffman-coded indices, decoded to fp32 at "
     "load time"),
    ("channels", "structured pruning", "channels removed by Torch-Pruning: a smaller dense "
     "model"),
)


def family(label: str) -> tuple[str, str]:
    for prefix, name, what in FAMILIES:
        if label.startswith(prefix):
            return name, what
    return "other", ""


# ------------------------------------------------------------------------------ rendering


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)


def fmt_command(command: Sequence[str]) -> str:
    if not command:
        return "(the file names no command)"
    main = f"`{command[0]}`"
    if len(command) > 1 and "python" not in command[0]:  # 'make bench' (`python ...run.py`)
        main += " (" + ", ".join(f"`{c}`" for c in command[1:] if "python" in c) + ")"
    elif len(command) > 1 and all("python" in c for c in command):  # a fenced block of runs
        main = "; ".join(f"`{c}`" for c in command)
    return main


def provenance(table: Table, what: str = "table") -> str:
    if table.path.endswith(".json"):
        return (f"*Source:* `{table.path}` (the benchmark's JSON sidecar: the rows it "
                f"printed), made by {fmt_command(table.command)}.")
    return (f"*Source:* `{table.path}` ({what} at line {table.line}), made by "
            f"{fmt_command(table.command)}.")


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return out


def quote_columns(table: Table, prefixes: Sequence[str],
                  keep: Callable[[tuple[str, ...]], bool] = lambda r: True) -> list[str]:
    """The table's rows, only the columns named (by header prefix), cells unchanged."""
    idx = [table.column(p) for p in prefixes]
    return md_table([table.header[i] for i in idx],
                    ([r[i] for i in idx] for r in table.rows if keep(r)))


def missing(section: Section, rel: str, why: str = "not found") -> None:
    section.add(f"**{MISSING} `{rel}` {why}**; this part of the report is empty until the "
                f"benchmark that writes it is run (`make bench`).", "")


# ------------------------------------------------------------------------------- sections

FIGURES = {  # file name (beside report.md) -> what it shows
    "techniques": "report-techniques.png",
    "predicted": "report-predicted-vs-measured.png",
    "classes": "report-classes.png",
    "orders": "report-order-study.png",
}


def taxonomy(rows: list[Row], sources: Sequence[Source]) -> Section:
    s = Section("What each technique trades, measured")
    s.add("Every compression technique edgefit plans, applied alone to every layer that can "
          "take it and measured on this machine. A cell is *size ratio · host latency ratio · "
          "quality after* (size = the packed flash image against the fp32 image; latency = "
          "onnxruntime, 1 thread, against the fp32 export in the same run; quality = top-1 "
          "accuracy on the held-out split, or for the transformer the embeddings' cosine to "
          "the fp32 model's, the deployed ONNX model's in parentheses). A dash: no row in any "
          "source table (the benchmark offers no channel pruning on the encoder). The sources' "
          "'(k/n layers)' notes (how many layers could take the option; the rest keep the "
          "dense option of the same precision) are left out of the cells.", "")
    s.add(*md_table(["family", "techniques", "what it stores or changes"],
                    _family_rows([r.label for r in rows if is_single(r.label)])), "")
    s.add(*_grid(rows, [lab for lab in dict.fromkeys(r.label for r in rows) if is_single(lab)]))
    s.add("", f"![size against accuracy drop per technique]({FIGURES['techniques']})", "",
          "*Figure:* every row of the techniques tables (single techniques, combinations, "
          "fine-tuned), size ratio against the quality lost (accuracy drop in pp = fp32 "
          "accuracy minus the row's, computed by this script from the two numbers of the "
          "cell; for the transformer one minus the torch model's cosine; a negative drop is "
          "drawn at zero). Labelled: the rows no other row beats on both axes, among those "
          "that lose little.", "")
    s.add(*(provenance(src.table("model", "technique")) for src in sources))
    return s


def _family_rows(labels: Iterable[str]) -> list[list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for label in dict.fromkeys(labels):
        name, what = family(label)
        grouped.setdefault((name, what), []).append(label)
    return [[name, ", ".join(ls), what] for (name, what), ls in grouped.items()]


def _grid(rows: list[Row], labels: Sequence[str]) -> list[str]:
    """A technique x model table of cells (the first source's row when two files hold one)."""
    models = list(dict.fromkeys(r.model for r in rows))
    cells: dict[tuple[str, str], str] = {}
    for r in rows:
        cells.setdefault((r.model, r.label), r.cell())
    header = ["technique"] + [_model_header(m, rows) for m in models]
    return md_table(header, ([lab] + [cells.get((m, lab), "-") for m in models]
                             for lab in labels))


def _model_header(model: str, rows: list[Row]) -> str:
    first = next(r for r in rows if r.model == model and not r.refused)
    unit = " %" if first.after.endswith("%") else " cosine"
    return f"{model} (fp32 {first.before}{unit})"


MAX_DROP_PP = 1.0  # "within 1 pp of fp32": the accuracy rule most scenarios use
MIN_COSINE = 0.99  # the transformer's counterpart: embeddings within 1 % of fp32's


def within(row: Row) -> bool:
    """Whether a row keeps its quality: drop <= 1 pp, or (encoder) cosine >= 0.99 for the
    torch model and the deployed ONNX model both."""
    loss = _loss(row)
    if loss is None:
        return False
    if row.after.endswith("%"):
        return loss <= MAX_DROP_PP
    return all(float(v) >= MIN_COSINE for v in re.findall(r"\d\.\d+", row.after))


def changes_speed(label: str) -> bool:
    """Whether a row's model runs a different graph on onnxruntime: pruned and shared weights
    are stored compressed but run as dense fp32 (no sparse kernels; shared weights are decoded
    at load), so their latency ratio is run-to-run noise, not a speed-up."""
    return any(k in label for k in ("fp16", "int", "low-rank", "channels"))


def winners(rows: list[Row], sources: Sequence[Source]) -> Section:
    s = Section("Which technique wins where")
    s.add(f"Picked by this script from the techniques tables (cells quoted as above: size "
          f"ratio · host latency ratio · quality after): per workload, among the rows that "
          f"lose at most {MAX_DROP_PP:g} pp of accuracy (the transformer: whose cosine to the "
          f"fp32 embeddings stays at least {MIN_COSINE:g}, torch and deployed ONNX alike), the "
          "row with the smallest flash image and the row with the lowest host latency. The "
          "latency column considers only rows that change the graph onnxruntime runs "
          "(quantisation, factorisation, channel pruning): pruned and shared weights run as "
          "dense fp32 here, so their latency ratios are run-to-run noise on this shared "
          "machine. Host latency is this machine's onnxruntime; on a board the fastest row "
          "can differ (the predicted-against-measured section says how far the cost models "
          "carry).", "")
    table = []
    for model in dict.fromkeys(r.model for r in rows):
        kept = [r for r in rows if r.model == model and within(r)]
        smallest = _best(kept, lambda r: -(leading_number(r.size_ratio) or 0.0))
        fastest = _best([r for r in kept if changes_speed(r.label)],
                        lambda r: leading_number(r.latency_ratio) or float("inf"))
        table.append([_model_header(model, rows), *(f"{r.label}: {r.cell()}" if r else "none"
                                                    for r in (smallest, fastest))])
    s.add(*md_table(["workload", "smallest image", "fastest on this host"], table), "")
    s.add(*(provenance(src.table("model", "technique")) for src in sources))
    return s


def _best(rows: list[Row], key: Callable[[Row], float]) -> Row | None:
    """The row with the lowest key; ties go to the row that loses least, then the first."""
    order = sorted(enumerate(rows), key=lambda ir: (key(ir[1]), _loss(ir[1]) or 0.0, ir[0]))
    return order[0][1] if order else None


def combinations(rows: list[Row], pairs: list[tuple[str, str]], sources: Sequence[Source]
                 ) -> Section:
    s = Section("Combinations and fine-tuning, per workload")
    ordered = {label for pair in pairs for label in pair}
    labels = [lab for lab in dict.fromkeys(r.label for r in rows)
              if not is_single(lab) and lab not in ordered]
    s.add("Techniques applied together in the planner's default order (prune -> factorise -> "
          "share -> quantise, fine-tuning before quantisation), cells as in the table above. "
          "'distill 2 ep' is the fine-tuning budget: 2 epochs of distillation from the fp32 "
          "model; no row is fine-tuned unless it says so. The CNNs are ten-class image "
          "classifiers (MNIST, Fashion-MNIST); minilm-l6 is the transformer (a pretrained "
          "sentence encoder), which has no fine-tuning rows.", "")
    s.add(*_grid(rows, labels), "")
    s.add(*(provenance(src.table("model", "technique")) for src in sources))
    return s


def order_study(src: Source | None) -> Section:
    """Every defined ordered pair and triple at a matched flash size (the study's file)."""
    s = Section("The combination-and-order study")
    if src is None:
        missing(s, ORDER_STUDY)
        return s
    counts = src.table("techniques in a row", "defined")
    results = src.table("order", "settings")
    orders = src.table("techniques", "one order")
    undefined = src.table("order", "why not")
    s.add("Every technique of the registry (quantisation as int8 weights and activations, "
          "and as int4 weights), alone, in pairs and in triples, in every order the executor "
          "defines, each searched to one flash size (the packed image, matched within the "
          "tolerance the source states; 'matched' says whether a row got there) and measured "
          "on the held-out split with no fine-tuning and after the source's distillation "
          "budget. One strength drives every continuous knob of a row; a row with only "
          "discrete knobs (quantisation, N:M, sharing's codebook bits) is searched over its "
          "levels and may stay off the target. The source's first paragraph states the "
          "model, the target, the data and the budget. How many orders exist and how many "
          "the executor defines:", "")
    s.add(*quote_columns(counts, list(counts.header)), "")
    defined = sum(int(leading_number(counts.get(r, "defined")) or 0) for r in counts.rows)
    # defined on the toy network but refused by the executor on the model: measured too
    on_model = [t for t in src.tables if t.header == undefined.header][1:]
    tried = len(results.rows) + sum(len(t.rows) for t in on_model)
    if tried < defined:  # the benchmark writes its file after every row
        stopped = paragraph(src.text, "The run stopped before")
        s.add("**The run that wrote the source stopped before every defined order was "
              "measured**: its results table and the orders refused on the model itself have "
              "fewer rows than the defined count above."
              + (f" The source says: {stopped}" if stopped else ""), "")
    s.add(*quote_columns(results, list(results.header)), "", provenance(results), "")
    s.add("The same techniques in different orders, side by side:", "")
    s.add(*quote_columns(orders, list(orders.header)), "", provenance(orders), "")
    s.add("Why the other orders are not defined: the quantisation is the kernel's (last), "
          "channel pruning is model-level (first), and the executor refuses the rest with "
          "the messages below (the pairs; the source lists the triples too).", "")
    s.add(*quote_columns(undefined, list(undefined.header),
                         keep=lambda r: r[0].count("->") == 1), "")
    for t in on_model:  # defined on the toy network, refused by apply's checks on the model
        s.add("Defined on the toy network but refused by the executor on the model itself:",
              "", *quote_columns(t, list(t.header)), "")
    s.add(f"![accuracy at matched size, by order]({FIGURES['orders']})", "",
          "*Figure:* the accuracy column pairs of the results table, every defined "
          "combination of two or three techniques, grouped by its set of techniques (each "
          "order a bar; hollow: no fine-tuning, filled: after distillation; hatched: the "
          "row missed the matched size).", "")
    s.add(provenance(undefined))
    return s


def technique_orders(rows: list[Row], pairs: list[tuple[str, str]], sources: Sequence[Source]
                     ) -> Section:
    s = Section("Orders in the techniques benchmark")
    models = list(dict.fromkeys(r.model for r in rows))
    by_key = {(r.model, r.label): r for r in reversed(rows)}
    s.add(f"{len(pairs)} pairs of techniques from the techniques benchmark, each applied in "
          f"both orders to the same plan and measured on every workload (the pairs of "
          f"`{COMPARE}`'s `ORDERS`); sizes are not matched (the two orders store different "
          "bytes; both are shown; the matched-size study is the section above). "
          "Fine-tuning: none, except the rows that say 'distill 2 ep'.", "")
    for first, second in pairs:
        s.add(f"**{first}** against **{second}**", "")
        s.add(*md_table(["model", f"{first}", f"{second}"],
                        ([m, _order_cell(by_key.get((m, first))),
                          _order_cell(by_key.get((m, second)))] for m in models)), "")
    s.add(*(provenance(src.table("model", "technique")) for src in sources
            if any(r.path == src.path and r.label in {*sum(pairs, ())} for r in rows)))
    return s


def _order_cell(row: Row | None) -> str:
    if row is None:
        return "-"
    if row.refused:
        return row.refused.replace("|", "/")
    return row.cell()


MNIST_TASKS = ("lenet5-mnist", "lenet5-mnist-parity")  # 10 and 2 classes
FASHION_TASKS = ("fashion-cnn", "fashion-cnn-apparel", "fashion-cnn-shirts")  # 10, 2, 2 classes
NOT_RUN_YET = {"fashion-cnn-apparel"}  # defined in the benchmark, quoted once a run has it
TASK_NAMES = {"lenet5-mnist": "10 classes", "lenet5-mnist-parity": "2 classes (even / odd)",
              "fashion-cnn": "10 classes",
              "fashion-cnn-apparel": "2 classes (clothing / footwear and bags)",
              "fashion-cnn-shirts": "2 classes (T-shirt/top / shirt only)"}


def _last_table(src: Source, first_header: str, has: Callable[[Table], bool]) -> Table | None:
    """The last table whose header starts with ``first_header`` and that ``has`` what is asked:
    the estimators file prints its tables once per run, and a later run of a workload is the
    one to quote."""
    found = None
    for t in src.tables:
        if t.header and t.header[0] == first_header and has(t):
            found = t
    return found


def _with_row(containing: str, task: str) -> Callable[[Table], bool]:
    return lambda t: any(h.startswith(containing) for h in t.header) and any(
        r[0] == task for r in t.rows)


def _with_column(task: str) -> Callable[[Table], bool]:
    return lambda t: any(h.startswith(f"{task} drop") for h in t.header)


def _task_rows(src: Source, first_header: str, containing: str, tasks: Sequence[str],
               columns: Sequence[str], keep: Callable[[tuple[str, ...]], bool] = lambda r: True
               ) -> tuple[list[str], list[Table]]:
    """Each task's rows (first cell = the task) from the last table holding them, only the
    columns named, cells unchanged (every task has a table: the caller checked)."""
    picked = [t for task in tasks
              if (t := _last_table(src, first_header, _with_row(containing, task)))]
    rows = [[t.get(r, c) for c in columns] for task, t in zip(tasks, picked, strict=True)
            for r in t.rows if r[0] == task and keep(r)]
    header = [picked[0].header[picked[0].column(c)] for c in columns]
    return md_table(header, rows), picked


def _task_drops(src: Source, tasks: Sequence[str]
                ) -> tuple[list[tuple[str, str]], dict[str, list[str]], list[Table]]:
    """The single-layer drop cells per (layer, option), one column per task, each from the
    last table with that task's column ('-': the task has no such option)."""
    picked = [t for task in tasks if (t := _last_table(src, "layer", _with_column(task)))]
    keys = list(dict.fromkeys((t.get(r, "layer"), t.get(r, "option"))
                              for t in picked for r in t.rows))
    cells: dict[str, list[str]] = {}
    for task, t in zip(tasks, picked, strict=True):
        by_key = {(t.get(r, "layer"), t.get(r, "option")): t.get(r, f"{task} drop")
                  for r in t.rows}
        cells[task] = [by_key.get(k, "-") for k in keys]
    return keys, cells, picked


def measured_tasks(src: Source, tasks: Sequence[str]) -> list[str]:
    """The tasks the file has every class-count table for."""
    return [task for task in tasks if all((
        _last_table(src, "workload", _with_row("classes", task)),
        _last_table(src, "workload", _with_row("estimator", task)),
        _last_table(src, "layer", _with_column(task))))]


def _class_tables(s: Section, src: Source, tasks: Sequence[str]) -> list[Table]:
    """One data set's rows: its workloads, the planner's estimate's ranking, and the single-layer
    drops (rows where every task loses 0.00 pp or has no such option left out); the tables
    quoted."""
    work = _task_rows(src, "workload", "classes", tasks, [
        "workload", "classes", "fp32 test accuracy", "test images", "real drop"])
    ranks = _task_rows(src, "workload", "estimator", tasks,
                       ["workload", "estimator", "Spearman vs real acc drop"],
                       keep=lambda r: r[1] == "kl")
    keys, cells, single = _task_drops(src, tasks)
    quiet = ("0.00 (", "-")
    rows = [[layer, option, *(cells[t][i] for t in tasks)]
            for i, (layer, option) in enumerate(keys)
            if any(not cells[t][i].startswith(quiet) for t in tasks)]
    s.add(*work[0], "", *ranks[0], "")
    s.add(*md_table(["layer", "option", *(f"{t} drop pp (dloss)" for t in tasks)], rows), "")
    return list(dict.fromkeys([*work[1], *ranks[1], *single]))


def class_count(src: Source | None) -> Section:
    s = Section("Ten classes against two")
    if src is None:
        missing(s, ESTIMATORS)
        return s
    s.add("The same network trained on the same images with 10 outputs and with 2, the same "
          "random-plan seed (no fine-tuning) and single-layer options applied to each; how "
          "much accuracy compression costs, and how well the planner's estimate (summed "
          "per-layer KL, `kl`) ranks plans by their real drop. Two data sets: LeNet-5 on MNIST "
          "(digits relabelled even / odd), an easier task than the 10 digits; and fashion-cnn on "
          "Fashion-MNIST, where the 2-class task is the pair the 10-class model confuses "
          "most, T-shirt/top against shirt (only those images), a harder task than the 10 "
          "classes. A second Fashion-MNIST task, clothing against footwear and bags on every "
          "image, is defined in the benchmark (`--dataset fashion`) but not run yet.", "")
    quoted: list[Table] = []
    for title, flag, tasks in (("MNIST", "mnist", MNIST_TASKS),
                               ("Fashion-MNIST", "fashion", FASHION_TASKS)):
        s.add(f"**{title}**", "")
        found = measured_tasks(src, tasks)
        if absent := [t for t in tasks if t not in found and t not in NOT_RUN_YET]:
            s.add(f"**{MISSING} `{src.path}` has no class-count tables for "
                  f"{', '.join(absent)}**; run "
                  f"`benchmarks/accuracy_estimators.py --dataset {flag}`.", "")
        if found:
            quoted += _class_tables(s, src, found)
    s.add("(Single-layer rows where every task loses 0.00 pp are left out; the source has "
          "them. A dash: the task has no such option.)", "",
          f"![single-layer drop, 10 classes against 2]({FIGURES['classes']})",
          "", "*Figure:* the single-layer drops of the tables above (every row of the source "
          "tables), the number before the parenthesis of each cell; no bar: 0.00 or no such "
          "option.", "")
    lines = sorted({t.line for t in quoted})
    commands = dict.fromkeys(fmt_command(t.command) for t in quoted)
    s.add(f"*Source:* `{src.path}`, tables at lines {', '.join(map(str, lines[:-1]))} and "
          f"{lines[-1]}, made by {' and '.join(commands)}. Limits the source states: one "
          "trained model per task; each 2-class task changes the difficulty as well as the "
          "number of classes (parity is easier than the 10 digits, the shirt pair harder than "
          "the 10 Fashion-MNIST classes), so the comparison shows how sensitivity can change "
          "with the task, not a law; the 2-class fashion-cnn has fewer options than the "
          "10-class one (its last layer is too small to prune), so its random plans are "
          "different draws; the Fashion-MNIST rows come from a later run of the benchmark "
          "than the MNIST rows, with a larger option set.")
    return s


def quoted_section(title: str, src: Source | None, rel: str, keys: tuple[str, str],
                   columns: Sequence[str], text: str = "") -> Section:
    """A section that quotes one table's columns (the table whose header starts with
    ``keys``), after an optional paragraph, with the table's provenance; missing input said."""
    s = Section(title)
    if src is None:
        missing(s, rel)
        return s
    t = src.table(*keys)
    if text:
        s.add(text, "")
    s.add(*quote_columns(t, columns), "", provenance(t))
    return s


def qat(src: Source | None) -> Section:
    return quoted_section(
        "Fine-tuning through the quantisation (QAT) against post-training quantisation", src,
        QAT, ("model", "recipe"),
        ["model", "recipe", "method", "accuracy %", "vs PTQ", "vs fp32", "epochs run"])


def student(src: Source | None) -> Section:
    return quoted_section(
        "Distillation into a smaller student", src, STUDENT, ("model", "row"),
        ["model", "row", "channels", "parameters", "flash image", "predicted latency",
         "accuracy"],
        "A student derived from the teacher (`plan --student width=0.5`: every coupled channel "
        "group halved with Torch-Pruning's dependency graph) and distilled from the fp32 "
        "teacher before it is planned, against channel pruning of the teacher to the offered "
        "widths nearest half with the same distillation after it, and against the teacher; "
        "every layer pinned to one kernel, so the rows differ in the network only. 'teacher's "
        "weights': the student starts from the teacher's kept channels (the default); 'fresh "
        "weights': from a seeded fresh initialisation. Latency is the plan's prediction for the "
        "target, not a measurement.")


def transformer(src: Source | None) -> Section:
    return quoted_section(
        "The transformer's embedding tables", src, MINILM, ("tables", "Linear"),
        ["tables", "Linear", "flash image B", "cosine (torch", "cosine (ONNX)",
         "probe accuracy", "probe agreement", "WordSim-353"],
        "minilm-l6 (all-MiniLM-L6-v2) with its embedding tables planned like any layer. "
        "Quality: the mean cosine of the embeddings to the fp32 model's on held-out "
        "sentences, and two task metrics of the shipped model.onnx: a linear probe's "
        "accuracy on those sentences' polarity labels (logistic regression fitted on the "
        "fp32 encoder's embeddings of one fold, scored on the other fold with the compressed "
        "encoder's, then the folds swapped; 'agreement': same prediction as from the fp32 "
        "embeddings) and the Spearman correlation of word-pair cosines with human ratings "
        "(nothing fitted). The fp32 row is the fp32 encoder's own.")


def devices(src: Source | None) -> Section:
    return quoted_section(
        "Plans across devices", src, SKELETON, ("model", "target"),
        ["model", "target", "limits", "options", "target latency", "accuracy fp32",
         "host latency pred"],
        "Plans for a few (model, target board) pairs of the catalog, applied. The "
        "target's latency, flash and RAM are **predicted** (no board is attached to this "
        "machine); the host latency of the same plan is predicted and measured here.")


def deep_compression(src: Source | None) -> Section:
    return quoted_section(
        "Deep Compression, reproduced", src, DEEP, ("model", "stage"),
        ["model", "stage", "flash image (file)", "ratio (file)", "ratio (payload)",
         "test accuracy", "vs fp32"],
        "Prune -> share (k-means) -> Huffman, Han et al.'s recipe, run with edgefit's "
        "executors with its own fine-tuning budget per stage (named in the stage column and "
        "the source); every ratio is the packed file's, read back and checked. The paper "
        "reports 40x (LeNet-300-100) and 39x (LeNet-5) with no accuracy loss, as the source "
        "quotes it; the source explains the gap (per-layer overheads it counts, and a "
        "smaller LeNet-5 than the paper's).")


def runtime(src: Source | None) -> Section:
    return quoted_section(
        "The runtime: int8 on onnxruntime", src, INT8, ("model", "variant"),
        ["model", "variant", "latency (us)", "vs fp32", "float ops on dequantised",
         "float islands"],
        "Why an int8 plan can be slower than fp32 on this host: the same model as fp32, as "
        "onnxruntime's own quantiser writes it (ort-own), as edgefit's QDQ graph left to "
        "onnxruntime's fusion (ort-qdq) and as edgefit writes it (edgefit), timed in one "
        "round-robin run. A latency is this CPU's; an MCU runtime has other kernels (the "
        "cost models, not these ratios, carry a plan there).")


def planning(src: Source | None) -> Section:
    s = Section("Planning under an accuracy limit: solver, closed loop, search, uniform")
    if src is None:
        missing(s, PLANNING)
        return s
    t = src.table("model", "flash limit")
    note = paragraph(src.text, "(Computed")
    s.add("The benchmark's own summary of its table (quoted):", "")
    s.add(*(f"- {b}" for b in bullets_after(src.text, "## What it says")), "")
    s.add(*([note, ""] if note else []), provenance(t))
    return s


def predicted_vs_measured(acc: Source | None, fit: Source | None) -> Section:
    s = Section("Predicted against measured, per device class")
    s.add("How far the cost models' predictions were from measurements: on this machine's "
          "CPU (the one device measured here), for MCU latency and memory, and for the "
          "single-board computers, GPUs and the Edge TPU (published measurements: none of "
          "these boards is attached here).", "",
          f"![predicted against measured per device class]({FIGURES['predicted']})", "",
          "*Figure:* each point is one row of the tables named below (its leading number): "
          "(a) end-to-end latency on this machine, measured against the measured-per-layer "
          "model and the analytical roofline; (b) MCU latency, the published MLPerf Tiny "
          "figure against the leave-one-model-out prediction of its runtime family; (c) "
          "published latencies of the other boards against the leave-one-out prediction "
          "(fit rows) or the fitted model (rows kept aside); (d) TFLite Micro's arena "
          "measured against the arena model and the earlier liveness peak. The dashed line "
          "is prediction = measurement.", "")
    if acc is None:
        missing(s, ACCURACY)
    else:
        _host(s, acc)
        _tflm(s, acc)
    if fit is None:
        missing(s, FIT)
    else:
        _mcu(s, fit)
        _boards(s, fit)
    return s


def _host(s: Section, src: Source) -> None:
    t = src.table("criterion")
    s.add("**This machine's CPU (x86-64, onnxruntime, 1 thread): measured.**", "")
    s.add(*quote_columns(t, ["criterion", "target", "measured-per-layer", "analytical"]), "")
    for prefix in ("Noise floor:", "End to end, mixed plans only"):
        if text := paragraph(src.text, prefix):
            s.add(text, "")
    s.add(provenance(t), "")


def _tflm(s: Section, src: Source) -> None:
    t = src.table("model", "measured arena B")
    s.add("**MCU memory: TFLite Micro's arena, measured with tflite-micro's x86-64 build "
          "(reference kernels; no MCU here).**", "")
    for prefix in ("Arena model vs measured:", ".tflite size predicted vs written:"):
        if text := paragraph(src.text, prefix):
            s.add(text, "")
    s.add(provenance(t), "")


def _mcu(s: Section, src: Source) -> None:
    t = src.table("family", "MAC/cycle")
    s.add("**MCU latency: published MLPerf Tiny rows, fitted per runtime family (no MCU "
          "board here).** In-sample and held-out errors as the fit printed them:", "")
    s.add(*quote_columns(t, ["family", "rows", "boards", "MAC/cycle", "in-sample MAPE",
                             "leave-one-model-out", "leave-one-board-out"]), "")
    s.add(provenance(t), "")


def _boards(s: Section, src: Source) -> None:
    t = src.table("device / profile", "fit points")
    fitted = [r for r in t.rows if t.get(r, "fit points") != "0"]
    s.add("**Single-board computers, GPUs, Edge TPU: published latencies, roofline fitted "
          "per (device, profile) (none of these boards here).**", "")
    s.add(*quote_columns(t, ["device / profile", "fit points", "fit MAPE", "leave-one-out",
                             "aside points", "aside MAPE"], keep=lambda r: r in fitted), "")
    empty = [t.get(r, "device / profile") for r in t.rows if r not in fitted]
    s.add("No published point, so no fit: " + ", ".join(empty) + ".", "", provenance(t), "")


def peers(src: Source | None) -> Section:
    s = Section("edgefit beside its peers")
    if src is None:
        missing(s, PEERS)
        return s
    t = src.table("model", "tool")
    s.add("edgefit's host plans beside onnxruntime's own int8 quantiser, Torch-Pruning and "
          "magnitude pruning on the same models, every file timed in one interleaved run "
          "on this machine.", "")
    s.add(*quote_columns(t, ["model", "tool", "recipe / budget", "accuracy", "Δ pp",
                             "ONNX ×", "zstd ×", "latency ×", "packed image ×"]), "")
    s.add("The benchmark's verdicts (quoted):", "")
    s.add(*(f"- {b}" for b in bullets_after(src.text, "## Against issue")), "")
    s.add("![size x latency x accuracy](bench-peers.png)", "",
          "*Figure:* drawn by the benchmark itself (`benchmarks/peers.py --plot-only`).", "",
          provenance(t))
    return s


# ------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class ScenarioRun:
    path: str
    command: str  # the plan command, as the output's first line shows it
    scenario: str
    target: str
    status: str  # 'cp-sat OPTIMAL'
    options: tuple[str, ...]  # the distinct per-layer options, in layer order
    totals: dict[str, tuple[str, str, str]]  # limit -> (predicted, limit value, headroom)
    accuracy_cost: str  # how the accuracy cost was obtained ('measured', 'no data')
    notes: tuple[str, ...]  # the target note and the battery line, as printed


def rich_rows(lines: Sequence[str]) -> list[list[str]]:
    """The body rows of the first rich box table in ``lines`` (continuation lines, whose
    first cell is empty, joined onto the row above)."""
    rows: list[list[str]] = []
    for line in lines:
        if line.startswith("└"):
            break
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[0] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=False)]
    return rows


def parse_plan_output(path: str, text: str) -> ScenarioRun:
    lines = text.splitlines()
    command = lines[0].removeprefix("$ ") if lines else ""
    scenario = re.search(r"--scenario (\S+)", command)
    target = next((ln.split(":", 1)[1].split("[")[0].strip() for ln in lines
                   if ln.startswith("target:")), "")
    status = next((m.group(1) for ln in lines if (m := re.match(r"plan \((\S+ \w+)", ln))), "")
    start = next((i for i, ln in enumerate(lines) if ln.startswith("┏")), len(lines))
    header = [c.strip() for c in lines[start + 1].strip("┃").split("┃")] if start < len(
        lines) - 1 else []
    layer_rows = rich_rows(lines[start:])
    col = header.index("option") if "option" in header else None
    options = tuple(dict.fromkeys(r[col] for r in layer_rows)) if col is not None else ()
    after = next((i for i, ln in enumerate(lines) if ln.startswith("totals against")), None)
    totals = {r[0]: (r[1], r[2], r[3]) for r in rich_rows(lines[after:])} if after else {}
    how = next((ln.split(":", 2)[1].strip() for ln in lines
                if ln.startswith("  accuracy: ")), "")
    notes = tuple(ln.strip() for ln in lines
                  if ln.startswith(("  target note:", "battery lifetime")))
    return ScenarioRun(path, command, scenario.group(1) if scenario else "", target, status,
                       options, totals, how, notes)


def read_scenarios(root: Path) -> list[ScenarioRun]:
    folder = root / SCENARIOS
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    runs = [parse_plan_output(str(f.relative_to(root)), f.read_text(encoding="utf-8"))
            for f in files]
    # a scenario's own run before its variants (battery-sensor before battery-sensor-37mJ)
    return sorted(runs, key=lambda r: (r.scenario, Path(r.path).stem != r.scenario, r.path))


def _limit_cell(run: ScenarioRun, limit: str) -> str:
    if limit not in run.totals:
        return "-"
    predicted, value, headroom = run.totals[limit]
    if value == "-":
        return f"{predicted} (no limit)"
    if predicted.startswith("measured"):
        return f"limit {value}, checked by apply"
    return f"{predicted} of {value} ({headroom} headroom)"


def scenarios(runs: list[ScenarioRun]) -> Section:
    s = Section("The application scenarios' answers")
    if not runs:
        missing(s, SCENARIOS, "has no plan output")
        return s
    s.add("Each scenario of `device_specs/scenarios/` planned for its example model, every "
          "cost **predicted** by the catalog's cost models for the scenario's target (nothing "
          "here ran on a board). Cells: predicted of limit (headroom), as `plan` printed "
          "them; the accuracy rule is a limit that `apply` checks, not run here.", "")
    header = ["scenario", "target", "plan", "options", "latency", "flash", "ram", "energy",
              "accuracy drop", "accuracy cost"]
    s.add(*md_table(header, ([r.scenario + (" (" + Path(r.path).stem + ")"
                                             if Path(r.path).stem != r.scenario else ""),
                              r.target, r.status, ", ".join(r.options),
                              *(_limit_cell(r, k) for k in ("latency", "flash", "ram", "energy",
                                                            "accuracy drop")),
                              r.accuracy_cost] for r in runs)), "")
    s.add("Printed by the same runs:", "")
    notes = dict.fromkeys((note, Path(r.path).stem) for r in runs for note in r.notes)
    seen: set[str] = set()
    for note, stem in notes:  # a note two runs print (the same target's) is quoted once
        if note not in seen:
            seen.add(note)
            s.add(f"- `{stem}`: {note}")
    s.add("")
    s.add("An 'accuracy cost' of *no data*: the example model has seeded random weights and "
          "no data set, so every option's accuracy cost is zero and the options are chosen "
          "for cost alone; the answer is whether the model fits, not which options it "
          "should take.", "")
    s.add(f"*Source:* `{SCENARIO_RUN}` (made by `{SCENARIO_RUN} /tmp/scn/out`, outputs "
          f"committed under `{SCENARIOS}/`); per scenario, made by:", "")
    s.add(*(f"- `{r.path}`: `{r.command}`" for r in runs))
    return s


# ---------------------------------------------------------------- limits and provenance


def file_provenance(src: Source) -> str:
    commands = "; ".join(fmt_command(c) for c in dict.fromkeys(src.commands))
    return f"`{src.path}`, made by {commands or '(the file names no command)'}"


def not_shown(runs: list[ScenarioRun], cited: Sequence[Source], absent: list[str]) -> Section:
    s = Section("What could not be shown on this hardware, and what is missing")
    phone = [(n, r) for r in runs for n in r.notes if "no phone" in n.lower()]
    s.add("On this machine (a shared x86-64 VM, CPU only):", "")
    s.add(f"- **No MCU board.** Every MCU latency here is a prediction from published MLPerf "
          f"Tiny rows fitted per runtime family, and the TFLM + CMSIS-NN family has no "
          f"published row, so its rate is an assumption (`{FIT}`). MCU memory was measured "
          f"with tflite-micro's x86-64 build and reference kernels: 64-bit structs, no "
          f"CMSIS-NN scratch (`{ACCURACY}`). Energy per inference is never measured: it is "
          f"derived from board power figures, published or assumed (each scenario output "
          f"says which).",
          f"- **No GPU, Edge TPU or single-board computer.** Their latencies are published "
          f"measurements; a profile with fewer than three points has no held-out error "
          f"(`{FIT}`). Plans for them are predicted, not run (`{SKELETON}`).",
          "- **No phone in the device catalog.** The sentence-embeddings scenario runs on the "
          "closest board the catalog has" + (f" (`{phone[0][1].path}`: {phone[0][0]})"
                                             if phone else "") + ".",
          f"- **A shared machine.** Host latencies carry run-to-run noise; the cost-model "
          f"benchmark states its own noise floor (`{ACCURACY}`).", "")
    if absent:
        s.add("Inputs this build could not read:", "",
              *(f"- **{MISSING} `{rel}`**" for rel in absent), "")
    s.add("*Sources:* " + "; ".join(file_provenance(src) for src in cited)
          + (f"; `{phone[0][1].path}`, made by `{phone[0][1].command}`" if phone else "") + ".")
    return s


def inputs(sources: Sequence[Source], runs: list[ScenarioRun]) -> Section:
    s = Section("Inputs")
    s.add("Every file this report was built from and the command(s) it names; regenerate a "
          "file with its command (`make bench` runs them all), then `make report`.", "")
    rows = [[f"`{src.path}`", file_provenance(src).split(", made by ", 1)[1]]
            for src in sources]
    rows += [[f"`{r.path}`", f"`{r.command}`"] for r in runs]
    s.add(*md_table(["file", "made by"], rows))
    return s


# -------------------------------------------------------------------------------- figures


def _pyplot():  # noqa: ANN202 (matplotlib.pyplot)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "figure.dpi": 100})
    return plt


def _save(fig, path: Path) -> None:  # noqa: ANN001 (a matplotlib Figure)
    # no Software key: the PNG's bytes depend on the drawing only
    fig.savefig(path, dpi=110, metadata={"Software": None})


FAMILY_COLORS = {"quantisation": "tab:blue", "unstructured pruning": "tab:orange",
                 "semi-structured pruning": "tab:brown", "factorisation": "tab:green",
                 "weight sharing": "tab:purple", "structured pruning": "tab:red",
                 "other": "tab:gray"}


def _loss(row: Row) -> float | None:
    """Quality lost: accuracy drop in pp, or one minus the cosine (the torch model's)."""
    before, after = leading_number(row.before), leading_number(row.after)
    if row.refused or before is None or after is None:
        return None
    return before - after if row.after.endswith("%") else 1.0 - after


def _front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats on both size ratio (higher) and loss (lower)."""
    return [p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and q[:2] != p[:2]
                                         for q in points)]


def plot_techniques(rows: list[Row], path: Path) -> None:
    plt = _pyplot()
    models = list(dict.fromkeys(r.model for r in rows))
    cols = 3
    fig, axes = plt.subplots(-(-len(models) // cols), cols, figsize=(13, 7.6), squeeze=False)
    for ax, model in zip(axes.flat, models, strict=False):
        _technique_panel(ax, [r for r in rows if r.model == model], model)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=f)
               for f, c in FAMILY_COLORS.items() if f != "other"]
    handles += [plt.Line2D([], [], marker=m, ls="", color="k", mfc="none", label=lab)
                for m, lab in (("o", "one technique"), ("s", "combination"),
                               ("^", "fine-tuned (distill 2 ep)"))]
    fig.legend(handles=handles, loc="lower right", bbox_to_anchor=(0.97, 0.1), fontsize=8,
               title="colour: the first technique of the row")
    fig.suptitle("Size against quality lost, every technique row (measured on this machine)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _short(label: str) -> str:
    """A plot label: the technique without the words a reader of the table already has."""
    for long, short in (("int8 weights + int16 activations (w8a16)", "w8a16"),
                        (" (asymmetric, zero points)", ""), (" weights", ""),
                        (" k-means", ""), (" of weights", ""), ("distill 2 ep", "distill"),
                        (" (one threshold)", "")):
        label = label.replace(long, short)
    return label


def _technique_panel(ax, rows: list[Row], model: str) -> None:  # noqa: ANN001 (an Axes)
    import matplotlib.ticker as ticker

    cosine = bool(rows) and not rows[0].after.endswith("%")
    points = []
    for r in rows:
        loss, size = _loss(r), leading_number(r.size_ratio)
        if loss is None or size is None:
            continue
        marker = "^" if "distill" in r.label else "o" if is_single(r.label) else "s"
        ax.scatter(size, max(loss, 0.0), marker=marker, s=22, alpha=0.85,
                   color=FAMILY_COLORS[family(r.label)[0]])
        points.append((size, max(loss, 0.0), r.label))
    small = 0.1 if cosine else 3.0  # label only the front's points that lose little
    # one label per point: two rows with the same numbers (a recipe and its order row) share it
    front = list({p[:2]: p for p in sorted(_front(points), reverse=True)
                  if p[1] <= small}.values())[::-1]
    for k, (size, loss, label) in enumerate(front):
        ax.annotate(_short(label), (size, loss), fontsize=6.5, textcoords="offset points",
                    xytext=(-6 if size > 8 else 6, 8 + 10 * (k % 2)),
                    ha="right" if size > 8 else "left",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4"})
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator([1.5, 2, 3, 4, 6, 8, 10, 15, 20]))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    linthresh, ticks = ((0.01, [0, 0.005, 0.01, 0.03, 0.1, 0.3, 1]) if cosine
                        else (1.0, [0, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100]))
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.set_ylim(0, ticks[-1])
    ax.yaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("size ratio (fp32 image / this image)")
    ax.set_ylabel("1 - cosine to fp32 (torch)" if cosine else "accuracy drop (pp)")
    ax.set_title(model)
    ax.grid(True, which="major", alpha=0.25)


def plot_predicted(acc: Source | None, fit: Source | None, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 9.5))
    panels = [(_panel_host, acc), (_panel_mcu, fit), (_panel_boards, fit), (_panel_arena, acc)]
    for ax, (draw, src) in zip(axes.flat, panels, strict=True):
        if src is None:
            ax.text(0.5, 0.5, "missing input", ha="center", transform=ax.transAxes)
            continue
        draw(ax, src)
        lo, hi = ax.get_xlim()
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.plot([lo, hi], [lo, hi], ls="--", color="gray", lw=0.8)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _pairs(t: Table, xs: str, ys: str, rows: Sequence[tuple[str, ...]] | None = None
           ) -> tuple[list[float], list[float]]:
    """The leading numbers of two columns, for ``rows`` (default: every row)."""
    out = [(leading_number(t.get(r, xs)), leading_number(t.get(r, ys)))
           for r in (t.rows if rows is None else rows)]
    pts = [(x, y) for x, y in out if x is not None and y is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _panel_host(ax, src: Source) -> None:  # noqa: ANN001
    t = src.table("model", "measured-per-layer model (error)")
    for col, style in (("measured-per-layer", dict(marker="o", color="tab:blue")),
                       ("analytical", dict(marker="o", mfc="none", color="tab:red"))):
        x, y = _pairs(t, "measured", col)
        ax.plot(x, y, ls="", ms=5, label=f"{col} model", **style)  # type: ignore[arg-type]
    ax.set_title("(a) this machine's CPU: end-to-end latency, measured")
    ax.set_xlabel("measured (us)")
    ax.set_ylabel("predicted (us)")


def _panel_mcu(ax, src: Source) -> None:  # noqa: ANN001
    t = src.table("board", "published ms")
    for runtime in dict.fromkeys(t.get(r, "runtime") for r in t.rows):
        x, y = _pairs(t, "published ms", "leave-one-model-out",
                      [r for r in t.rows if t.get(r, "runtime") == runtime])
        ax.plot(x, y, ls="", marker="o", ms=5, label=runtime)
    ax.set_title("(b) MCU latency: MLPerf Tiny published vs held-out fit")
    ax.set_xlabel("published (ms)")
    ax.set_ylabel("predicted, leave-one-model-out (ms)")


def _panel_boards(ax, src: Source) -> None:  # noqa: ANN001
    t = src.table("device / profile", "measured ms")
    devices = dict.fromkeys(t.get(r, "device / profile").split(" / ")[0] for r in t.rows)
    for k, device in enumerate(devices):
        color = f"C{k % 10}"  # one colour per board, whichever of its series exist
        mine = [r for r in t.rows if t.get(r, "device / profile").startswith(device + " /")]
        for use, col, marker, what in (("fit", "leave-one-out", "o", "leave-one-out"),
                                       ("aside", "fitted ms", "x", "kept aside")):
            x, y = _pairs(t, "measured ms", col, [r for r in mine if t.get(r, "use") == use])
            if x:  # a board with fewer than three points has no held-out prediction
                ax.plot(x, y, ls="", marker=marker, ms=5, color=color,
                        label=f"{device} ({what})")
    ax.set_title("(c) SBCs, GPUs, Edge TPU: published vs predicted")
    ax.set_xlabel("published (ms)")
    ax.set_ylabel("predicted (ms)")


def _panel_arena(ax, src: Source) -> None:  # noqa: ANN001
    t = src.table("model", "measured arena B")
    for col, style in (("arena model", dict(marker="o", color="tab:blue")),
                       ("edgefit before", dict(marker="o", mfc="none", color="tab:red"))):
        x, y = _pairs(t, "measured arena", col)
        ax.plot(x, y, ls="", ms=5, label=col, **style)  # type: ignore[arg-type]
    ax.set_title("(d) MCU RAM: TFLite Micro arena (x86-64 build)")
    ax.set_xlabel("measured arena (B)")
    ax.set_ylabel("predicted (B)")


def plot_classes(src: Source | None, path: Path) -> None:
    """The single-layer drops per task, one panel per data set that has its tables."""
    if src is None:
        return
    panels = [(_task_drops(src, found), title, {t: TASK_NAMES[t] for t in found})
              for tasks, title in ((MNIST_TASKS, "MNIST: LeNet-5"),
                                   (FASHION_TASKS, "Fashion-MNIST: fashion-cnn"))
              if len(found := measured_tasks(src, tasks)) > 1]
    if not panels:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.6 * len(panels)), squeeze=False)
    for ax, ((keys, cells, _), title, tasks) in zip(axes[:, 0], panels, strict=True):
        width = 0.8 / len(tasks)
        for k, (task, what) in enumerate(tasks.items()):
            offset = (k - (len(tasks) - 1) / 2) * width
            ax.bar([x + offset for x in range(len(keys))],
                   [leading_number(c) or 0.0 for c in cells[task]], width=width,
                   label=f"{what} ({task})")
        ax.set_xticks(list(range(len(keys))), [f"{a} {b}" for a, b in keys], rotation=60,
                      ha="right")
        ax.set_ylabel("accuracy drop (pp), one layer compressed")
        ax.set_title(f"{title}, the same network with 10 outputs and with 2: single-layer "
                     "accuracy drop")
        ax.legend()
        ax.grid(True, axis="y", alpha=0.25)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_orders(src: Source | None, path: Path) -> None:
    """Accuracy at matched size of every combination of two or three techniques, grouped by
    its set of techniques, each order a bar pair (no fine-tuning hollow, fine-tuned filled)."""
    if src is None:
        return
    t = src.table("order", "settings")
    groups: dict[frozenset[str], list[tuple[str, ...]]] = {}
    for r in t.rows:
        steps = t.get(r, "order").split(" -> ")
        if len(steps) > 1:
            groups.setdefault(frozenset(steps), []).append(r)
    ordered = sorted(groups.values(), key=lambda g: (g[0][0].count("->"), g[0][0]))
    bars = [r for g in ordered for r in g]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, max(4.0, 0.19 * len(bars) + 1.5)))
    ys = list(range(len(bars)))[::-1]
    edge = len(bars)
    for g in ordered[:-1]:  # a line between two sets of techniques
        edge -= len(g)
        ax.axhline(edge - 0.5, color="0.5", lw=0.6)
    for y, r in zip(ys, bars, strict=True):
        hatch = "" if t.get(r, "matched") == "yes" else "//"
        before = leading_number(t.get(r, "accuracy, no"))
        after = leading_number(t.get(r, "accuracy, distill"))
        if after is not None:
            ax.barh(y, after, height=0.8, color="tab:blue", hatch=hatch, alpha=0.8)
        if before is not None:
            ax.barh(y, before, height=0.8, fill=False, edgecolor="black", hatch=hatch, lw=0.8)
    ax.set_yticks(ys, [t.get(r, "order") for r in bars], fontsize=6.5)
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 accuracy on the held-out split (%)")
    ax.set_title("Every defined pair and triple at matched flash size: filled = after "
                 "distillation, outline = no fine-tuning, hatched = size not matched")
    ax.grid(True, axis="x", alpha=0.25)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------------------------- build


@dataclass
class Report:
    text: str
    figures: dict[str, Callable[[Path], None]]  # file name -> draws it at the given path
    absent: list[str]


def build(root: Path = ROOT) -> Report:
    """The report's markdown and its figures from the inputs under ``root``."""
    read = {rel: (read_techniques if rel in TECHNIQUE_FILES else read_source)(root, rel)
            for rel in INPUTS}
    absent = [rel for rel, src in read.items() if src is None]
    sources = [src for src in read.values() if src is not None]
    technique_sources = [read[f] for f in TECHNIQUE_FILES if read[f] is not None]
    rows = technique_rows(technique_sources)  # type: ignore[arg-type]
    pairs = order_pairs(root)
    runs = read_scenarios(root)
    if not runs:
        absent.append(SCENARIOS)
    sections = [
        taxonomy(rows, technique_sources),  # type: ignore[arg-type]
        winners(rows, technique_sources),  # type: ignore[arg-type]
        combinations(rows, pairs, technique_sources),  # type: ignore[arg-type]
        order_study(read[ORDER_STUDY]),
        technique_orders(rows, pairs, technique_sources),  # type: ignore[arg-type]
        deep_compression(read[DEEP]),
        class_count(read[ESTIMATORS]), qat(read[QAT]),
        student(read[STUDENT]), transformer(read[MINILM]),
        devices(read[SKELETON]), runtime(read[INT8]), planning(read[PLANNING]),
        predicted_vs_measured(read[ACCURACY], read[FIT]), peers(read[PEERS]),
        scenarios(runs),
        not_shown(runs, [src for rel in (FIT, ACCURACY, SKELETON)
                         if (src := read[rel]) is not None], absent),
        inputs(sources, runs)]
    figures: dict[str, Callable[[Path], None]] = {
        FIGURES["techniques"]: lambda p: plot_techniques(rows, p),
        FIGURES["predicted"]: lambda p: plot_predicted(read[ACCURACY], read[FIT], p),
    }
    if read[ESTIMATORS] is not None:
        figures[FIGURES["classes"]] = lambda p: plot_classes(read[ESTIMATORS], p)
    if read[ORDER_STUDY] is not None:
        figures[FIGURES["orders"]] = lambda p: plot_orders(read[ORDER_STUDY], p)
    return Report(render(sections), figures, absent)


def render(sections: Sequence[Section]) -> str:
    head = [
        "# edgefit: the research report", "",
        f"Generated by `make report` (`{COMMAND}`) from the benchmarks' committed outputs; "
        "do not edit by hand. Every table cell below is quoted from the benchmark output "
        "named under it (*Source:* file, line, and the command that made it); the figures "
        "are drawn from the same cells. Three kinds of number appear, and each section says "
        "which: **measured** on this machine (an x86-64 CPU, onnxruntime), **published** "
        "(other people's measurements of boards not attached here) and **predicted** (the "
        "cost models').", "", "Contents:", "",
        *(f"- [{s.title}](#{_anchor(s.title)})" for s in sections), ""]
    body = [line for s in sections for line in (f"## {s.title}", "", *s.lines, "")]
    return "\n".join(head + body).rstrip("\n") + "\n"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def write(report: Report, out_dir: Path) -> list[Path]:
    from edgefit_common.fsutil import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in report.figures.items():
        draw(out_dir / name)
        written.append(out_dir / name)
    atomic_write_text(out_dir / "report.md", report.text)
    return [out_dir / "report.md", *written]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs",
                        help="where report.md and its PNGs go (default: docs/)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    report = build(args.root)
    for path in write(report, args.out_dir):
        print(f"wrote {path}")
    for rel in report.absent:
        print(f"{MISSING} {rel}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
