"""Extraction against the best the backbone's forward pass does on this machine, per family.

    python bench/extract.py [--families openclip:ViT-S-32,timm:mobilenetv2_100] [--clips-per-class 2]
                            [--old-tree /path/to/an/older/checkout]

For each backbone (random init, 224 px, 8 frames a clip, the demo's clips): the forward pass
alone on the same preprocessed frames, over frames per backbone call and the allocator as glibc
leaves it and as extraction tunes it; then `run_extract` with its defaults. The best forward-only
rate is the limit, and the ratio extraction / best is what extraction costs beyond the backbone
(target >= 0.85). Allocator-as-left runs come first (tuning cannot be undone in a process).
Extraction also decodes and preprocesses every frame, which the forward-only pass never does: the
decode rate on one core is measured too, and the rate the forward and the decoding would reach
together if the decoding's CPU time were spread over every core is the second limit shown.

`--old-tree`: the same MobileNetV2 extraction by another checkout's `run_extract` and by this
one, each in its own process, alternating, with their user and system time and minor faults.
Everything runs in one invocation, so a change in the machine's load hits both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from stepcli.extract.allocator import keep_freed_memory
from stepcli.extract.datasets import DatasetOptions, load_dataset
from stepcli.extract.encoders import load_backbone
from stepcli.extract.pipeline import ExtractConfig, available_cores, run_extract, torch_threads
from stepcli.extract.video import sample_clip

FAMILIES = (
    "openclip:ViT-S-32",
    "openclip:ViT-B-16",
    "timm:mobilenetv2_100",
    "timm:resnet50",
    "timm:convnext_tiny",
    "timm:vit_small_patch14_dinov2",
)
CALL_SIZES = (
    4,
    8,
    16,
    64,
)  # (those above --sweep-frames run as one call of them all)  # frames per backbone call tried besides the encoder's own choice


def forward_rate(encoder, frames: torch.Tensor, per_call: int) -> float:
    """Frames per second of the forward pass alone, in calls of `per_call` frames (one warm-up call)."""
    with torch.no_grad():
        encoder(frames[:per_call])
        start = time.perf_counter()
        for part in frames.split(per_call):
            encoder(part)
    return len(frames) / (time.perf_counter() - start)


DRIVER = """
import json, resource, sys
from pathlib import Path
from stepcli.extract.datasets import DatasetOptions
from stepcli.extract.pipeline import ExtractConfig, available_cores, run_extract, torch_threads
root, out, spec, frames, size = sys.argv[1:]
options = DatasetOptions(root=Path(root), size=int(size), num_frames=int(frames))
config = ExtractConfig(dataset="demo", out=Path(out), dataset_options=options, backbone=spec, num_frames=int(frames))
before = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
summary = run_extract(config)
after = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
delta = lambda name: sum(getattr(a, name) - getattr(b, name) for a, b in zip(after, before))
print(json.dumps({"seconds": summary.seconds, "extracted": summary.extracted, "user": delta("ru_utime"),
                  "sys": delta("ru_stime"), "faults": delta("ru_minflt")}))
