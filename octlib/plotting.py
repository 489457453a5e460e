"""One figure style and one ``save_fig`` for the whole series, plus the plots more than one notebook needs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .config import figures_dir
from .labels import CLASSES
from .threat import to_255

DPI = 300
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: One colour per class, used by every notebook: Okabe and Ito's colour-blind-safe set (vermillion, orange,
#: reddish purple, bluish green), designed for colour-blind readers (a test checks deuteranopia and protanopia).
CLASS_COLORS = dict(zip(CLASSES, ("#D55E00", "#E69F00", "#CC79A7", "#009E73")))
#: Figure widths in inches that fit an A4 page: one column (89 mm) and two columns (183 mm), the widths most
#: journals print at; :func:`save_fig` refuses a figure wider than ``TWO_COLUMNS`` or taller than ``PAGE_HEIGHT``.
ONE_COLUMN = 3.5
TWO_COLUMNS = 7.2
#: The text height of an A4 page with 25 mm margins (247 mm), in inches.
PAGE_HEIGHT = 9.7
_TOLERANCE = 0.05  # inches: rounding of the tight bounding box


def figsize(columns: int = 2, height: float | None = None, *, aspect: float = 0.42) -> tuple[float, float]:
    """``(width, height)`` in inches of a figure one or two A4 columns wide (``columns`` 1 or 2); ``height`` in
    inches, else ``aspect`` times the width."""
    if columns not in (1, 2):
        raise ValueError(f"`columns` must be 1 or 2 (one or two A4 columns), got {columns!r}.")
    width = ONE_COLUMN if columns == 1 else TWO_COLUMNS
    height = width * aspect if height is None else float(height)
    if not 0 < height <= PAGE_HEIGHT:
        raise ValueError(f"`height` must be in (0, {PAGE_HEIGHT}] inches (an A4 page's text height), got {height}.")
    return width, height


def set_style() -> None:
    """Apply the project's matplotlib/seaborn style (call once per notebook; ``save_fig`` also applies it)."""
    import matplotlib as mpl
    import seaborn as sns

    # "paper": 8-10 pt text, what a figure printed 89 or 183 mm wide needs; seaborn's colour-blind palette for C0-C9
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    mpl.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": DPI, "savefig.bbox": "tight", "figure.constrained_layout.use": True,
        "axes.titleweight": "bold", "image.cmap": "gray", "pdf.fonttype": 42, "svg.fonttype": "none",
    })


def page_size(fig) -> tuple[float, float]:
    """Width and height in inches of ``fig`` as :func:`save_fig` writes it (its tight bounding box)."""
    bbox = fig.get_tightbbox(fig.canvas.get_renderer())
    return float(bbox.width), float(bbox.height)


def save_fig(fig, name: str, *, folder: Path | str | None = None, formats=("png", "pdf"),
             check_page: bool = True) -> list[Path]:
    """Write ``fig`` as ``<figures>/<name>.png`` (300 dpi) and ``.pdf`` and return the paths.

    ``name`` starts with the notebook number (``00_class_counts``) so a report figure traces back to its source.
    The folder is :func:`octlib.config.figures_dir` (``OCTLIB_FIGURES``, else ``runs/interactive/figures``).
    A figure that would not fit an A4 page at its own size (wider than ``TWO_COLUMNS``, taller than
    ``PAGE_HEIGHT``) is refused unless ``check_page=False``: a report would shrink it and its text with it.
    """
    if not isinstance(name, str) or not _NAME.match(name) or Path(name).suffix in (".png", ".pdf"):
        raise ValueError(f"Figure name {name!r} must be letters, digits, '_', '-' or '.', without an extension, "
                         "e.g. '00_class_counts'.")
    if check_page:
        width, height = page_size(fig)
        if width > TWO_COLUMNS + _TOLERANCE or height > PAGE_HEIGHT + _TOLERANCE:
            raise ValueError(f"Figure {name!r} is {width:.2f} x {height:.2f} in; an A4 page holds at most "
                             f"{TWO_COLUMNS} in wide (two columns, 183 mm) and {PAGE_HEIGHT} in high. Make it with "
                             "`figsize=octlib.plotting.figsize(1 or 2, height)`, or pass `check_page=False`.")
    out_dir = Path(folder) if folder is not None else figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, dpi=DPI, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    return paths


