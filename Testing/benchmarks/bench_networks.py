"""Forward-pass time and peak memory of every architecture at its paper's patch size.

Each measurement runs in a fresh process (peak resident memory is per process), in inference
mode (``torch.inference_mode``, batch 1, float32 on CPU; float16 autocast on CUDA).

    python Testing/benchmarks/bench_networks.py                 # all cases, CPU (and CUDA if present)
    python Testing/benchmarks/bench_networks.py --only vnet     # one architecture
    python Testing/benchmarks/bench_networks.py --json out.json

Figures are printed as a Markdown table and optionally written as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

from peak_memory import peak_rss_gib  # noqa: E402  (the script's folder is on sys.path)

# (label, architecture, kwargs, input shape (B, C, *spatial), source of the patch size)
CASES = [
    ("RAIL V-Net", "vnet", {"has_dropout": True}, (1, 1, 80, 112, 112), "RAIL patch 112x112x80"),
    ("RAIL ResVNet", "resvnet", {}, (1, 1, 80, 112, 112), "RAIL patch 112x112x80"),
    ("V-Net + edge guidance", "vnet", {"edge_guided": True}, (1, 1, 80, 112, 112), "BCP/LA patch 112x112x80"),
    ("ResEnc U-Net (CFP coarse)", "resenc_unet",
     {"features_per_stage": [32, 64, 128, 256, 320], "strides": [1, 2, 2, 2, 2], "n_blocks_per_stage": [1, 3, 4, 6, 6]},
     (1, 1, 80, 160, 160), "CFP stage 1 patch 80x160x160"),
    ("U-Mamba2 (STSR plan)", "umamba2", {"num_classes": 13}, (1, 1, 128, 256, 256),
     "U-Mamba2 ablation patch 128x256x256"),
    ("U-Net 2D", "unet2d", {"num_classes": 33}, (1, 1, 224, 320), "DL4CR 224x320"),
    ("U-Net 2D scAG", "unet2d_scag", {"num_classes": 33}, (1, 1, 224, 320), "DL4CR 224x320"),
    ("U-Net 2D NAC", "unet2d_nac", {"num_classes": 33}, (1, 1, 224, 320), "DL4CR 224x320"),
    ("U-Net 2D (UFBA full image)", "unet2d", {"num_classes": 33}, (1, 1, 512, 512), "UFBA-425 512x512"),
]


def measure(index: int, device: str, repeats: int) -> dict:
    """Runs inside the child process."""

    import torch

    from toothseg.core.networks import build_network

    label, name, kwargs, shape, source = CASES[index]
    torch.manual_seed(0)
    model = build_network(name, **kwargs).to(device).eval()
    x = torch.randn(shape, device=device)
    baseline_gib = peak_rss_gib()
    timings = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=device == "cuda"):
        for _ in range(repeats + 1):  # the first run warms up allocators and kernels
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - start)
    result = {
        "label": label, "architecture": name, "input": list(shape), "source": source, "device": device,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": min(timings[1:]) if repeats else timings[0],
        "peak_rss_gib": peak_rss_gib(),
        "rss_increase_gib": peak_rss_gib() - baseline_gib,
    }
    if device == "cuda":
        result["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="only cases of this architecture")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after one warm-up (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-device", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.child_device, args.repeats)))
        return 0
    import torch

    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else \
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    print(f"# forward pass, batch 1, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print("| network | input (B,C,*spatial) | device | parameters | seconds | peak RSS GiB | peak CUDA GiB |")
    print("|---|---|---|---:|---:|---:|---:|")
    for device in devices:
        for index, case in enumerate(CASES):
            if args.only and case[1] != args.only:
                continue
            proc = subprocess.run([sys.executable, __file__, "--child", str(index), "--child-device", device,
                                   "--repeats", str(args.repeats)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"| {case[0]} | {case[3]} | {device} | failed: {proc.stderr.strip().splitlines()[-1][:80]} |")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            cuda = f"{r['peak_cuda_gib']:.2f}" if "peak_cuda_gib" in r else ""
            print(f"| {r['label']} | {tuple(r['input'])} | {device} | {r['parameters'] / 1e6:.2f} M | "
                  f"{r['seconds']:.2f} | {r['peak_rss_gib']:.2f} | {cuda} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}, handle,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
