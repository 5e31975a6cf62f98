"""The hostile-input corpus (issue #16): every case is a command line plus the files it reads,
generated here (nothing binary is stored), and the outcome edgefit must give: its exit code and
a word of its one line on stderr. A case that would run code if edgefit unpickled, imported or
evaluated something from a data file leaves a marker behind (a file, a folder or a line on
stdout); the test checks that none appears.

Run it to look at the files:  ``.venv/bin/python tests/hostile/corpus.py /tmp/corpus``
(one folder per case, with ``argv.txt``: the command to run inside it).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import shlex
import stat
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "MARKER"  # a file that appears when hostile code ran
ZEN = "Beautiful is better than ugly"  # what `import this` prints
OK = ("--target", "esp32-s3", "--max-latency", "30ms")  # a valid target and limit
REVIEW_PLAN = Path(__file__).parents[1] / "review" / "data" / "plan.json"  # a real plan


@dataclass(frozen=True)
class Case:
    """`argv[0]` is `plan` or `edgefit`; the rest are its arguments, run inside the case's
    folder after `setup` wrote its files there."""

    name: str
    argv: tuple[str, ...]
    code: int
    needle: str  # in the one line on stderr
    setup: Callable[[Path], None] = lambda _d: None
    subprocess: bool = False  # the real console script: a crash would kill the test run
    torch: bool = False  # reaches a model loader (imports torch: slower)
    tags: tuple[str, ...] = field(default=())


# --- payloads -----------------------------------------------------------------------------------


class _Evil:
    """Unpickling it opens (creates) the marker file: a pickle that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (builtins.open, (self.marker, "w"))


def evil_pickle(folder: Path) -> bytes:
    return pickle.dumps(_Evil(folder / MARKER))


def evil_torch_save(folder: Path) -> bytes:
    """A torch.save zip archive whose data.pkl runs code (what weights_only=True refuses)."""
    import torch

    buf = io.BytesIO()
    torch.save({"w": _Evil(folder / MARKER)}, buf)
    return buf.getvalue()


def tiny_pt2(path: Path) -> None:
    """A two-layer network as a torch.export archive (no training, no data)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 4, 4),)), str(path))


def evil_pt2(folder: Path, where: str) -> Path:
    """A valid .pt2 archive with a code-running pickle spliced in: `sample` (the example inputs,
    which torch.export.load would retry with weights_only=False) or `weight` (a weight marked
    use_pickle, which it unpickles fully)."""
    good, bad = folder / "good.pt2", folder / f"evil-{where}.pt2"
    tiny_pt2(good)
    payload = evil_torch_save(folder)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if where == "sample" and info.filename.endswith("sample_inputs/model.pt"):
                data = payload
            elif where == "weight" and info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif where == "weight" and info.filename.endswith("weights/weight_0"):
                data = payload
            dst.writestr(info, data)
    good.unlink()
    return bad


def alias_bomb(limit_key: str = "latency") -> str:
    """~1 KB that expands to 9**9 strings."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + f"\ntarget: esp32-s3\nlimits:\n  {limit_key}: *i\n"


def merge_bomb() -> str:
    """Merge keys (`<<: *x`) doubling a mapping 30 times."""
    lines = ["m0: &m0 {k: v}"]
    for i in range(1, 31):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: v}}")
    return "\n".join(lines) + "\ntarget: esp32-s3\n"


def plan_json(edit: Callable[[dict], object] | None = None) -> str:
    """The review fixture's real plan, edited."""
    d = json.loads(REVIEW_PLAN.read_text())
    if edit is not None:
        edit(d)
    return json.dumps(d, indent=1)


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value

    return edit


def _drop(path: str) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]

    return edit


