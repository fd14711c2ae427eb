"""CoTAttention(256, 3) at 8x256x32x32: compiled with our softmax gate vs
compiled with the reference gate (inductor fuses softmax * v + k1), eager
original too; interleaved rounds, medians (ms)."""
import sys, time, statistics, torch
import attnkernels
from attnkernels.cot import modules as fnn, reference as ref
torch.manual_seed(0)
shape = (8, 256, 32, 32)
mode = sys.argv[1]  # inference | train
x = torch.randn(shape)
dy = torch.randn(shape)
up = ref.CoTAttention(256, 3)
ours = fnn.CoTAttention(256, 3); ours.load_state_dict(up.state_dict()); ours.backend = "cpu"
refg = fnn.CoTAttention(256, 3); refg.load_state_dict(up.state_dict()); refg.backend = "reference"
for m in (up, ours, refg):
    m.train(mode == "train")
cands = {"original-eager": up, "original-compile": torch.compile(up),
         "ours-eager": ours, "ours-compile": torch.compile(ours),
         "refgate-compile": torch.compile(refg)}
def step(m):
    if mode == "train":
        xx = x.clone().requires_grad_()
        y = m(xx); y.backward(dy)
    else:
        with torch.no_grad():
            m(x)
for m in cands.values():
    for _ in range(3): step(m)
times = {k: [] for k in cands}
for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 8):
    for k, m in cands.items():
        t = time.perf_counter(); step(m); times[k].append((time.perf_counter() - t) * 1e3)
for k, v in times.items():
    v.sort(); n = len(v)
    print(f"{mode:9s} {k:18s} median {statistics.median(v):8.1f}  p20 {v[n//5]:8.1f}  p80 {v[(4*n)//5 - 1 if n>1 else 0]:8.1f}")