"""


def tree_extract(tree: Path, out: Path, root: Path, spec: str, frames: int, size: int, threads: int | None) -> dict:
    """`run_extract` of `tree`'s code with its defaults, in its own process: its seconds (decode,
    forward, write) and the CPU time and minor faults of the extraction (model build included)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    if threads:  # both trees' torch start with it (the older one has no --threads)
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-c", DRIVER, str(root), str(out), spec, str(frames), str(size)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--clips-per-class", type=int, default=2)
    parser.add_argument("--sweep-frames", type=int, default=64, help="frames the forward-only sweep runs on")
    parser.add_argument("--threads", type=int, help="torch threads for both sides [default: torch's own]")
    parser.add_argument("--old-tree", type=Path, help="another checkout, for the MobileNetV2 side by side")
    parser.add_argument("--side-clips-per-class", type=int, default=4, help="clips per class for the side by side")
    args = parser.parse_args()
    families = args.families.split(",")
    cores = available_cores()
    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="stepcli-bench-"))
    options = DatasetOptions(root=work / "videos", size=args.clips_per_class, num_frames=args.frames)
    clips = load_dataset("demo", options).clips
    print(f"{len(clips)} clips x {args.frames} frames, 224 px, random init; {torch.get_num_threads()} threads; "
          f"load {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores", flush=True)  # fmt: skip
    encoders, sweep, decode = {}, {}, {}
    for spec in families:
        encoders[spec] = encoder = load_backbone(spec, 224)
        with torch_threads(1):  # what one decode worker does: decode and preprocess, on one core
            tick = time.perf_counter()
            frames = torch.cat([encoder.preprocess(sample_clip(c.path, args.frames).frames) for c in clips])
            decode[spec] = len(frames) / (time.perf_counter() - tick)
        sweep[spec] = frames[: args.sweep_frames]
    sizes = {spec: sorted({*CALL_SIZES, encoders[spec].frames_per_call}) for spec in families}
    best: dict[str, tuple[float, str]] = {}
    for tuned in (False, True):
        if tuned:
            keep_freed_memory()
        for spec in families:
            for per_call in sizes[spec]:
                rate = forward_rate(encoders[spec], sweep[spec], min(per_call, len(sweep[spec])))
                setting = f"{per_call} a call, malloc {'tuned' if tuned else 'as left'}"
                print(f"  forward only {spec:32s} {setting:28s} {rate:7.1f} frames/s", flush=True)
                if rate > best.get(spec, (0.0, ""))[0]:
                    best[spec] = (rate, setting)

    rows = []
    for k, spec in enumerate(families):
        config = ExtractConfig(dataset="demo", out=work / f"cache{k}", dataset_options=options, backbone=spec,
                               num_frames=args.frames, threads=args.threads)  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_SELF)
        summary = run_extract(config)
        after = resource.getrusage(resource.RUSAGE_SELF)
        rate = summary.timing.frames / summary.seconds
        # the limit measured again right after, at the best setting; the higher of the two counts
        per_call = int(best[spec][1].split()[0])
        again = forward_rate(encoders[spec], sweep[spec], min(per_call, len(sweep[spec])))
        limit = max(best[spec][0], again)
        sys_share = (after.ru_stime - before.ru_stime) / max(after.ru_utime - before.ru_utime, 1e-9)
        # decoding is work the forward-only pass never does: spread over every core, it leaves this
        with_decode = 1 / (1 / limit + 1 / (decode[spec] * cores))
        rows.append((spec, limit, best[spec][1], rate, rate / limit, sys_share, decode[spec], with_decode))
        print(f"  extract {spec}: {rate:.1f} frames/s; {summary.timing.report(summary.seconds)}", flush=True)

    print("\n| backbone | best forward only (frames/s) | at | extract (frames/s) | extract / best | sys / user "
          "| decode, 1 core (frames/s) | forward + decode on all cores (frames/s) | extract / that |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for spec, limit, setting, rate, ratio, sys_share, decoded, with_decode in rows:
        print(f"| `{spec}` | {limit:.1f} | {setting} | {rate:.1f} | {ratio:.2f} | {sys_share:.0%} | {decoded:.0f} "
              f"| {with_decode:.1f} | {rate / with_decode:.2f} |")  # fmt: skip

    if args.old_tree:
        here = Path(__file__).resolve().parents[1]
        spec, sides = "timm:mobilenetv2_100", {"old": args.old_tree.resolve(), "this": here}
        results: dict[str, list[dict]] = {name: [] for name in sides}
        size = args.side_clips_per_class
        for repeat in range(2):  # alternating, so a change of load hits both
            for name, tree in sides.items():
                out = work / f"side-{name}-{repeat}"
                results[name].append(tree_extract(tree, out, options.root, spec, args.frames, size, args.threads))
        frames = results["this"][0]["extracted"] * args.frames
        print(f"\n{spec}, `run_extract` with its defaults, {frames} frames, the faster of 2 runs each:")
        print("| tree | extraction (s) | frames/s | user (s) | sys (s) | sys / user | minor faults |")
        print("|---|---|---|---|---|---|---|")
        for name, runs in results.items():
            r = min(runs, key=lambda x: x["seconds"])
            print(f"| {name} | {r['seconds']:.1f} | {frames / r['seconds']:.1f} | {r['user']:.1f} | "
                  f"{r['sys']:.1f} | {r['sys'] / max(r['user'], 1e-9):.0%} | {r['faults']:,} |")  # fmt: skip
        fastest = {name: min(x["seconds"] for x in runs) for name, runs in results.items()}
        print(f"speed-up this / old: {fastest['old'] / fastest['this']:.2f}x")
    print(f"load {os.getloadavg()[0]:.1f} (1 min) at the end")


if __name__ == "__main__":
    main()
