"""Can this GPU host load AOTInductor packages at all? Builds three tiny ones and loads each in a fresh process.

    yolo11-triton check aoti [--out /tmp/aoti_check]

Why it exists: Track A's compiled network was first an AOTInductor package (``aoti_compile_and_package`` /
``aoti_load_package``). On the H100 host (torch 2.11.0+cu130, Python 3.12) every package crashed the loading
process with SIGSEGV inside ``AOTIModelPackageLoader``, down to the two-convolution network below without
autotuning, so the project compiles with torch.compile from caches instead (``python_models/export/
compiled_network.py``). This tool says in a minute whether that is still so on your host: one package with the
default settings, one under a file name starting with a dot (how the export stages files), one with max-autotune;
each loaded and run in its own process, whose exit status is reported (-11: the crash). Exit 0 when all three load.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch


class TwoConvolutions(torch.nn.Module):
    """Track A's compiled input path (uint8 BGR HWC -> FP16 CHW / 255, channels-last) and two convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 32, 3, 2, 1)
        self.b = torch.nn.Conv2d(32, 64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flip(-1).permute(0, 3, 1, 2).half() * (1 / 255)
        x = torch.nn.functional.silu(self.a(x.contiguous(memory_format=torch.channels_last)))
        return torch.nn.functional.silu(self.b(x))


def load_and_run(package: str) -> None:
    from torch._inductor import aoti_load_package

    started = time.perf_counter()
    model = aoti_load_package(package, run_single_threaded=True)
    out = model(torch.full((3, 64, 64, 3), 114, dtype=torch.uint8, device="cuda"))
    torch.cuda.synchronize()
    print(f"loaded and ran in {time.perf_counter() - started:.1f} s: output {tuple(out.shape)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/aoti_check"))
    parser.add_argument("--load", help=argparse.SUPPRESS)  # the child process: load this package
    args = parser.parse_args(argv)
    if args.load:
        load_and_run(args.load)
        return 0
    if not torch.cuda.is_available():
        print("check_aoti: no GPU here", file=sys.stderr)
        return 2
    from torch._inductor import aoti_compile_and_package

    args.out.mkdir(parents=True, exist_ok=True)
    net = TwoConvolutions().cuda().half().to(memory_format=torch.channels_last).eval()
    example = torch.full((8, 64, 64, 3), 114, dtype=torch.uint8, device="cuda")
    with torch.no_grad():
        exported = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=32)},))
    failed = 0
    for name, configs in (("model.pt2", {}), (".partial.model.pt2", {}), ("autotuned.pt2", {"max_autotune": True})):
        path = args.out / name
        started = time.perf_counter()
        aoti_compile_and_package(exported, package_path=str(path), inductor_configs=dict(configs))
        built = time.perf_counter() - started
        child = subprocess.run([sys.executable, __file__, "--load", str(path)], capture_output=True, text=True,
                               timeout=600)
        said = child.stdout.strip().splitlines()[-1:] or child.stderr.strip().splitlines()[-1:]
        print(f"{name} {configs or '(defaults)'}: built in {built:.0f} s; load exit {child.returncode}: "
              f"{said[0] if said else ''}", flush=True)
        failed += child.returncode != 0
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}: {3 - failed} of 3 packages load")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
