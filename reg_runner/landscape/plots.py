"""The landscape's figures: curves of several runs on one set of axes, surfaces side by side on one scale."""

import re
from pathlib import Path

from reg_runner import atomic
from reg_runner.figures import to_png


def labels(results: list[dict]) -> list[str]:
    """Each run's name in a legend: its folder's name, less a multirun's job number and the overrides every
    run shares (``0_+experiment=deep,model.depth=10`` and ``1_+experiment=deep,model.depth=20``: ``model.depth=10``
    and ``model.depth=20``)."""
    names = [Path(r["run"]).name for r in results]
    items = [re.sub(r"^\d+_", "", n).split(",") for n in names]
    shared = set.intersection(*(set(i) for i in items)) if len(items) > 1 else set()
    out = [",".join(x for x in i if x not in shared) for i in items]
    if len(set(out)) < len(out) or not all(out):  # not told apart by their overrides: their folders' paths
        out = ["/".join(Path(r["run"]).parts[-2:]) for r in results]
    return out


def _g(v) -> str:
    return "overflow" if v is None else f"{v:.3g}"


def draw(results: list[dict], folder: Path) -> dict[str, Path]:
    """``landscape_1d.png`` (the curve along d1 and the path from the init) and, for surfaces,
    ``landscape_2d.png`` (contours and 3D, one column per run); returns {TensorBoard tag: file}."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global figure to close, no GUI backend

    split = results[0]["split"]
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2)
    names = labels(results)
    for i, r in enumerate(results):
        color, name = f"C{i % 10}", names[i]
        # a loss that overflowed is null in the results: NaN (dtype=float) leaves a gap in the line
        axes[0, 0].plot(r["axis"], np.array(r["curve"]["loss"], dtype=float), color=color,
                        label=f"{name} (sharpness {_g(r['sharpness']['value'])})")
        axes[0, 1].plot(r["axis"], r["curve"]["acc"], color=color, label=name)
        axes[1, 0].plot(r["path"]["t"], np.array(r["path"]["loss"], dtype=float), color=color, label=name)
        axes[1, 1].plot(r["path"]["t"], r["path"]["acc"], color=color, label=name)
    axes[0, 0].set(yscale="log", xlabel="a  (theta + a d1, d1 filter-normalized)", ylabel=f"{split} loss",
                   title="loss along a random direction")
    axes[0, 1].set(xlabel="a", ylabel=f"{split} accuracy", title="accuracy along the same direction")
    axes[1, 0].set(yscale="log", xlabel="t  ((1 - t) theta_init + t theta)", ylabel=f"{split} loss",
                   title="linear path from the initial weights (t = 1: the checkpoint)")
    axes[1, 1].set(xlabel="t", ylabel=f"{split} accuracy", title="accuracy along the path")
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    for ax in axes[:, 0]:
        ax.axvline(0 if ax is axes[0, 0] else 1, color="0.5", lw=0.8, ls=":")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=min(len(results), 2), fontsize=8,
               bbox_to_anchor=(0.5, -0.02 * ((len(results) + 1) // 2)))
    fig.suptitle(f"{results[0]['checkpoint']}.pt, {results[0]['n_images']} {split} images, directions seed "
                 f"{results[0]['seed']}", fontsize=10)
    fig.tight_layout()
    images = {"landscape/1d": folder / "landscape_1d.png"}
    atomic.write_bytes(images["landscape/1d"], to_png(fig, 100, tight=True))
    if results[0]["surface"] is None:
        return images
    losses = [np.array(r["surface"]["loss"], dtype=float) for r in results]
    surfaces = [np.log10(np.where(z > 0, z, np.nan)) for z in losses]
    finite = np.concatenate([s[np.isfinite(s)] for s in surfaces])
    if not finite.size:  # every point overflowed: nothing to draw but the curves
        return images
    lo, hi = float(finite.min()), float(finite.max())
    hi = max(hi, lo + 1e-6)  # a flat surface (a tiny --span) still gets increasing contour levels
    levels = np.linspace(lo, hi, 25)
    n = len(results)
    fig = Figure(figsize=(4.6 * n, 8.6))
    for i, (r, z, name) in enumerate(zip(results, surfaces, names)):
        a = np.array(r["axis"])
        x, y = np.meshgrid(a, a)
        ax = fig.add_subplot(2, n, i + 1)
        cs = ax.contourf(x, y, np.clip(z, lo, hi), levels=levels, cmap="viridis")
        ax.contour(x, y, np.clip(z, lo, hi), levels=levels[::3], colors="k", linewidths=0.4)
        ax.plot(0, 0, "r+", ms=10)
        ax.set(xlabel="d1", ylabel="d2", aspect="equal")
        ax.set_title(f"{name}\nsharpness {_g(r['sharpness']['value'])}", fontsize=9)
        ax3 = fig.add_subplot(2, n, n + i + 1, projection="3d")
        ax3.plot_surface(x, y, np.clip(z, lo, hi), cmap="viridis", vmin=lo, vmax=hi, linewidth=0, antialiased=True)
        ax3.set(zlim=(lo, hi), xlabel="d1", ylabel="d2", zlabel=f"log10 {split} loss")
    fig.colorbar(cs, ax=fig.axes[0::2], shrink=0.6, label=f"log10 {split} loss (one scale for every run)")
    images["landscape/2d"] = folder / "landscape_2d.png"
    atomic.write_bytes(images["landscape/2d"], to_png(fig, 100, tight=True))
    return images


def to_tensorboard(folder: Path, images: dict[str, Path], step: int) -> None:
    """The figures as images in the run's TensorBoard (an event file of their own beside the run's)."""
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder), filename_suffix=".landscape")
    try:
        for tag, path in images.items():
            writer.add_image(tag, imread(path)[..., :3], step, dataformats="HWC")
    finally:
        writer.close()
