import time, sys, torch
import attnkernels
from attnkernels.cot import functional as CF, reference as ref
torch.manual_seed(0)
shape = tuple(int(s) for s in sys.argv[1].split("x")) if len(sys.argv) > 1 else (8, 256, 32, 32)
fmt = torch.channels_last if len(sys.argv) > 2 and sys.argv[2] == "cl" else torch.contiguous_format
att, v, k1, dy = (torch.randn(shape).mul(3 if i == 0 else 1).to(memory_format=fmt) for i in range(4))

def med(fn, n=30):
    for _ in range(3): fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts)//2] * 1e3

def fwd(f):
    return lambda: f(att, v, k1)
def step(f):
    a, vv, kk = (t.clone().requires_grad_() for t in (att, v, k1))
    def run():
        y = f(a, vv, kk)
        torch.autograd.grad(y, (a, vv, kk), dy)
    return run
out = torch.empty_like(att)
print("shape", shape, "fmt", fmt, "copy_ %.2f ms" % med(lambda: out.copy_(att)))
for name, f in (("reference", ref.cot_softmax_gate), ("fused cpu", lambda a, v, k: CF.cot_softmax_gate(a, v, k, backend="cpu"))):
    with torch.no_grad():
        tf = med(fwd(f))
    print(f"{name:10s} forward {tf:.2f} ms  fwd+bwd {med(step(f)):.2f} ms")
