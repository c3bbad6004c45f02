#!/usr/bin/env python3
"""PyTorch peers of gossamer's benchmark workloads, on the same GPU.

Three ways researchers simulate D-SGD in PyTorch, each timed per training step (CUDA events,
warm-up first, median of many):
  loop     one nn.Module and one backward per worker, mixing by a matrix product with P
  vmap     torch.func: stack_module_state + functional_call + vmap(grad), mixing by P @ W
  compile  the vmap step under torch.compile
and PyHessian-style curvature on workload (a)'s averaged model: Hutchinson with 64 Rademacher
probes (one HVP per probe, as PyHessian) and power iteration with deflation for the top 10
eigenvalues (at most 100 iterations, tolerance 1e-3: PyHessian's defaults), by double
backward, on the same 1024-sample subset size as gossamer-bench.

Run on the GPU machine (its python3 has PyTorch):
  python3 bench/peers/torch_peers.py --gossamer bench/results/DATE-DEVICE.json
It prints a ratio table (peer time / gossamer time: > 1 means gossamer is faster) and writes
bench/results/DATE-DEVICE-peers.json. The math is FP32 (TF32 off), as gossamer's default.
"""
import argparse
import datetime
import json
import math
import os
import statistics
import time

import torch
import torch.nn as nn
from torch.func import functional_call, grad, stack_module_state, vmap

WORKLOADS = {
    # name: workers, hidden widths (or "cnn"), per-worker batch, topology, momentum
    "a": dict(m=64, hidden=[256, 256], batch=64, topology="ring", momentum=0.9),
    "b": dict(m=1024, hidden=[128], batch=32, topology="exponential", momentum=0.0),
    # (c): the CNN quickstart's network (gossamer-bench --workload c / c1024) on 28 x 28 images
    "c": dict(m=16, hidden="cnn", batch=32, topology="ring", momentum=0.0),
    "c1024": dict(m=1024, hidden="cnn", batch=32, topology="ring", momentum=0.0),
}
FEATURES, CLASSES, TRAIN = 784, 10, 16384


def mixing_matrix(name, m, device):
    """Dense P as in docs/ARCHITECTURE.md: ring (self and two neighbours, 1/3 each; 1/2 at m = 2),
    exponential (self and k + 2^i, i < ceil(log2 m), each 1/(1 + ceil(log2 m)))."""
    P = torch.zeros(m, m)
    if name == "ring":
        for k in range(m):
            nbrs = {k, (k - 1) % m, (k + 1) % m}
            for j in nbrs:
                P[k, j] = 1.0 / len(nbrs)
    else:
        hops = max(1, math.ceil(math.log2(m)))
        for k in range(m):
            P[k, k] += 1.0 / (1 + hops)
            for i in range(hops):
                P[k, (k + 2 ** i) % m] += 1.0 / (1 + hops)
    return P.to(device)


