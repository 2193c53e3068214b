"""Which AOTInductor packages load on this host: file name (staged .partial. prefix or not) x max-autotune."""
import os, subprocess, sys, time
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 32, 3, 2, 1)
        self.b = torch.nn.Conv2d(32, 64, 1)
    def forward(self, x):
        x = x.flip(-1).permute(0, 3, 1, 2).half() * (1 / 255)
        return torch.nn.functional.silu(self.b(torch.nn.functional.silu(self.a(x.contiguous(memory_format=torch.channels_last)))))

if len(sys.argv) > 1:  # load in a fresh process
    from torch._inductor import aoti_load_package
    t = time.time()
    m = aoti_load_package(sys.argv[1], run_single_threaded=True)
    y = m(torch.full((3, 64, 64, 3), 114, dtype=torch.uint8, device="cuda")); torch.cuda.synchronize()
    print(f"  loaded+ran {sys.argv[1]} in {time.time() - t:.1f} s: {tuple(y.shape)}", flush=True)
    sys.exit(0)
net = Net().cuda().half().to(memory_format=torch.channels_last).eval()
ex = torch.full((8, 64, 64, 3), 114, dtype=torch.uint8, device="cuda")
with torch.no_grad():
    ep = torch.export.export(net, (ex,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=32)},))
    from torch._inductor import aoti_compile_and_package
    os.makedirs("/tmp/probe", exist_ok=True)
    for name, configs in (("model.pt2", {}), (".partial.model.pt2", {}), ("tuned.pt2", {"max_autotune": True})):
        path = f"/tmp/probe/{name}"
        t = time.time()
        aoti_compile_and_package(ep, package_path=path, inductor_configs=dict(configs))
        print(f"{name} {configs}: built in {time.time() - t:.1f} s", flush=True)
        r = subprocess.run([sys.executable, __file__, path], capture_output=True, text=True, timeout=300)
        print(r.stdout.strip() or f"  load rc={r.returncode}: {r.stderr.strip().splitlines()[-1:] }", flush=True)
