"""``--dataset demo``: generate (or reuse) the procedural demo videos and list their clips."""

from __future__ import annotations

from pathlib import Path

from stepcli.extract.datasets.base import Clip, Dataset, DatasetOptions
from stepcli.extract.datasets.registry import register_dataset
from stepcli.extract.demo import PAIRS, generate_demo, twin_group

# Enough clips per class that a probe on a randomly initialised backbone's tokens learns the motion
# instead of memorising its few training clips (fewer makes it overfit); few enough that the demo
# still generates and extracts quickly on a CPU.
DEFAULT_CLIPS_PER_CLASS = 60


@register_dataset("demo")
def demo_dataset(options: DatasetOptions) -> Dataset:
    root = Path(options.root or "demo-videos")
    clips_per_class = options.size or DEFAULT_CLIPS_PER_CLASS
    made = generate_demo(root, clips_per_class=clips_per_class, num_frames=options.num_frames, seed=options.seed)
    class_names = [name for pair in PAIRS for name in pair]
    index = {name: i for i, name in enumerate(class_names)}
    clips = [
        Clip(clip_id=c.clip_id, path=str((root / c.path).resolve()), label=index[c.label], split=c.split,
             group=twin_group(c))
        for c in made
    ]  # fmt: skip
    return Dataset(
        name="demo",
        clips=clips,
        class_names=class_names,
        pairs=list(PAIRS),
        source={"generator": "stepcli.demo", "clips_per_class": clips_per_class, "seed": options.seed},
    )