class QuickstartCnn(nn.Module):
    """configs/quickstart-cnn.json's layers: conv 16, act, maxpool, residual 32 at stride 2 (conv,
    act, conv, plus a 1x1 shortcut of stride 2, act), linear 32, act, classifier; 65,130
    parameters, as gossamer's ModelSpec::cnn."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.block1 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.block2 = nn.Conv2d(32, 32, 3, padding=1)
        self.shortcut = nn.Conv2d(16, 32, 1, stride=2)
        self.linear = nn.Linear(32 * 7 * 7, 32)
        self.classifier = nn.Linear(32, CLASSES)

    def forward(self, x):
        relu = nn.functional.relu
        x = nn.functional.max_pool2d(relu(self.conv(x.reshape(-1, 1, 28, 28))), 2)
        x = relu(self.block2(relu(self.block1(x))) + self.shortcut(x))
        return self.classifier(relu(self.linear(x.flatten(1))))


def make_mlp(hidden):
    if hidden == "cnn":
        return QuickstartCnn()
    layers, width = [], FEATURES
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*layers)


def cuda_median_ms(step, warmup, repeats):
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def batches(m, batch, device, gen):
    x = torch.randn(TRAIN, FEATURES, device=device, generator=gen)
    y = torch.randint(0, CLASSES, (TRAIN,), device=device, generator=gen)

    def draw():
        idx = torch.randint(0, TRAIN, (m, batch), device=device, generator=gen)
        return x[idx], y[idx]  # m x batch x features, m x batch

    return x, y, draw


def loop_peer(w, P, draw, lr, device):
    models = [make_mlp(w["hidden"]).to(device) for _ in range(w["m"])]
    bufs = [[torch.zeros_like(p) for p in mod.parameters()] for mod in models]
    loss_fn = nn.CrossEntropyLoss()

    def step():
        xb, yb = draw()
        for k, mod in enumerate(models):
            mod.zero_grad(set_to_none=True)
            loss_fn(mod(xb[k]), yb[k]).backward()
        with torch.no_grad():
            for i, params in enumerate(zip(*[list(mod.parameters()) for mod in models])):
                stacked = torch.stack([p for p in params])
                grads = torch.stack([p.grad for p in params])
                if w["momentum"] > 0:
                    buf = torch.stack([b[i] for b in bufs])
                    buf.mul_(w["momentum"]).add_(grads)
                    for k in range(len(models)):
                        bufs[k][i].copy_(buf[k])
                    grads = buf
                mixed = (P @ stacked.reshape(len(models), -1)).reshape(stacked.shape)
                mixed.sub_(lr * grads)
                for k, p in enumerate(params):
                    p.copy_(mixed[k])

    return step


def vmap_step_fn(w, P, lr, base):
    def loss_of(params, buffers, x, y):
        return nn.functional.cross_entropy(functional_call(base, (params, buffers), (x,)), y)

    grads_of = vmap(grad(loss_of), in_dims=(0, None, 0, 0))  # buffers (none in an MLP) shared
    mu = w["momentum"]

    def step(params, buffers, bufs, xb, yb):
        g = grads_of(params, buffers, xb, yb)
        new_params, new_bufs = {}, {}
        for name, p in params.items():
            u = g[name]
            if mu > 0:
                u = mu * bufs[name] + u
                new_bufs[name] = u
            mixed = (P @ p.reshape(p.shape[0], -1)).reshape(p.shape)
            new_params[name] = mixed - lr * u
        return new_params, new_bufs if mu > 0 else bufs

    return step


def vmap_peer(w, P, draw, lr, device, compiled):
    models = [make_mlp(w["hidden"]).to(device) for _ in range(w["m"])]
    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    base = make_mlp(w["hidden"]).to("meta")
    bufs = {k: torch.zeros_like(v) for k, v in params.items()}
    fn = vmap_step_fn(w, P, lr, base)
    if compiled:
        fn = torch.compile(fn)
    state = {"params": params, "bufs": bufs}

    def step():
        xb, yb = draw()
        state["params"], state["bufs"] = fn(state["params"], buffers, state["bufs"], xb, yb)

    return step


def load_export(folder, name, device):
    """gossamer-bench --export-curvature: w-bar (flat, per layer weight out x in then bias),
    the curvature subset and the layer sizes; the model built from them."""
    with open(os.path.join(folder, f"{name}-meta.json")) as f:
        meta = json.load(f)
    sizes = meta["sizes"]
    def raw(suffix, dtype):  # little-endian raw arrays, as gossamer-bench writes them
        with open(os.path.join(folder, f"{name}-{suffix}"), "rb") as f:
            return torch.frombuffer(bytearray(f.read()), dtype=dtype)

    flat, xs, ys = raw("wbar.f32", torch.float32), raw("x.f32", torch.float32), raw("y.i32", torch.int32)
    if meta["activation"] != "relu":
        raise ValueError("the peer builds ReLU MLPs only")
    model = make_mlp(sizes[1:-1])
    offset = 0
    with torch.no_grad():
        for layer in [l for l in model if isinstance(l, nn.Linear)]:
            n = layer.weight.numel()
            layer.weight.copy_(flat[offset:offset + n].view_as(layer.weight))
            offset += n
            layer.bias.copy_(flat[offset:offset + layer.bias.numel()])
            offset += layer.bias.numel()
    assert offset == flat.numel(), "layout mismatch"
    return model.to(device), xs.view(-1, sizes[0]).to(device), ys.long().to(device)


def pyhessian_style(w, x, y, device, probes=64, topk=10, max_iter=100, tol=1e-3, samples=1024,
                    exported=None):
    """Hutchinson (one HVP per probe) and power iteration with deflation, by double backward,
    on one model at one batch of `samples` rows, as PyHessian does. With `exported` (model,
    rows, labels from gossamer-bench), on exactly gossamer's w-bar and subset, so the values
    can be compared."""
    torch.manual_seed(7)
    if exported:
        model, xs, ys = exported
    else:
        model = make_mlp(w["hidden"]).to(device)
        xs, ys = x[:samples], y[:samples]
    params = [p for p in model.parameters()]
    loss = nn.functional.cross_entropy(model(xs), ys)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(v):
        return torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)

    def dot(a, b):
        return sum((ai * bi).sum() for ai, bi in zip(a, b))

    def normalize(v):
        n = torch.sqrt(dot(v, v))
        return [vi / (n + 1e-6) for vi in v]

    def hutchinson():
        vals = []
        for _ in range(probes):
            v = [torch.randint_like(p, high=2) * 2 - 1 for p in params]
            vals.append(dot(hvp(v), v).item())
        return statistics.mean(vals)

    def power():
        eigs, vecs = [], []
        for _ in range(topk):
            v = normalize([torch.randn_like(p) for p in params])
            lam = None
            for _ in range(max_iter):
                for u in vecs:  # deflation: orthogonalize against the found vectors
                    c = dot(v, u)
                    v = [vi - c * ui for vi, ui in zip(v, u)]
                v = normalize(v)
                hv = hvp(v)
                new = dot(hv, v).item()
                v = normalize(hv)
                if lam is not None and abs(new - lam) / (abs(lam) + 1e-6) < tol:
                    lam = new
                    break
                lam = new
            eigs.append(lam)
            vecs.append(v)
        return eigs

    out = {}
    for name, fn in (("hutchinson_64", hutchinson), ("power_top10", power)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = fn()
        torch.cuda.synchronize()
        out[name] = {"seconds": time.perf_counter() - t0, "value": value}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gossamer", help="gossamer-bench result JSON of the same GPU (for the ratio table)")
    ap.add_argument("--workloads", default="a,b")  # also c, c1024 (the CNN)
    ap.add_argument("--peers", default="loop,vmap,compile")  # compile last: the slowest to warm up
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--export", help="folder of gossamer-bench --export-curvature (same model and data)")
    args = ap.parse_args()

    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True  # the fastest convolution algorithms: the strongest peer
    name = torch.cuda.get_device_name(0)
    gen = torch.Generator(device=device).manual_seed(1)
    ours = {}
    if args.gossamer:
        with open(args.gossamer) as f:
            ours = json.load(f).get("workloads", {})
    result = {"device": name, "torch": torch.__version__, "math": "fp32", "workloads": {}}
    rows = []
    date = datetime.date.today().isoformat()
    slug = "".join(c if c.isalnum() else "-" for c in name)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{date}-{slug}-peers.json")

    def save():  # after every measurement: a timeout later keeps what was measured
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
    for wname in args.workloads.split(","):
        w = WORKLOADS[wname]
        P = mixing_matrix(w["topology"], w["m"], device)
        x, y, draw = batches(w["m"], w["batch"], device, gen)
        res = {"config": w, "step_ms": {}}
        for peer in args.peers.split(","):
            try:
                if peer == "loop":
                    step = loop_peer(w, P, draw, 1e-6, device)
                    reps = max(3, args.repeats // 4) if w["m"] > 256 else args.repeats
                    ms = cuda_median_ms(step, 2, reps)
                else:
                    step = vmap_peer(w, P, draw, 1e-6, device, peer == "compile")
                    ms = cuda_median_ms(step, 5 if peer == "compile" else 2, args.repeats)
                res["step_ms"][peer] = ms
                print(f"{wname} {peer}: {ms:.3f} ms a step", flush=True)
            except Exception as e:  # a peer that fails is reported, not fatal
                res["step_ms"][peer] = None
                res.setdefault("errors", {})[peer] = repr(e)[:500]
                print(f"{wname} {peer}: failed: {e!r}"[:300], flush=True)
            result["workloads"][wname] = res
            save()
        if wname == "a":
            exported = None
            if args.export and os.path.exists(os.path.join(args.export, "a-meta.json")):
                exported = load_export(args.export, "a", device)
            res["curvature"] = pyhessian_style(w, x, y, device, exported=exported)
            res["curvature"]["same_model_as_gossamer"] = exported is not None
        g = ours.get(wname, {})
        g_ms = 1e3 * g["parts_seconds"]["step"] if g else None
        res["gossamer_step_ms"] = g_ms
        result["workloads"][wname] = res
        for peer, ms in res["step_ms"].items():
            ratio = ms / g_ms if (ms and g_ms) else None
            rows.append((wname, peer, ms, g_ms, ratio))
        if wname == "a" and g.get("curvature"):
            for key in ("hutchinson_64", "power_top10"):
                peer_s = res["curvature"][key]["seconds"]
                our_s = g["curvature"][key]["seconds"]
                rows.append((wname, "pyhessian " + key, 1e3 * peer_s, 1e3 * our_s, peer_s / our_s))
            c = g["curvature"]
            print(f"values, workload a: trace gossamer {c['hutchinson_64']['trace']:.5g} +- "
                  f"{c['hutchinson_64']['std_error']:.2g}, peer {res['curvature']['hutchinson_64']['value']:.5g}; "
                  f"top eigenvalues gossamer {c['power_top10']['eigenvalues'][:3]}, "
                  f"peer {res['curvature']['power_top10']['value'][:3]} "
                  f"(same model: {res['curvature']['same_model_as_gossamer']})")

    result["ratios"] = [dict(workload=r[0], peer=r[1], peer_ms=r[2], gossamer_ms=r[3], ratio=r[4]) for r in rows]
    save()
    print(f"\n{name}, torch {torch.__version__}, FP32; ratio = peer time / gossamer time")
    print(f"{'workload':8} {'peer':28} {'peer ms':>10} {'gossamer ms':>12} {'ratio':>8}")
    for wl, peer, ms, g_ms, ratio in rows:
        fmt = lambda v, spec: format(v, spec) if v is not None else "-"
        print(f"{wl:8} {peer:28} {fmt(ms, '10.3f'):>10} {fmt(g_ms, '12.3f'):>12} {fmt(ratio, '8.2f'):>8}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
