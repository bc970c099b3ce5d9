"""Seconds per training step and peak memory per method, at the papers' patch sizes (CPU, or CUDA
when present). Each case runs in a fresh process: build the method's networks, then time
``train_step`` + backward + optimiser step on random inputs (data loading excluded).

    python Testing/benchmarks/bench_training.py [--only rail] [--steps 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from peak_memory import peak_rss_gib  # noqa: E402  (the script's folder is on sys.path)

# (label, method, settings, architecture, kwargs, labeled batch, unlabeled batch, patch (z, y, x) or (y, x), note)
CASES = [
    ("supervised, ResEnc U-Net (CFP coarse)", "supervised", {}, "resenc_unet",
     {"features_per_stage": [32, 64, 128, 256, 320], "strides": [1, 2, 2, 2, 2], "n_blocks_per_stage": [1, 3, 4, 6, 6],
      "deep_supervision": True}, 2, 0, (80, 160, 160), "CFP stage 1 patch; paper batch 8"),
    ("mean teacher, V-Net", "mean_teacher", {}, "vnet", {"has_dropout": True}, 1, 1, (80, 112, 112), "RAIL/LA patch"),
    ("BCP self-training, V-Net", "bcp", {}, "vnet", {"has_dropout": True}, 2, 2, (80, 112, 112),
     "LA patch; paper batch 4+4"),
    ("BCP, edge-guided V-Net", "bcp", {}, "vnet", {"has_dropout": True, "edge_guided": True}, 2, 2, (80, 112, 112),
     "LA patch; paper batch 4+4"),
    ("RAIL (2 V-Net + 2 ResVNet)", "rail", {"group_steps": 1}, "vnet", {"has_dropout": True}, 1, 1, (80, 112, 112),
     "RAIL patch and batch"),
    ("U-Mamba2-SSL consistency, U-Mamba2", "consistency", {}, "umamba2", {"deep_supervision": True}, 1, 1,
     (64, 128, 128), "reduced from 160x256x256 to keep CPU time reasonable"),
    ("DAE pretraining, U-Mamba2", "ssl_pretrain", {"mode": "dae"}, "umamba2", {}, 1, 1, (64, 128, 128),
     "reduced from 160x256x256 to keep CPU time reasonable"),
    ("MIM pretraining, U-Net 2D", "mim_pretrain", {}, "unet2d", {}, 2, 2, (224, 320), "DL4CR size, batch 4"),
    ("supervised, U-Net 2D scAG (UFBA)", "supervised", {}, "unet2d_scag", {}, 4, 0, (256, 256), "our UFBA setting"),
]


def child(index: int, device: str, steps: int) -> dict:
    import torch

    from toothseg.core.networks import build_network
    from toothseg.train.methods import MethodContext, get_method

    label, name, settings, arch, kwargs, n_l, n_u, patch, note = CASES[index]
    dims = len(patch)
    classes = 2 if dims == 3 else 33

    def build(**overrides):
        return build_network(arch, **{"num_classes": classes, "spatial_dims": dims, **kwargs, **overrides})

    torch.manual_seed(0)
    cls = get_method(name)
    method = cls(cls.validate_settings(settings), MethodContext(build, classes, dims, 1000, seed=0,
                                                               device=torch.device(device)))
    method.nets = {k: v.to(device) for k, v in method.build_networks().items()}
    params = [p for n in method.trainable for p in method.nets[n].parameters()]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    batch = {"image": torch.randn(n_l, 1, *patch, device=device),
             "label": torch.randint(0, classes, (n_l, *patch), device=device),
             "unlabeled_image": torch.randn(max(1, n_u), 1, *patch, device=device), "force": "consistency"}
    timings = []
    for step in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=device == "cuda"):
            out = method.train_step(batch, 500 + step)
        out.loss.backward()
        optimizer.step()
        method.after_step(500 + step)
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    result = {"label": label, "method": name, "architecture": arch, "patch": list(patch), "batch": [n_l, n_u],
              "note": note, "device": device, "seconds_per_step": min(timings[1:]),
              "peak_rss_gib": peak_rss_gib(),
              "trainable_parameters": sum(p.numel() for p in params)}
    if device == "cuda":
        result["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="only this method")
    parser.add_argument("--steps", type=int, default=1, help="timed steps after one warm-up")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-device", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.child_device, args.steps)))
        return 0
    import torch

    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else \
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"# one training step (forward, backward, optimiser), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print("| method | patch | batch (lab+unlab) | device | s/step | peak RSS GiB | peak CUDA GiB | note |")
    print("|---|---|---|---|---:|---:|---:|---|")
    results = []
    for device in devices:
        for index, case in enumerate(CASES):
            if args.only and case[1] != args.only:
                continue
            proc = subprocess.run([sys.executable, __file__, "--child", str(index), "--child-device", device,
                                   "--steps", str(args.steps)], capture_output=True, text=True)
            if proc.returncode != 0:
                last_line = proc.stderr.strip().splitlines()[-1][:80]
                print(f"| {case[0]} | {case[7]} | | {device} | failed | | | {last_line} |")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            cuda = f"{r['peak_cuda_gib']:.2f}" if "peak_cuda_gib" in r else ""
            print(f"| {r['label']} | {tuple(r['patch'])} | {r['batch'][0]}+{r['batch'][1]} | {device} | "
                  f"{r['seconds_per_step']:.2f} | {r['peak_rss_gib']:.2f} | {cuda} | {r['note']} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"torch": torch.__version__, "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