def image_grid(images, titles=None, *, ncols: int = 6, size: float | None = None, row_labels=None, suptitle=None,
               vmin: float | None = 0.0, vmax: float | None = 1.0, cmap: str = "gray"):
    """Show images (``(N, H, W)`` or ``(N, H, W, 1)``, values in [0, 1]) in a grid; returns the figure. ``size``:
    inches per image (default: the grid spans two A4 columns, :data:`TWO_COLUMNS`)."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    size = min(size or TWO_COLUMNS / ncols, TWO_COLUMNS / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(images[i], cmap=cmap, vmin=vmin, vmax=vmax)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8, fontweight="normal")
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label, fontsize=10, fontweight="bold")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def intensity_histograms(images, labels, *, bins: int = 64, ax=None):
    """Per-class histograms of pixel intensity (density, log scale) of ``images`` in [0, 1]."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize(2, 3))
    images, labels = np.asarray(images), np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    for k, cls in enumerate(CLASSES):
        sel = images[labels == k]
        if len(sel) == 0:
            continue
        hist, _ = np.histogram(sel.ravel(), bins=edges, density=True)
        ax.step(edges[:-1], hist, where="post", label=f"{cls} (n={len(sel)})", color=CLASS_COLORS[cls])
    ax.set(yscale="log", xlabel="pixel intensity [0, 1]", ylabel="density")
    ax.legend()
    return ax.figure


def plot_confusion(confusion, *, ax=None, title: str = "", normalize: bool = True):
    """Heatmap of a confusion matrix (rows: true class, columns: predicted), row-normalised by default."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    cm = np.asarray(confusion, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize(1, 3.1))
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    annot = np.array([[f"{shown[i, j]:.2f}\n({int(cm[i, j])})" if normalize else f"{int(cm[i, j])}"
                       for j in range(cm.shape[1])] for i in range(cm.shape[0])])
    sns.heatmap(shown, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1 if normalize else None, cbar=False,
                xticklabels=CLASSES, yticklabels=CLASSES, ax=ax, annot_kws={"fontsize": 8})
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return ax.figure


def plot_roc(y_true, probs, *, ax=None, title: str = ""):
    """One-vs-rest ROC curve per class, with AUC in the legend."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    if ax is None:
        _, ax = plt.subplots(figsize=figsize(1, 3.4))
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    for k, cls in enumerate(CLASSES):
        truth = y_true == k
        if 0 < truth.sum() < len(truth):
            fpr, tpr, _ = roc_curve(truth, probs[:, k])
            ax.plot(fpr, tpr, color=CLASS_COLORS[cls], label=f"{cls} (AUC {roc_auc_score(truth, probs[:, k]):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, aspect="equal")
    ax.legend(loc="lower right", fontsize=8)
    return ax.figure


def plot_history(history: dict, *, axes=None, label: str = "", n_val: int | None = None):
    """Training and validation loss and accuracy per epoch from a Keras history dict; with ``n_val`` (the number
    of validation scans) the validation accuracy gets its 95% Wilson band. (The training curves are means over
    augmented batches while the weights change: no interval is drawn for them.)"""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=figsize(2, 2.8))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        line, = ax.plot(epochs, history[key], ls="--", label=f"{label} train".strip())
        if key == "accuracy" and n_val:
            plot_rate_curve(ax, epochs, history["val_accuracy"], n_val, color=line.get_color(), marker=None,
                            label=f"{label} val (95% CI, n = {n_val})".strip())
        else:
            ax.plot(epochs, history[f"val_{key}"], color=line.get_color(), label=f"{label} val".strip())
        ax.set(xlabel="epoch", ylabel=key)
        ax.legend(fontsize=7)
    return axes[0].figure


