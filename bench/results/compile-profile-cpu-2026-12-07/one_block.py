"""A residual block conv1x1 -> BN -> attention -> + x -> ReLU, compiled:
original attention vs fused (backend cpu) vs fused on backend reference. From
the repository root:
python bench/results/compile-profile-cpu-2026-12-07/one_block.py se,coord inference,train 8x256x28x28 2 [flavours]"""
import os, sys, copy, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..'))  # the repository root
from torch import nn
from bench.timing import measure_interleaved
from attnkernels.families import FAMILIES
import torch.nn.functional as F

class Block(nn.Module):
    def __init__(self, attn, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1, bias=False); self.bn = nn.BatchNorm2d(c); self.attn = attn
    def forward(self, x):
        return F.relu(self.attn(self.bn(self.conv(x))) + x)

names = sys.argv[1].split(','); modes = sys.argv[2].split(','); shape = tuple(int(v) for v in sys.argv[3].split('x')); budget = float(sys.argv[4])
for fam in FAMILIES:
    if fam.name not in names: continue
    for flavour, make in fam.bench.FLAVOURS.items():
        if len(sys.argv) > 5 and flavour not in sys.argv[5].split(","): continue
        torch.manual_seed(0)
        fused = make(shape[1])
        variants = {'original': fused.reference_module(), 'fused': copy.deepcopy(fused), 'fused-ref': copy.deepcopy(fused)}
        variants['fused'].backend = 'cpu'; variants['fused-ref'].backend = 'reference'
        torch.manual_seed(1)
        blocks = {k: Block(v, shape[1]) for k, v in variants.items()}
        sd = blocks['original'].state_dict()
        for b in blocks.values(): b.load_state_dict(sd)
        x = torch.randn(shape)
        for mode in modes:
            fns = {}
            for k, b in blocks.items():
                b = copy.deepcopy(b).train(mode == 'train')
                torch._dynamo.reset()
                cb = torch.compile(b)
                if mode == 'inference':
                    def fn(cb=cb):
                        with torch.no_grad(): cb(x)
                else:
                    xg = x.clone().requires_grad_()
                    def fn(cb=cb, b=b, xg=xg):
                        cb(xg).sum().backward(); b.zero_grad(set_to_none=True); xg.grad = None
                fns[k] = fn
            res = measure_interleaved(fns, torch.device('cpu'), budget_s=budget * len(fns))
            base = res['original']['median_ms']
            print(fam.name, flavour, mode, '  '.join(f"{p} {r['median_ms']:.2f} ({base / r['median_ms']:.2f}x) pk {r.get('peak_mb', 0):.0f}" for p, r in res.items()), flush=True)
