"""``yolo11-triton``: every command of the project, one subcommand each, over the package's code.

Each subcommand is a module of this package with a ``main(argv)`` (its own flags and ``--help``); ``tools/*.py``
remain only where docker compose, the Kubernetes manifests or the image build call a script by path.

May import: every role of the package. Nothing imports it but ``python -m python_models``.
"""

from __future__ import annotations

import importlib
import sys

PROG = "yolo11-triton"
SUMMARY = "Serve Ultralytics YOLO detection on Triton four ways behind one contract; prove and measure it."

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "export the weights when needed and serve every track on a real Triton server"),
    "export": ("export", "export weights into the repository; on a GPU host, build the TensorRT plans too"),
    "detect": ("detect", "detect a folder, a list, a glob or a video through one or several servers (JSONL, resumable)"),
    "soak": ("soak", "mixed good and bad traffic for a while: wrong answers, errors, memory growth per process"),
}
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "check": ("prove a deployment, on its host", {
        "server": ("check_server", "a live server: contract, parity, bad input, batching, a perf sweep"),
        "image": ("check_image", "the serving image is the pinned release, with what the project needs"),
        "image-build": ("check_image_build", "rehearse the serving image's build here: its steps, the release's "
                                             "PYTHONPATH, its check"),
        "dali": ("check_dali", "each Track D tier's dali.py, serialised as the DALI backend does, against the CPU"),
        "guard-gpu": ("check_guard_gpu", "Track D's guard on a GPU without Triton's DALI backend"),
        "aoti": ("check_aoti", "whether this GPU host can load AOTInductor packages"),
    }),
    "bench": ("measure; every figure in results/ comes from one of these", {
        "sweep": ("bench_sweep", "perf_analyzer over gRPC on real images against public models: one report"),
        "gpu": ("bench_gpu", "Track A (and the DALI pipeline) on a GPU host: served levels, parity, in-process stages"),
        "preprocess": ("bench_preprocess", "tracks B/C's preprocessing step served alone, per decode mode"),
        "client": ("bench_client", "detect's own ceiling against perf_analyzer's on the same server"),
        "steps": ("bench_steps", "the serving path's Python steps in-process, on one core"),
        "forward": ("bench_forward", "Track A's network forward alone on a GPU, eager, graphed and compiled"),
        "streams": ("bench_streams", "live cameras at a frame rate against the tracking model: how many keep up"),
        "dali-isolation": ("bench_dali_isolation", "what a call Track D's DALI leaf fails costs: bursts with one "
                           "damaged image against good ones"),
    }),
    "dev": ("for the project's developers", {
        "gen-configs": ("gen_configs", "write the committed configs and the docs' generated blocks (--check: compare)"),
        "train-shapes": ("train_shapes", "train the synthetic-shapes test detector (tests/assets)"),
    }),
}
EXAMPLES = f"""examples:
  {PROG} serve                                   # yolo11n.pt (offline: the untrained network), every track
  {PROG} export --weights best.pt --imgsz 1280 --conf 0.3 && {PROG} serve --skip-export
  {PROG} detect photos/ --model yolo11_trt_end2end --out detections.jsonl --grpc-url HOST:8001
  {PROG} check server --grpc-url HOST:8001 --http-url HOST:8000 --metrics-url HOST:8002
  {PROG} bench gpu --weights yolo11s.pt --concurrency 1,16,64,128
  {PROG} COMMAND --help                          # a command's own flags
"""


def usage(group: str | None = None) -> str:
    if group is None:
        rows = [(name, text) for name, (_, text) in COMMANDS.items()]
        rows += [(f"{name} ...", text) for name, (text, _) in GROUPS.items()]
        head = f"usage: {PROG} COMMAND [ARGS]  (also: python -m python_models COMMAND)\n\n{SUMMARY}\n"
    else:
        text, commands = GROUPS[group]
        rows = [(f"{group} {name}", help_) for name, (_, help_) in commands.items()]
        head = f"usage: {PROG} {group} SUBCOMMAND [ARGS]\n\n{group}: {text}\n"
    width = max(len(name) for name, _ in rows) + 2
    lines = [head, "commands:"] + [f"  {name.ljust(width)}{text}" for name, text in rows]
    return "\n".join(lines) + ("\n\n" + EXAMPLES if group is None else "\n")


def run(module: str, prog: str, argv: list[str]) -> int:
    """A command module's ``main`` with ``argv``, its help and errors naming ``prog``."""
    command = importlib.import_module(f"python_models.cli.{module}")
    saved, sys.argv = sys.argv, [prog, *argv]
    try:
        return int(command.main(argv) or 0)
    finally:
        sys.argv = saved


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in COMMANDS:
        return run(COMMANDS[name][0], f"{PROG} {name}", rest)
    if name in GROUPS:
        commands = GROUPS[name][1]
        if not rest or rest[0] in ("-h", "--help"):
            print(usage(name))
            return 0 if rest else 2
        if rest[0] in commands:
            return run(commands[rest[0]][0], f"{PROG} {name} {rest[0]}", rest[1:])
        print(f"{PROG} {name}: no subcommand {rest[0]!r}\n\n{usage(name)}", file=sys.stderr)
        return 2
    print(f"{PROG}: no command {name!r}\n\n{usage()}", file=sys.stderr)
    return 2
