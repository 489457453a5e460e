"""An interactive explorer of one attack on one scan, for JupyterLab and Colab (ipywidgets), with a static figure
when no one is watching (nbval, papermill, ``python -m octlib run``).

Pick a scan (by class, then patient), an attack (FGSM, PGD, DeepFool), ε (a slider in /255) and a model (the
victim or a retrained defence) with how it answers (probabilities, label only, output noise): the explorer shows
the scan, the adversarial scan, the perturbation amplified, the class probabilities before and after, and the
Grad-CAM maps of both. It calls the notebooks' functions (:mod:`octlib.attacks`, :mod:`octlib.saliency`,
:mod:`octlib.defences`): attacks are crafted on the float32 logits model, never through the answer post-processor.
What it computed is cached per (scan, attack, ε, model); a one-step attack (FGSM) answers in well under a second
at 128 px on a CPU once the model is traced, PGD and DeepFool take longer (their iterations; the status line
gives the time of each).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from .labels import CLASSES
from .plotting import PAGE_HEIGHT, TWO_COLUMNS
from .threat import eps_label, to_255, to_unit

#: the height (inches) of one view's row of six panels, two A4 columns wide
VIEW_HEIGHT = 1.75

VIEW_ATTACKS = ("FGSM", "PGD", "DeepFool")  # the explorer's attacks (the suite's are octlib.registry's)
#: Set (e.g. by ``python -m octlib run`` and the tests) when notebooks run without anyone watching.
HEADLESS_ENV = "OCTLIB_HEADLESS"


def headless() -> bool:
    """True when notebooks run unattended (``OCTLIB_HEADLESS`` is set to anything but 0/false/empty)."""
    return os.environ.get(HEADLESS_ENV, "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class View:
    """One explored selection: the scans, answers and maps it shows, and how long it took."""

    index: int
    attack: str
    eps_255: float | None
    model: str
    answers: str
    x: np.ndarray
    x_adv: np.ndarray
    probs_clean: np.ndarray
    probs_adv: np.ndarray
    cam_clean: np.ndarray
    cam_adv: np.ndarray
    seconds: float
    cached: bool
    label: int
    notes: list = field(default_factory=list)


class Explorer:
    """Attack one evaluation scan at a time, with a cache.

    Args:
        scans: :class:`octlib.evaluation.Scans` (pixels, labels, IDs, patients).
        models: name -> Keras logits model (the victim first).
        answers: name -> list of ART post-processors that shape what the model answers (default: probabilities,
            label only); the attack never sees them.
        pgd_steps, deepfool_max_iter: iterations of the two iterative attacks.
    """

    def __init__(self, scans, models: dict, *, answers: dict | None = None, pgd_steps: int = 10,
                 deepfool_max_iter: int = 50, seed: int = 0):
        from .estimators import LabelOnly

        if not models:
            raise ValueError("`models` must hold at least one model (name -> Keras logits model).")
        self.scans, self.models = scans, dict(models)
        self.answers = answers if answers is not None else {"probabilities": [], "label only": [LabelOnly()]}
        self.pgd_steps, self.deepfool_max_iter, self.seed = int(pgd_steps), int(deepfool_max_iter), int(seed)
        self._classifiers: dict = {}
        self._cache: dict = {}

    def scans_of_class(self, cls: str | int) -> list[tuple[str, int]]:
        """``(label, index)`` options for the scans of one class: patient and scan ID."""
        k = CLASSES.index(cls) if isinstance(cls, str) else int(cls)
        return [(f"patient {self.scans.patients[i]} · {os.path.basename(str(self.scans.ids[i]))}", int(i))
                for i in np.flatnonzero(self.scans.y == k)]

    def _classifier(self, model: str):
        from .estimators import art_classifier

        if model not in self._classifiers:
            self._classifiers[model] = art_classifier(self.models[model])
        return self._classifiers[model]

    def view(self, index: int, attack: str = "FGSM", eps_255: float = 2.0, model: str | None = None,
             answers: str = "probabilities") -> View:
        """Attack scan ``index`` (or reuse the cached result) and return what the explorer shows."""
        from . import attacks
        from .metrics import softmax
        from .saliency import grad_cam

        model = model or next(iter(self.models))
        for name, value, allowed in (("attack", attack, VIEW_ATTACKS), ("model", model, tuple(self.models)),
                                     ("answers", answers, tuple(self.answers))):
            if value not in allowed:
                raise ValueError(f"Unknown {name} {value!r}; choose one of {list(allowed)}.")
        if not 0 <= int(index) < len(self.scans):
            raise ValueError(f"`index` must be in 0..{len(self.scans) - 1}, got {index}.")
        eps = None if attack == "DeepFool" else float(eps_255)
        if eps is not None and not 0 < eps <= 255:
            raise ValueError(f"`eps_255` must be in (0, 255] (/255 units), got {eps_255}.")
        key = (int(index), attack, eps, model)
        t0 = time.perf_counter()
        cached = key in self._cache
        if not cached:
            clf = self._classifier(model)
            x, y = self.scans.x[index:index + 1], self.scans.y[index:index + 1]
            if attack == "FGSM":
                run = attacks.fgsm(clf, x, y, to_unit(eps), progress=False)
            elif attack == "PGD":
                run = attacks.pgd(clf, x, y, to_unit(eps), steps=self.pgd_steps, restarts=1, seed=self.seed,
                                  progress=False)
            else:
                run = attacks.deepfool(clf, x, y, max_iter=self.deepfool_max_iter, progress=False)
            cams = grad_cam(self.models[model], np.concatenate([x, run.x_adv]))
            self._cache[key] = (run.x_adv[0], run.logits_clean[0], run.logits_adv[0], cams[0], cams[1])
        x_adv, logits_clean, logits_adv, cam_clean, cam_adv = self._cache[key]
        probs = softmax(np.stack([logits_clean, logits_adv]).astype(np.float64))
        for post in self.answers[answers]:
            probs = post(probs)
        notes = []
        if attack == "DeepFool":
            notes.append(f"DeepFool (L2, minimal): L∞ {to_255(np.abs(x_adv - self.scans.x[index]).max()):.2f}/255")
        return View(int(index), attack, eps, model, answers, self.scans.x[index], x_adv, np.asarray(probs[0]),
                    np.asarray(probs[1]), cam_clean, cam_adv, time.perf_counter() - t0, cached,
                    int(self.scans.y[index]), notes)

    @staticmethod
    def figure(view: View, fig=None):
        """The explorer's figure of one :class:`View`: scan, adversarial scan, perturbation, answers, saliency."""
        import matplotlib.pyplot as plt

        fig = fig or plt.figure(figsize=(TWO_COLUMNS, VIEW_HEIGHT), layout="constrained")
        fig.clear()
        axes = fig.subplots(1, 6, gridspec_kw={"width_ratios": [1, 1, 1, 1.3, 1, 1]})
        x, xa = view.x[..., 0], view.x_adv[..., 0]
        delta = xa - x
        eps_text = "minimal L2" if view.eps_255 is None else eps_label(to_unit(view.eps_255))
        axes[0].imshow(x, cmap="gray", vmin=0, vmax=1)
        axes[0].set_title(f"scan\n(true {CLASSES[view.label]})", fontsize=7)
        axes[1].imshow(xa, cmap="gray", vmin=0, vmax=1)
        axes[1].set_title(f"{view.attack}\n{eps_text}", fontsize=7)
        peak = max(np.abs(delta).max(), 1e-12)
        axes[2].imshow(np.clip(0.5 + 0.5 * delta / peak, 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[2].set_title(f"perturbation\n×{0.5 / peak:.0f}", fontsize=7)
        pos = np.arange(len(CLASSES))
        axes[3].barh(pos - 0.2, view.probs_clean, height=0.4, label="clean", color="#0072b2")
        axes[3].barh(pos + 0.2, view.probs_adv, height=0.4, label="adversarial", color="#d55e00")
        axes[3].set(yticks=pos, yticklabels=CLASSES, xlim=(0, 1))
        axes[3].set_xlabel(f"{view.model}: {view.answers}", fontsize=7)
        axes[3].tick_params(labelsize=7)
        axes[3].invert_yaxis()
        axes[3].legend(fontsize=7, ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False,
                       handlelength=1, columnspacing=0.8)  # above the bars, never over them
        for ax, cam, img, title in ((axes[4], view.cam_clean, x, "Grad-CAM\nclean"),
                                    (axes[5], view.cam_adv, xa, "Grad-CAM\nadversarial")):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.imshow(cam, cmap="magma", vmin=0, vmax=1, alpha=0.55)
            ax.set_title(title, fontsize=7)
        for ax in axes[[0, 1, 2, 4, 5]]:
            ax.set_xticks([])
            ax.set_yticks([])
        return fig

    def widget(self, *, index: int | None = None, attack: str = "FGSM", eps_255: float = 2.0):
        """The ipywidgets explorer: class, scan (patient), attack, ε slider, model and answers; one figure."""
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        index = int(index if index is not None else 0)
        cls = w.Dropdown(options=list(CLASSES), value=CLASSES[int(self.scans.y[index])], description="class")
        scan = w.Dropdown(options=self.scans_of_class(cls.value), value=index, description="scan",
                          layout=w.Layout(width="420px"))
        att = w.Dropdown(options=list(VIEW_ATTACKS), value=attack, description="attack")
        eps = w.FloatSlider(value=eps_255, min=0.25, max=16, step=0.25, description="ε (/255)",
                            continuous_update=False, readout_format=".2f")
        model = w.Dropdown(options=list(self.models), description="model", layout=w.Layout(width="420px"))
        answers = w.Dropdown(options=list(self.answers), description="answers")
        status = w.HTML()
        out = w.Output()

        def redraw(*_):
            eps.disabled = att.value == "DeepFool"
            status.value = "<i>computing…</i>"
            v = self.view(scan.value, att.value, eps.value, model.value, answers.value)
            with out:
                out.clear_output(wait=True)
                fig = self.figure(v, fig=plt.figure(figsize=(TWO_COLUMNS, VIEW_HEIGHT), dpi=150, layout="constrained"))
                display(fig)
                plt.close(fig)
            status.value = (f"{'cached' if v.cached else 'computed'} in {v.seconds:.2f} s · clean answer "
                            f"{CLASSES[int(np.argmax(v.probs_clean))]}, adversarial "
                            f"{CLASSES[int(np.argmax(v.probs_adv))]}" + "".join(f" · {n}" for n in v.notes))

        def new_class(change):
            scan.options = self.scans_of_class(change["new"])

        cls.observe(new_class, names="value")
        for control in (scan, att, eps, model, answers):
            control.observe(redraw, names="value")
        redraw()
        return w.VBox([w.HBox([cls, scan]), w.HBox([att, eps]), w.HBox([model, answers]), status, out])

    def show(self, selections=None, *, interactive: bool | None = None):
        """The widget when someone is watching, else (``interactive=False`` or :func:`headless`) a static figure
        of ``selections`` (dicts of :meth:`view` arguments; default: FGSM and PGD at 2/255 and DeepFool on the
        first scan). Returns the widget or ``(figure, views)``."""
        import matplotlib.pyplot as plt

        if interactive is None:
            interactive = not headless()
        if interactive:
            return self.widget()
        selections = selections or [{"index": 0, "attack": a} for a in VIEW_ATTACKS]
        views = [self.view(**s) for s in selections]
        fig = plt.figure(figsize=(TWO_COLUMNS, min(VIEW_HEIGHT * len(views), PAGE_HEIGHT)), layout="constrained")  # A4
        for v, sub in zip(views, fig.subfigures(len(views), 1, squeeze=False)[:, 0]):
            self.figure(v, fig=sub)
        return fig, views