def loss_interval(row: dict, *, key: str = "loss", seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean of an evaluation record's per-scan ``key`` (``loss``: the attacked cross-entropy;
    ``clean_loss_per_scan``), a percentile bootstrap that resamples whole patients
    (:func:`octlib.stats.cluster_bootstrap`)."""
    from .stats import cluster_bootstrap

    values, patients = row.get(key), row.get("patients")
    if values is None or patients is None or len(values) != len(patients):
        raise ValueError(f"The record has no per-scan {key!r} with its 'patients' (of one length): pass rows of "
                         "octlib.records.read_records or Evaluation.records().")
    boot = cluster_bootstrap(values, patients, seed=seed)
    return boot["ci_low"], boot["ci_high"]


def plot_records_vs_eps(ax, rows, key: str = "robust_accuracy", *, label: str = "", color=None, marker="o",
                        **plot_kwargs):
    """Plot evaluation records (:mod:`octlib.records`, one model and attack, L∞) against ε (/255, log axis):
    ``robust_accuracy`` with its 95% Wilson band, ``attacked_loss`` with the 95% patient-bootstrap band of its
    mean (:func:`loss_interval`), or any other scalar key without a band."""
    rows = sorted(rows, key=lambda r: r["eps"])
    eps_255 = np.array([r["eps_255"] for r in rows], dtype=float)
    line, = ax.plot(eps_255, [r[key] for r in rows], marker=marker, label=label, color=color, **plot_kwargs)
    if key == "robust_accuracy":
        ax.fill_between(eps_255, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], color=line.get_color(),
                        alpha=0.15, lw=0)
    elif key == "attacked_loss":
        low, high = np.array([loss_interval(r) for r in rows]).T
        ax.fill_between(eps_255, low, high, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ε (/255; ε in [0, 1] = value / 255)")
    return ax


def suite_curves(rows, *, by: str = "model", title: str = "Attack suite", styles: dict | None = None,
                 n_in_label: bool = True, clean: tuple | None = None, vline: tuple | None = None,
                 legend_size: int = 7):
    """The two-panel figure of the attack suite against ε: robust accuracy with its 95% Wilson band (left) and the
    model's highest cross-entropy with its patient-bootstrap band (right, log scale), one curve per model
    (``by="model"``, the suite's rows of several models) or per attack of one model (``by="attack"``: FGSM's and
    PGD's own curves beside the suite's). ``rows``: evaluation records (dicts or a DataFrame); ``styles``: curve
    name -> line style (default solid); ``clean``: ``(accuracy, loss)`` drawn as dashed lines; ``vline``: ``(ε in
    /255, label)``, e.g. the training ε of adversarial training. Returns ``(fig, axes)``."""
    import matplotlib.pyplot as plt

    from .labels import CLASSES

    if by not in ("model", "attack"):
        raise ValueError(f"`by` must be 'model' or 'attack', got {by!r}.")
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    if by == "model":
        rows = [r for r in rows if r["attack"] == "suite"]
    groups: dict = {}
    for r in rows:
        groups.setdefault(r[by], []).append(r)
    if not groups:
        raise ValueError("No evaluation records to draw: pass the rows of at least one model.")
    fig, axes = plt.subplots(1, 2, figsize=figsize(2, 3))
    for k, (name, part) in enumerate(groups.items()):
        style = {"ls": (styles or {}).get(name, "-"), "color": f"C{k}"}
        label = f"{name} (n = {part[0]['n']})" if n_in_label else str(name)
        plot_records_vs_eps(axes[0], part, label=label, **style)
        plot_records_vs_eps(axes[1], part, "attacked_loss", label=str(name), **style)
    if clean is not None:
        axes[0].axhline(clean[0], color="k", ls="--", lw=1, label="clean")
        axes[1].axhline(clean[1], color="k", ls="--", lw=1, label="clean")
    axes[0].axhline(1 / len(CLASSES), color="grey", ls=":", lw=1, label="chance")
    if vline is not None:
        axes[0].axvline(vline[0], color="k", ls="--", lw=1, label=vline[1])
    axes[0].set(ylabel="robust accuracy (95% CI)", ylim=(0, 1), title=f"{title}: robust accuracy")
    axes[1].set(ylabel="model's cross-entropy (highest found)", yscale="log", title=f"{title}: loss")
    for ax in axes:
        ax.legend(fontsize=legend_size)
    return fig, axes


def sweep_curve(sweep: dict, n_scans: int, *, title: str = "Is the robust accuracy converged?"):
    """The convergence sweep (:func:`octlib.evaluation.attack_sweep`): robust accuracy over all ``n_scans``
    evaluation scans (95% Wilson band) after each growing ``steps x restarts`` setting, the suite's own number at
    the left. A sweep run on a sample of the standing scans (``sweep["sampled"]``, ``SuiteConfig.sweep_max_scans``)
    is drawn as the share of that sample still standing, which is what it measures. Returns ``(fig, ax)``."""
    import matplotlib.pyplot as plt

    points = sweep["points"]
    labels = ["suite"] + [f"{p['steps']}x{p['restarts']}" for p in points]
    if sweep.get("sampled"):
        n = sweep["n"]
        values = [1.0] + [p["robust"] / n for p in points]
        label = (f"{', '.join(sweep['attacks'])} (a sample of {n} of the {sweep['n_standing']} scans standing "
                 f"after the suite)")
        ylabel = "share of the sample still standing (95% CI)"
    else:
        n = n_scans
        lost = n_scans - sweep["n"]  # the scans the suite had fooled before the sweep
        values = [sweep["n"] / n_scans] + [p["robust"] / n_scans for p in points]
        label, ylabel = f"{', '.join(sweep['attacks'])} (n = {n_scans}; {lost} fooled before)", "robust accuracy (95% CI)"
    fig, ax = plt.subplots(figsize=figsize(1, 2.6))
    plot_rate_curve(ax, list(range(len(values))), values, n, label=label)
    ax.axvline(sweep["converged_index"] + 1, color="k", ls="--", lw=1,
               label="converged here" if sweep["reached"] else "not converged within these settings")
    ax.set_xticks(range(len(values)), labels)
    ax.set(xlabel="attack setting (steps x restarts)", ylabel=ylabel, title=title, ylim=(0, max(values) * 1.3 + 0.02))
    ax.legend(fontsize=7)
    return fig, ax


def plot_rate_curve(ax, x, values, n, *, label: str = "", color=None, marker="o", **plot_kwargs):
    """A proportion over ``n`` scans against ``x`` (e.g. certified accuracy vs L2 radius), with its 95% Wilson band;
    ``n`` one count for every point or one per point (e.g. the scans in each calibration bin)."""
    from .metrics import wilson_interval

    values = np.asarray(values, dtype=float)
    counts = np.broadcast_to(np.asarray(n, dtype=int), values.shape)
    if np.any(counts < 1):
        raise ValueError(f"`n` must be positive scan counts, got {n!r}.")
    line, = ax.plot(x, values, marker=marker, label=label, color=color, **plot_kwargs)
    low, high = np.array([wilson_interval(int(round(v * k)), int(k)) for v, k in zip(values, counts)]).T
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.12, lw=0)
    return ax


def referral_certificate_curves(frame, *, title: str = "Certified referral"):
    """Notebook 54's records (:func:`octlib.clinical.certified_referral`) against the L2 radius, one panel per
    model: urgent scans certified urgent, the same scans certified at their own class (4-class), routine scans
    certified routine (each with its 95% Wilson band) and, where attacked, the urgent scans still referred under
    the targeted L2 attack (markers). Returns ``(fig, axes)``."""
    import matplotlib.pyplot as plt

    from .compare import REFERRAL_CERTIFICATE

    styles = {"referral": ("certified urgent (urgent scans)", "C0", "o", "-"),
              "four_class": ("certified own class, 4-class (urgent scans)", "C1", "s", "--"),
              "routine": ("certified routine (routine scans)", "C2", "^", ":"),
              "empirical": ("still referred under targeted L2 PGD + EOT", "C3", "x", "none")}
    rows = frame[(frame["norm"] == "2") & frame["attack"].isin(list(REFERRAL_CERTIFICATE.values()))]
    models = list(dict.fromkeys(rows["model"]))
    if not models:
        raise ValueError("No certified-referral records (notebook 54) in the rows given.")
    fig, axes = plt.subplots(1, len(models), figsize=figsize(2, 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = rows[rows["model"] == model]
        for key, (label, color, marker, ls) in styles.items():
            r = part[part["attack"] == REFERRAL_CERTIFICATE[key]].sort_values("eps")
            if not len(r):
                continue
            plot_rate_curve(ax, r["eps"].astype(float), r["robust_accuracy"], r["n"].astype(int).to_numpy(),
                            label=f"{label}, n = {int(r['n'].iloc[0])}", color=color, marker=marker, ls=ls)
        ax.set(xlabel="L2 radius (pixels in [0, 1])", ylabel="share of scans", ylim=(0, 1.02), title=model)
        ax.legend(fontsize=6)
    fig.suptitle(title)
    return fig, axes


def detector_curves(rocs: dict, table, *, title: str = "Detectors and the attacker who knows them"):
    """Notebook 22: left, each detector's ROC curve against the suite's adversarial scans (solid) and against the
    adaptive attacker's (dashed), chance dotted; right, per detector the scans robust without a detector and
    defended under each attacker (:func:`octlib.compare.detector_table`), with 95% Wilson intervals.
    ``rocs``: detector -> ``{"non-adaptive": {"fpr", "tpr"}, "adaptive": ...}`` (:func:`octlib.detectors.roc_points`).
    Returns ``(fig, axes)``."""
    import matplotlib.pyplot as plt

    from .metrics import wilson_interval

    fig, (roc_ax, bar_ax) = plt.subplots(1, 2, figsize=figsize(2, 3.4))
    for k, (name, curves) in enumerate(rocs.items()):
        for attacker, ls in (("non-adaptive", "-"), ("adaptive", "--")):
            if curves.get(attacker):
                roc_ax.plot(curves[attacker]["fpr"], curves[attacker]["tpr"], ls=ls, color=f"C{k}",
                            label=f"{name}, {attacker}")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="chance")
    roc_ax.set(xlabel="false alarms (clean scans flagged)", ylabel="adversarial scans flagged", title="ROC")
    roc_ax.legend(fontsize=6)
    columns = ("robust, no detector", "defended (non-adaptive)", "defended (adaptive)")
    width = 0.8 / len(columns)
    for j, col in enumerate(columns):
        values = table[col].astype(float).to_numpy()
        n = table["n"].astype(int).to_numpy()
        low, high = np.array([wilson_interval(int(round(v * m)), int(m)) for v, m in zip(values, n)]).T
        pos = np.arange(len(table)) + (j - 1) * width
        bar_ax.bar(pos, values, width, color=f"C{j + 3}", label=col)
        bar_ax.errorbar(pos, values, yerr=[values - low, high - values], fmt="none", color="black", lw=0.8)
    bar_ax.set_xticks(np.arange(len(table)), table["detector"], fontsize=7)
    bar_ax.set(ylim=(0, 1), ylabel="share of evaluation scans", title="defended scans")
    bar_ax.legend(fontsize=6)
    fig.suptitle(title)
    return fig, (roc_ax, bar_ax)


def adversarial_examples(x, x_adv, y, logits_clean, logits_adv, *, titles_prefix: str = "", amplify=None):
    """Rows of [clean, perturbation (amplified to the full grey range), adversarial] with labels and confidence."""
    import matplotlib.pyplot as plt

    from .metrics import softmax

    pc, pa = softmax(np.asarray(logits_clean)), softmax(np.asarray(logits_adv))
    n = len(x)
    fig, axes = plt.subplots(n, 3, figsize=figsize(2, min(2.3 * n, PAGE_HEIGHT)), squeeze=False)
    for i in range(n):
        delta = (x_adv[i] - x[i])[..., 0]
        scale = amplify or (0.5 / max(np.abs(delta).max(), 1e-8))
        panels = [
            (x[i][..., 0], f"clean: {CLASSES[pc[i].argmax()]} ({pc[i].max():.2f})\ntrue {CLASSES[y[i]]}", 0, 1),
            (0.5 + scale * delta, f"perturbation x{scale:.0f}\nL∞ {to_255(np.abs(delta).max()):.2f}/255", 0, 1),
            (x_adv[i][..., 0], f"{titles_prefix}: {CLASSES[pa[i].argmax()]} ({pa[i].max():.2f})", 0, 1),
        ]
        for ax, (img, title, vmin, vmax) in zip(axes[i], panels):
            ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_title(title, fontsize=8, fontweight="normal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    return fig


def plot_budget_curves(ax, table, metric: str = "fidelity", *, by=("pool", "answers"), reference=None,
                       reference_label: str = "victim", styles=None, x: str = "queries"):
    """Mean ± sd (over seeds) of an extraction ``metric`` against the queries used (log axis), one line per
    combination of the ``by`` columns of :func:`octlib.extraction.summarise`'s table; an optional horizontal
    ``reference`` line (e.g. the victim's accuracy). ``x="scans"`` plots against the distinct scans instead (the
    no-query thief's own labelled scans; an averaging thief's distinct scans)."""
    for i, (key, part) in enumerate(table.groupby(list(by), sort=True)):
        key = key if isinstance(key, tuple) else (key,)
        part = part.sort_values(f"{x}_mean")
        xs, m = part[f"{x}_mean"].to_numpy(float), part[f"{metric}_mean"].to_numpy(float)
        sd = np.nan_to_num(part[f"{metric}_sd"].to_numpy(float))
        style = (styles or {}).get(key, {})
        line, = ax.plot(xs, m, marker="o", label=" · ".join(map(str, key)), **style)
        ax.fill_between(xs, m - sd, m + sd, color=line.get_color(), alpha=0.15, lw=0)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=reference_label)
    ax.set_xscale("log")
    ticks = sorted(set(getattr(ax, "_octlib_budget_ticks", set())) | {float(v) for v in table[f"{x}_mean"]
                                                                      if np.isfinite(v) and v > 0})
    ax._octlib_budget_ticks = ticks  # a second call on the same axes keeps the first one's budgets
    if ticks:  # label the budgets themselves, not powers of ten
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set(xlabel="queries to the victim", ylabel=metric.replace("_", " "))
    return ax


def plot_extraction_baselines(ax, baselines: dict, metric: str = "fidelity"):
    """Horizontal lines for what a copy gets without learning (:func:`octlib.metrics.extraction_baselines`):
    chance for accuracy and fidelity, the victim's commonest answer for fidelity, always-urgent (and never-urgent)
    for urgent-call agreement."""
    lines = {"accuracy": [("chance", baselines["chance"])],
             "fidelity": [("chance", baselines["chance"]),
                          (f"always {baselines['majority_class']}", baselines["majority"])],
             "urgent_agreement": [("always urgent", baselines["always_urgent"]),
                                  ("never urgent", baselines["always_non_urgent"])]}.get(metric, [])
    for (label, value), ls in zip(lines, (":", "-.")):
        ax.axhline(value, color="grey", ls=ls, lw=1, label=f"{label} ({value:.2f})")
    return ax


def saliency_examples(x, masks, cams: dict, deltas: dict, row_titles=None, *, amplify: float | None = None,
                      answers: dict | None = None):
    """One row per scan: the scan with its retina mask's outline, then for each entry of ``cams`` (e.g. clean,
    PGD, DeepFool; ``(N, S, S)`` maps in [0, 1]) the map over the scan, then each perturbation of ``deltas``
    (``(N, S, S)``), amplified to the grey range (``amplify``: the factor; ``None``: each to its own max).
    ``answers``: per entry of ``cams``, the model's answer on each row's scan, written under its map."""
    import matplotlib.pyplot as plt

    x = np.asarray(x).reshape(np.shape(masks))
    n, cols = len(x), 1 + len(cams) + len(deltas)
    side = min(1.5, TWO_COLUMNS / cols, PAGE_HEIGHT / n)  # inches per panel: at most two A4 columns wide
    fig, axes = plt.subplots(n, cols, figsize=(side * cols, side * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(x[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].contour(masks[i], levels=[0.5], colors="#56b4e9", linewidths=0.8)
        for j, (name, cam) in enumerate(cams.items(), start=1):
            axes[i, j].imshow(x[i], cmap="gray", vmin=0, vmax=1)
            axes[i, j].imshow(cam[i], cmap="magma", vmin=0, vmax=1, alpha=0.55)
            if i == 0:
                axes[i, j].set_title(f"Grad-CAM\n{name}", fontsize=7)
            if answers is not None and name in answers:
                axes[i, j].set_xlabel(f"→ {answers[name][i]}", fontsize=6, labelpad=1)
        for j, (name, delta) in enumerate(deltas.items(), start=1 + len(cams)):
            d = np.asarray(delta[i], dtype=np.float64)
            scale = amplify if amplify else 0.5 / max(np.abs(d).max(), 1e-12)
            axes[i, j].imshow(np.clip(0.5 + scale * d, 0, 1), cmap="gray", vmin=0, vmax=1)
            axes[i, j].contour(masks[i], levels=[0.5], colors="#56b4e9", linewidths=0.6)
            if i == 0:
                axes[i, j].set_title(f"{name}\nperturbation", fontsize=7)
        axes[i, 0].set_ylabel(row_titles[i] if row_titles is not None else "", fontsize=7)
        if i == 0:
            axes[i, 0].set_title("scan\nretina mask", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_interval_points(ax, rows, *, label_key: str = "label", group_key: str = "group"):
    """Means with their 95 % intervals as points and error bars, one colour per group: ``rows`` are dicts with
    ``label`` (x-axis category), ``group``, ``value``, ``ci_low``, ``ci_high`` and ``n``."""
    import seaborn as sns

    labels = list(dict.fromkeys(r[label_key] for r in rows))
    groups = list(dict.fromkeys(r[group_key] for r in rows))
    colors = dict(zip(groups, sns.color_palette("colorblind", len(groups))))
    width = 0.7 / max(len(groups), 1)
    for gi, g in enumerate(groups):
        for r in (r for r in rows if r[group_key] == g):
            pos = labels.index(r[label_key]) - 0.35 + width * (gi + 0.5)
            ax.errorbar(pos, r["value"], yerr=[[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]],
                        fmt="o", color=colors[g], capsize=3, label=g if r is next(
                            q for q in rows if q[group_key] == g) else None)
    ax.set_xticks(range(len(labels)), labels)
    ax.legend(fontsize=8)
    return ax
