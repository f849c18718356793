"""Generate piano-rolls from a trained RNN-RBM checkpoint, as MIDI files and piano-roll PNGs.

    python rnnrbm/generate.py --checkpoint rnnrbm_model.npz --out sample     # sample1.mid/.png, sample2.mid/.png

Like the tutorial's `generate`: 200 frames, each drawn by a 25-step Gibbs chain started from silence.
Samples come from the generation random stream in the state the tutorial's would be in after
training (untouched by training), so the n-th sample of a checkpoint is reproducible.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dltutorials_is.datasets.midi import midiwrite  # noqa: E402
from dltutorials_is.errors import entry_point  # noqa: E402
from dltutorials_is.flags import positive_int  # noqa: E402
from dltutorials_is.io import check_all_writable  # noqa: E402
from dltutorials_is.tutorials.rnnrbm import load_model  # noqa: E402


def save_piano_roll_png(path: Path, piano_roll, r, dt) -> None:
    figure, axes = plt.subplots(figsize=(10, 4))
    extent = (0, dt * len(piano_roll)) + tuple(r)
    axes.imshow(piano_roll.T, origin="lower", aspect="auto", interpolation="nearest", cmap="gray_r", extent=extent)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("MIDI note number")
    axes.set_title("generated piano-roll")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def output_stems(out: Path, count: int) -> list[Path]:
    return [out.with_name(f"{out.name}{n}") for n in range(1, count + 1)]


@entry_point
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("rnnrbm_model.npz"), help="(%(default)s)")
    p.add_argument("--out", type=Path, default=Path("sample"), help="prefix: writes <out>1.mid, <out>1.png, ... (%(default)s)")
    p.add_argument("--count", type=positive_int, default=2, help="number of samples, the tutorial made 2 (%(default)s)")
    args = p.parse_args(argv)
    stems = output_stems(args.out, args.count)
    check_all_writable([stem.with_suffix(suffix) for stem in stems for suffix in (".mid", ".png")], "--out")
    model, state = load_model(args.checkpoint)
    config = model.config
    print(f"Loaded {args.checkpoint} ({state.epochs_done} epoch(s) trained)")
    for stem in stems:
        piano_roll = model.generate()
        midiwrite(stem.with_suffix(".mid"), piano_roll, config.r, config.dt)
        save_piano_roll_png(stem.with_suffix(".png"), piano_roll, config.r, config.dt)
        print(f"{stem}.mid, {stem}.png: {len(piano_roll)} frames, {int(piano_roll.sum())} sounding (frame, pitch) cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