def onnx_with_input(path: Path, dims: list[int]) -> None:
    """An ONNX model (Identity) whose declared input shape is `dims`."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def onnx_matmul(path: Path, dims: list[int | str]) -> None:
    """An ONNX model with one plannable layer (MatMul by a 4 x 4 weight) on input `dims`."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], vals=[0.5] * 16)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
                              [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


# --- setups -------------------------------------------------------------------------------------


def write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")

    return setup


def budget(body: str, name: str = "b.yaml") -> Callable[[Path], None]:
    return write(name, body)


def each(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for s in setups:
            s(d)

    return setup


def fifo(name: str) -> Callable[[Path], None]:
    return lambda d: os.mkfifo(d / name)


def symlink_loop(name: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        os.symlink(d / f"{name}.other", d / name)
        os.symlink(d / name, d / f"{name}.other")

    return setup


def link(name: str, to: str) -> Callable[[Path], None]:
    return lambda d: os.symlink(to, d / name)


def unreadable(name: str, text: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        write(name, text)(d)
        os.chmod(d / name, 0)

    return setup


def folder_with(name: str, *files: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        (d / name).mkdir()
        for f in files:
            (d / name / f).write_text("the user's own file\n")

    return setup


def pickle_file(name: str, torch_format: bool = False) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        (d / name).write_bytes(evil_torch_save(d) if torch_format else evil_pickle(d))

    return setup


def plan_file(edit: Callable[[dict], object] | None = None, name: str = "plan.json",
              raw: str | None = None) -> Callable[[Path], None]:
    return lambda d: (d / name).write_text(raw if raw is not None else plan_json(edit))


def deep_json(depth: int) -> str:
    return '{"a": ' + "[" * depth + "]" * depth + "}"


B = ("plan", "--budget", "b.yaml")
LIMITS = "limits:\n  latency: 30ms\n"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin", ".pt2", ".onnx", ".npy", ".json",
                   ".yaml", "")


def _cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # code from data files: a factory named by a budget, edgefit.yaml or plan.json
    add(Case("budget model os:abort", B, 2, "is a module:factory",
             budget(f"target: esp32-s3\n{LIMITS}model: 'os:abort'\n"), subprocess=True))
    add(Case("budget model tempfile:mkdtemp", B, 2, "never runs because a file names it",
             budget(f"target: esp32-s3\n{LIMITS}model: 'tempfile:mkdtemp'\n")))
    add(Case("budget model this:x", B, 2, "--model this:x",
             budget(f"target: esp32-s3\n{LIMITS}model: 'this:x'\n")))
    add(Case("edgefit.yaml factory without opt-in", ("plan",), 2,
             "allow_factory: true in ./edgefit.yaml",
             budget(f"target: esp32-s3\n{LIMITS}model: 'tempfile:mkdtemp'\n", "edgefit.yaml")))
    add(Case("budget elsewhere opts in", ("plan", "--budget", "sub/b.yaml"), 2,
             "allow_factory is honoured only in ./edgefit.yaml",
             budget(f"target: esp32-s3\n{LIMITS}model: 'tempfile:mkdtemp'\n"
                    "allow_factory: true\n", "sub/b.yaml")))
    add(Case("plan --model a malformed factory", ("plan", *OK, "--model", "os.path:join()"), 2,
             "write a factory as package.module:function"))
    add(Case("yaml python tag", B, 2, "malformed YAML",
             lambda d: (d / "b.yaml").write_text(
                 f"target: !!python/object/apply:builtins.open ['{d / MARKER}', 'w']\n"
                 + LIMITS)))
    add(Case("yaml python name tag", B, 2, "malformed YAML",
             budget("target: !!python/name:os.system\n" + LIMITS)))
    add(Case("apply plan model os:abort", ("edgefit", "apply", "plan.json"), 2,
             "edgefit apply PLAN --model os:abort",
             plan_file(lambda p: p["model"].update(kind="factory", path="os:abort",
                                                   name="abort")),
             subprocess=True))
    add(Case("apply plan zoo name tempfile:mkdtemp", ("edgefit", "apply", "plan.json"), 2,
             "is a module:factory",
             plan_file(_set("model.name", "tempfile:mkdtemp"))))
    add(Case("apply plan zoo name a path", ("edgefit", "apply", "plan.json"), 2,
             "is not a built-in name", plan_file(_set("model.name", "../evil.pt2"))))
    add(Case("apply plan pt2 that is a pickle", ("edgefit", "apply", "plan.json"), 2,
             "is not a .pt2 file",
             each(pickle_file("evil.pkl"), plan_file(
                 lambda p: p["model"].update(kind="pt2", path="evil.pkl")))))
    add(Case("apply plan pt2 archive with a pickle", ("edgefit", "apply", "plan.json"), 2,
             "holds a pickle that needs code",
             lambda d: plan_file(lambda p: p["model"].update(
                 kind="pt2", path=str(evil_pt2(d, "sample"))))(d), torch=True))
    add(Case("apply --weights without --model",
             ("edgefit", "apply", "plan.json", "--weights", "w.pt"), 2, "--weights needs --model",
             plan_file()))

    # pickles in every extension, as a model and as weights
    for suffix in PICKLE_SUFFIXES:
        name = f"evil{suffix}"
        needle = {".pt2": "not a torch.export archive", ".onnx": "evil.onnx",
                  "": "not a built-in model", ".npy": "not a built-in model",
                  ".json": "not a built-in model", ".yaml": "not a built-in model"}.get(
                      suffix, "pickled checkpoint")
        add(Case(f"pickle as --model {name}", ("plan", *OK, "--model", name), 2, needle,
                 pickle_file(name), torch=True))
        add(Case(f"pickle as --weights {name}",
                 ("plan", *OK, "--model", "workloads.zoo:LeNet5", "--input-shape", "1x28x28",
                  "--weights", name), 2, "refused" if suffix != ".pt2" else "evil.pt2",
                 pickle_file(name, torch_format=True), torch=True))
    add(Case("pt2 archive with a pickled sample input", ("plan", *OK, "--model",
             "evil-sample.pt2"), 2, "holds a pickle that needs code",
             lambda d: evil_pt2(d, "sample") and None, torch=True))
    add(Case("pt2 archive with a pickled weight", ("plan", *OK, "--model", "evil-weight.pt2"),
             2, "holds a pickle that needs code", lambda d: evil_pt2(d, "weight") and None,
             torch=True))
    add(Case("pickle as budget", B, 2, "not UTF-8", pickle_file("b.yaml")))
    add(Case("pickle as plan", ("edgefit", "resolve", "plan.json"), 2, "plan.json",
             pickle_file("plan.json")))
    add(Case("pickled object array as --data", ("plan", *OK, "--model", "tiny.pt2", "--data",
                                                "evil.npz"), 2, "evil.npz",
             lambda d: _evil_npz(d), torch=True))

    add(Case("npz declaring a terabyte array as --data", ("plan", *OK, "--model", "tiny.pt2",
                                                          "--data", "bomb.npz"), 2, "bomb.npz",
             lambda d: _npz_bomb(d), torch=True))
    add(Case("a FIFO as --data", ("plan", *OK, "--model", "tiny.pt2", "--data", "x.npz"), 2,
             "x.npz", each(lambda d: tiny_pt2(d / "tiny.pt2"), fifo("x.npz")), torch=True))
    add(Case("onnx external data outside its folder", ("plan", *OK, "--model", "m/ext.onnx"), 2,
             "ext.onnx", lambda d: _onnx_external(d, "../../../../../../../etc/passwd"),
             torch=True))
    add(Case("onnx external data a FIFO", ("plan", *OK, "--model", "m/ext.onnx"), 2,
             "ext.onnx", each(lambda d: (d / "m").mkdir(), fifo("m/w.bin"),
                              lambda d: _onnx_external(d, "w.bin")), torch=True))
    add(Case("plan an onnx with a huge input", ("plan", *OK, "--model", "huge.onnx"), 2,
             "the largest sample", lambda d: onnx_matmul(d / "huge.onnx", [1, 100000, 100000, 4]),
             torch=True))
    add(Case("plan an onnx with symbolic sample dims", ("plan", *OK, "--model", "sym.onnx"), 2,
             "pass --input-shape", lambda d: onnx_matmul(d / "sym.onnx", ["N", "T", 4]),
             torch=True))
    add(Case("plan an onnx with a huge --input-shape",
             ("plan", *OK, "--model", "sym.onnx", "--input-shape", "100000000x4"), 2,
             "the largest sample", lambda d: onnx_matmul(d / "sym.onnx", ["N", "T", 4]),
             torch=True))
    add(Case("measure an onnx with symbolic sample dims", ("edgefit", "measure", "sym.onnx"), 2,
             "pass --input-shape", lambda d: onnx_matmul(d / "sym.onnx", ["N", "T", 4])))
    add(Case("calibrate a measure file with NaN", ("edgefit", "calibrate", "m.json", "--device",
                                                   "esp32-s3", "--model", "m.onnx"), 2,
             "m.json", each(write("m.json", '{"latency_ms": NaN}'),
                            lambda d: onnx_matmul(d / "m.onnx", [1, 4]))))
    add(Case("calibrate /dev/zero", ("edgefit", "calibrate", "/dev/zero", "--device",
                                     "esp32-s3", "--model", "m.onnx"), 2, "/dev/zero",
             lambda d: onnx_matmul(d / "m.onnx", [1, 4])))
    add(Case("calibrate a timing CSV with an infinite latency",
             ("edgefit", "calibrate", "t.csv", "--device", "esp32-s3"), 2, "t.csv",
             write("t.csv", "model,latency_ms,cpu,runtime\nm.onnx,inf,Xtensa LX7,TFLM\n")))
    add(Case("calibrate a timing file naming a text file as its model",
             ("edgefit", "calibrate", "t.json", "--device", "esp32-s3"), 2,
             "not an .onnx, .pt2, .tflite or plan.json",
             each(write("notes.txt", "not a model"),
                  write("t.json", '{"format": "edgefit-timing", "format_version": 1, "cpu": '
                        '"LX7", "runtime": "r", "models": [{"model": "notes.txt", '
                        '"latency_ms": 1}]}'))))

    for name, content in (("empty.pt2", b""), ("empty.onnx", b"")):
        add(Case(f"--model {name}", ("plan", *OK, "--model", name), 2, name,
                 write(name, content), torch=True))
    add(Case("--model a truncated .pt2", ("plan", *OK, "--model", "half.pt2"), 2,
             "not a torch.export archive", lambda d: _truncated(d, "half.pt2"),
             torch=True))
    add(Case("--model a truncated .onnx", ("plan", *OK, "--model", "half.onnx"), 2,
             "half.onnx", lambda d: _truncated(d, "half.onnx"), torch=True))
    add(Case("--model a FIFO .pt2", ("plan", *OK, "--model", "m.pt2"), 2, "m.pt2",
             fifo("m.pt2"), torch=True))
    add(Case("apply a plan whose onnx is a FIFO", ("edgefit", "apply", "plan.json"), 2,
             "x.onnx", each(fifo("x.onnx"), plan_file(
                 lambda p: p["model"].update(kind="onnx", path="x.onnx"))), torch=True))
    add(Case("a newline in a file name", ("plan", "--budget", "b\nerror: forged.yaml"), 2,
             "b\\nerror: forged.yaml"))
    add(Case("control characters in a budget's name", ("plan", "--budget", "\x1b[31mb.yaml"), 2,
             "\\x1b[31mb.yaml: budget file not found"))

    # YAML that eats memory or the stack
    add(Case("yaml alias bomb", B, 2, "anchor &a is not accepted", budget(alias_bomb())))
    add(Case("yaml merge-key bomb", B, 2, "anchor &m0 is not accepted", budget(merge_bomb())))
    add(Case("yaml nested 10000 deep", B, 2, "nesting depth",
             budget("target: " + "[" * 10000 + "]" * 10000 + "\n")))
    add(Case("yaml 5000-digit integer", B, 2, "integer of 5000 digits",
             budget("target: esp32-s3\nlimits:\n  latency: " + "9" * 5000 + "\n")))
    add(Case("yaml duplicate key", B, 2, "duplicate key",
             budget(f"target: esp32-s3\ntarget: jetson-nano\n{LIMITS}")))
    add(Case("budget 2 MiB", B, 2, "over the 1 MiB limit",
             budget("# " + "x" * (2 << 20) + "\n")))

    # files that are not files, or not there
    add(Case("budget is a FIFO", B, 2, "named pipe (FIFO)", fifo("b.yaml")))
    add(Case("budget is /dev/zero", ("plan", "--budget", "/dev/zero"), 2, "character device"))
    add(Case("budget is /dev/null", ("plan", "--budget", "/dev/null"), 2, "character device"))
    add(Case("budget is a directory", B, 2, "is a directory", lambda d: (d / "b.yaml").mkdir()))
    add(Case("budget is a symlink loop", B, 2, "symbolic link loop", symlink_loop("b.yaml")))
    add(Case("budget is missing", B, 2, "not found"))
    add(Case("budget is unreadable", B, 2, "permission denied",
             unreadable("b.yaml", f"target: esp32-s3\n{LIMITS}"), tags=("not-root",)))
    add(Case("budget empty", B, 2, "b.yaml", budget("")))
    add(Case("budget only a comment", B, 2, "b.yaml", budget("# nothing\n")))
    add(Case("budget truncated", B, 2, "malformed YAML", budget('target: "esp32-s3\nlimits:\n')))
    add(Case("budget a list", B, 2, "b.yaml", budget("- target\n- esp32-s3\n")))
    add(Case("budget not UTF-8", B, 2, "not UTF-8", write("b.yaml", b"target: \xff\xfe\n")))
    add(Case("budget with a NUL byte", B, 2, "b.yaml", write("b.yaml", b"target: esp\x0032\n")))
    add(Case("plan file is /dev/zero", ("edgefit", "apply", "/dev/zero"), 2, "character device"))
    add(Case("plan file is a FIFO", ("edgefit", "resolve", "plan.json"), 2, "named pipe",
             fifo("plan.json")))
    add(Case("plan file is a symlink loop", ("edgefit", "apply", "plan.json"), 2,
             "symbolic link loop", symlink_loop("plan.json")))
    add(Case("plan file 17 MiB", ("edgefit", "apply", "plan.json"), 2, "over the 16 MiB",
             write("plan.json", '{"a": "' + "x" * (17 << 20) + '"}')))
    add(Case("plan file unreadable", ("edgefit", "apply", "plan.json"), 2, "permission denied",
             unreadable("plan.json", plan_json()), tags=("not-root",)))
    add(Case("measure a FIFO", ("edgefit", "measure", "m.onnx"), 2, "m.onnx", fifo("m.onnx")))
    add(Case("measure /dev/zero", ("edgefit", "measure", "/dev/zero"), 2, "/dev/zero"))

    # path traversal and device files as targets
    add(Case("target ../../etc/passwd", B, 2, "unknown target",
             budget(f"target: ../../../../../../etc/passwd\n{LIMITS}")))
    add(Case("target /etc/passwd as yaml", B, 2, "expected a mapping of fields",
             each(link("passwd.yaml", "/etc/passwd"),
                  budget(f"target: passwd.yaml\n{LIMITS}"))))
    add(Case("target /dev/zero", B, 2, "unknown target", budget(f"target: /dev/zero\n{LIMITS}")))
    add(Case("target a FIFO spec", B, 2, "named pipe",
             each(fifo("spec.yaml"), budget(f"target: spec.yaml\n{LIMITS}"))))
    add(Case("target outside the budget's folder", ("plan", "--budget", "sub/b.yaml"), 2,
             "device spec not found",
             each(write("spec.yaml", "name: x\n"),
                  budget(f"target: ../../spec.yaml\n{LIMITS}", "sub/b.yaml"))))
    add(Case("--target /dev/zero.yaml", ("plan", "--target", "/dev/zero.yaml", "--max-latency",
                                         "30ms"), 2, "/dev/zero.yaml"))

    # numbers and Unicode
    for text, needle in (("３０ms", "digits other than 0-9"), ("٣٠ms", "digits other than 0-9"),
                         ("³⁰ms", "'³⁰ms'"), ("30\u00a0ms", "--max-latency"),
                         ("1e300ms", "above one day"), ("1e308s", "above one day"),
                         ("-5ms", "greater than zero"), ("nan ms", "finite"),
                         ("9" * 400 + "ms", "--max-latency")):
        add(Case(f"--max-latency {text[:12]!r}", ("plan", "--target", "esp32-s3",
                                                   f"--max-latency={text}"), 2, needle))
    add(Case("target with a right-to-left override", B, 2, "\\u202e",
             budget("target: \"esp32\u202e-s3\"\n" + LIMITS)))
    add(Case("zero-width space in a key", B, 2, "unknown field",
             budget("target: esp32-s3\nlim\u200bits:\n  latency: 30ms\n")))
    add(Case("Cyrillic letter in a key", B, 2, "b.yaml:1: target: Field required",
             budget("taгget: esp32-s3\n" + LIMITS)))
    add(Case("escape sequences in a target", ("plan", "--target", "\x1b[2J\x1b[31mx",
                                              "--max-latency", "30ms"), 2, "\\x1b"))

    # huge dimensions
    for shape, needle in (("1x99999999999x99999", "the largest sample"),
                          ("１x28x28", "digits 0-9"), ("0x28", "positive"),
                          ("1x1x1x1x1x1x1x1x1", "1 to 8 dimensions"),
                          ("1x28x28;rm -rf", "digits 0-9"), ("1_000x28", "digits 0-9"),
                          ("x", "digits 0-9")):
        add(Case(f"--input-shape {shape}", ("plan", *OK, "--input-shape", shape), 2, needle))
    add(Case("budget input_shape huge", B, 2, "the largest sample",
             budget(f"target: esp32-s3\n{LIMITS}input_shape: [1, 100000, 100000]\n")))
    add(Case("plan input_shape huge", ("edgefit", "apply", "plan.json"), 2, "input_shape",
             plan_file(_set("model.input_shape", [1, 10**6, 10**6]))))
    add(Case("measure a model with a huge input", ("edgefit", "measure", "huge.onnx"), 2,
             "more than edgefit-measure allocates",
             lambda d: onnx_with_input(d / "huge.onnx", [1, 100000, 100000, 1000])))
    add(Case("measure a pickle named .onnx", ("edgefit", "measure", "evil.onnx"), 2,
             "evil.onnx", pickle_file("evil.onnx")))
    add(Case("measure --runs abc", ("edgefit", "measure", "m.onnx", "--runs", "abc"), 2,
             "invalid int value", lambda d: onnx_with_input(d / "m.onnx", [1, 4])))

    # plans that lie
    add(Case("plan without schema_version", ("edgefit", "apply", "plan.json"), 2,
             "schema_version is missing", plan_file(_drop("schema_version"))))
    add(Case("plan option not an alternative", ("edgefit", "apply", "plan.json"), 2,
             "'telepathy' is not one", plan_file(_set("layers.conv1.option", "telepathy"))))
    add(Case("plan negative margin", ("edgefit", "apply", "plan.json"), 2, "margin",
             plan_file(_set("margin", -5.0))))
    add(Case("plan NaN cost", ("edgefit", "apply", "plan.json"), 2, "NaN",
             plan_file(raw=plan_json(_set("totals.latency_ms", 123456.789)).replace(
                 "123456.789", "NaN"))))
    add(Case("plan 5000-digit integer", ("edgefit", "resolve", "plan.json"), 2, "digits",
             plan_file(raw=plan_json(_set("margin", 0.25)).replace('"margin": 0.25',
                                                                   '"margin": ' + "9" * 5000))))
    add(Case("plan nested 100000 deep", ("edgefit", "resolve", "plan.json"), 2, "plan.json",
             plan_file(raw=deep_json(100000))))
    add(Case("plan duplicate key", ("edgefit", "resolve", "plan.json"), 2, "duplicate",
             plan_file(raw=plan_json().replace('"status":', '"status": "INFEASIBLE", "status":',
                                               1))))
    add(Case("plan empty", ("edgefit", "apply", "plan.json"), 2, "plan.json", write("plan.json",
                                                                               "")))
    add(Case("plan truncated", ("edgefit", "apply", "plan.json"), 2, "plan.json",
             plan_file(raw=plan_json()[:5000])))
    add(Case("plan steps name a layer it does not have", ("edgefit", "resolve", "plan.json"),
             2, "names layer 'conv1', which is not one of the plan's layers",
             plan_file(_drop("layers.conv1"))))
    add(Case("resolve --exclude telepathy", ("edgefit", "resolve", "plan.json", "--exclude",
                                             "telepathy"), 2, "--exclude 'telepathy'",
             plan_file()))
    add(Case("plan --exclude telepathy", ("plan", *OK, "--model", "tiny.pt2", "--exclude",
                                          "telepathy"), 2, "--exclude 'telepathy'",
             lambda d: tiny_pt2(d / "tiny.pt2"), torch=True))
    add(Case("resolve --out a directory", ("edgefit", "resolve", "plan.json", "--out", "d"), 2,
             "is a directory", each(plan_file(), lambda d: (d / "d").mkdir())))
    add(Case("resolve --pin an unknown layer", ("edgefit", "resolve", "plan.json", "--pin",
                                                "nope=int8"), 2, "no layer 'nope'", plan_file()))

    # where apply writes
    add(Case("apply --out a file", ("edgefit", "apply", "plan.json", "--out", "f"), 2,
             "is a file, not a folder", each(plan_file(), write("f", "mine\n"))))
    add(Case("apply --out a folder of the user's files", ("edgefit", "apply", "plan.json",
                                                          "--out", "docs"), 2,
             "holds files edgefit did not write", each(plan_file(),
                                                       folder_with("docs", "thesis.tex"))))
    add(Case("apply --out a symlink", ("edgefit", "apply", "plan.json", "--out", "o"), 2,
             "is a symbolic link", each(plan_file(), link("o", "/tmp"))))

    # flags
    for argv, needle in ((("--time-limit", "nan"), "--time-limit nan"),
                         (("--time-limit", "-1"), "--time-limit -1"),
                         (("--time-limit", "1e308"), "at most 86400"),
                         (("--gap", "5"), "--gap 5"), (("--time-limit", "abc"), "--time-limit"),
                         (("--search", "bayes", "--trials", "1000000000"), "--trials"),
                         (("--finetune", "100000"), "--finetune"), (("--nope",), "--nope")):
        add(Case(f"plan {' '.join(argv)}", ("plan", *OK, *argv), 2, needle))
    add(Case("unknown command", ("edgefit", "frobnicate"), 2, "frobnicate"))
    add(Case("review without a terminal", ("edgefit", "review", "plan.json"), 2,
             "needs a terminal", plan_file()))
    return cases


def _evil_npz(d: Path) -> None:
    import numpy as np

    tiny_pt2(d / "tiny.pt2")
    x = np.empty(2, dtype=object)
    x[0], x[1] = _Evil(d / MARKER), 1
    np.savez(d / "evil.npz", x=x, y=np.array([0, 1]))


def _truncated(d: Path, name: str) -> None:
    """The first half of a valid model file."""
    full = d / f"full{Path(name).suffix}"
    if full.suffix == ".pt2":
        tiny_pt2(full)
    else:
        onnx_matmul(full, [1, 4])
    data = full.read_bytes()
    (d / name).write_bytes(data[: len(data) // 2])
    full.unlink()


def _npz_bomb(d: Path) -> None:
    """An .npz whose x.npy header declares 10**12 float32 values (4 TB) in a few bytes."""
    tiny_pt2(d / "tiny.pt2")
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    buf = io.BytesIO()
    import numpy as np

    np.save(buf, np.zeros(2, np.int64))
    with zipfile.ZipFile(d / "bomb.npz", "w") as z:
        z.writestr("x.npy", npy + b"\0" * 64)
        z.writestr("y.npy", buf.getvalue())


def _onnx_external(d: Path, location: str) -> None:
    """An ONNX model whose weight lives in an external file at `location`."""
    from onnx import TensorProto, helper

    (d / "m").mkdir(exist_ok=True)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], vals=[0.0] * 16)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("float_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
                              [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (d / "m" / "ext.onnx").write_bytes(model.SerializeToString())


CASES = {c.name: c for c in _cases()}


def setup_case(case: Case, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tmp").mkdir(exist_ok=True)  # TMPDIR of the case: a factory's mkdtemp lands here
    case.setup(folder)


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def markers(folder: Path) -> list[str]:
    """What hostile code would have left behind in the case's folder: the marker file, or a
    folder a factory (tempfile:mkdtemp) made in the case's TMPDIR."""
    found = [str(p) for p in folder.rglob(MARKER)]
    tmp = folder / "tmp"
    return found + ([str(p) for p in tmp.iterdir() if p.is_dir()] if tmp.is_dir() else [])


def clean_up(folder: Path) -> None:
    """Make every file removable again (unreadable cases chmod 0)."""
    for p in folder.rglob("*"):
        if not p.is_symlink() and p.exists() and not stat.S_IMODE(p.stat().st_mode) & 0o200:
            os.chmod(p, 0o644)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus")
    for i, c in enumerate(CASES.values()):
        where = out / f"{i:03d}"
        setup_case(c, where)
        (where / "argv.txt").write_text(shlex.join(c.argv) + "\n")
        print(f"{where}: {c.name}: exit {c.code}")
