"""original-compile vs converted-compile with our ops (every fused module on
backend 'cpu'; printed as converted-compile, as named when this ran) vs
converted-compile with every fused module on backend 'reference' (what auto
now does under torch.compile for the families that set INDUCTOR_FUSES).
From the repository root:
python bench/results/compile-profile-cpu-2026-12-07/whole_networks.py seresnet50,coord_resnet50 inference,train 4 160 4"""
import os, sys, copy, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..'))  # the repository root
from bench.models import build, step_fn
from bench.timing import measure_interleaved
import attnkernels
models = sys.argv[1].split(','); modes = sys.argv[2].split(','); batch, size, budget = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
for name in models:
    original, converted, x, target = build(name, torch.device('cpu'), torch.float32, torch.contiguous_format, batch, size)
    for m in converted.modules():
        if hasattr(m, 'backend') and type(m).__module__.startswith('attnkernels'):
            m.backend = 'cpu'
    ref = copy.deepcopy(converted)
    for m in ref.modules():
        if hasattr(m, 'backend') and type(m).__module__.startswith('attnkernels'):
            m.backend = 'reference'
    for mode in modes:
        fns = {}
        for prov, model in (('original-compile', original), ('converted-compile', converted), ('converted-ref-compile', ref)):
            mm = copy.deepcopy(model)
            torch._dynamo.reset()
            fns[prov] = step_fn(mm, torch.compile(mm), x, target, mode)
        res = measure_interleaved(fns, torch.device('cpu'), budget_s=budget * len(fns))
        base = res['original-compile']['median_ms']
        print(name, mode, '  '.join(f"{p} {r['median_ms']:.1f} [{r['p20_ms']:.1f},{r['p80_ms']:.1f}] ({base / r['median_ms']:.2f}x) peak {r.get('peak_mb', 0):.0f}" for p, r in res.items()), flush=True)
