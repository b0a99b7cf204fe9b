"""The calibrated selection rule: a fitted map from the labels' features to a model's F1 on a class.

`mll-index calibrate` (selection/calibrate.py) fits it on pseudo-tasks drawn from the index's own
sample set; `select --rule calibrated` ranks each class's models by its prediction. The map is a
quadratic form over the standardised features of `rule_features` (every feature, their squares and
pairwise products), fitted by ridge regression:

    x = (features - mean) / scale
    predicted F1 = clip(intercept + x . linear + x^T Q x, 0, 1)      Q upper triangular

Beside it the rule holds what selection reads from the labels but cannot afford per task (each
model's strength over the whole sample set, and per domain), the margin that decides how many of
a class's models join its vote, and the task-level accuracy rule (`accuracy.Rule`, logit link) that
gives `predicted_accuracy`. It is bound to the labels it was fitted on by `label_digest` (the
models' ids and label checksums): a model added or labeled again makes it stale, and selection
refuses it rather than apply it to models it never saw.

On disk, written atomically:

    <index>/selection_rule/
        manifest.json   kind "selection-rule", format_version 1, label_digest, the training report
                        (pseudo-tasks, held-out error, what each rule scores there), rule.json's checksum
        rule.json       the numbers: features, mean, scale, intercept, linear, quadratic, margin,
                        models, strength, strength_domain, accuracy
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import atomic_dir, check_then_open, new_manifest, read_json, read_manifest, seal_manifest
from mll_index.core.layout import selection_rule_dir
from mll_index.errors import IndexFormatError, InputError
from mll_index.labels.store import LabelStore
from mll_index.selection.accuracy import Interval, Rule
from mll_index.selection.rule_features import RULE_FEATURES

KIND = "selection-rule"
VERSION = 1
FILE = "rule.json"
REBUILD = "run `mll-index calibrate` to fit it again, or select with --rule mll"


@dataclass(frozen=True)
class CalibratedRule:
    """A fitted selection rule (see the module docstring). Arrays are float64.

    mean, scale, linear: (F,); quadratic: (F, F) upper triangular; strength: (n_models,) in `models`'
    order; strength_domain: domain tag -> (n_models,).
    """

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    intercept: float
    linear: np.ndarray
    quadratic: np.ndarray
    margin: float
    models: tuple[str, ...]
    strength: np.ndarray
    strength_domain: dict[str, np.ndarray]
    accuracy: Rule
    label_digest: str
    report: dict[str, Any] = field(default_factory=dict)
    model_labels: tuple[str, ...] = ()   # per model, "<sample fingerprint>:<label checksum>" (`model_label`)
    class_q: tuple[float, float] = (0.0, 0.0)  # a class's 80% interval around its best predicted F1

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(...,) predicted F1 in [0, 1] from (..., F) features in `self.features`' order."""
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        flat = x.reshape(-1, x.shape[-1])
        z = self.intercept + flat @ self.linear + np.einsum("nf,nf->n", flat @ self.quadratic, flat)
        return np.clip(z, 0.0, 1.0).reshape(x.shape[:-1])

    def strengths(self, model_ids: tuple[str, ...] | list[str], domain: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(general, in-domain) strength of these models, in their order (the domain's: the general
        one where the rule holds no figures for that domain)."""
        pos = {m: i for i, m in enumerate(self.models)}
        rows = np.array([pos[m] for m in model_ids], np.int64)
        general = self.strength[rows]
        by_domain = self.strength_domain.get(domain.lower()) if domain else None
        return general, (by_domain[rows] if by_domain is not None else general)

    def predict_accuracy(self, best_f1: np.ndarray) -> tuple[Interval, list[Interval]]:
        """The task's predicted accuracy and each class's, from (C,) each class's best predicted F1
        among its chosen models (the task's: the accuracy rule; a class's: that F1 and the held-out
        residuals' 10th and 90th percentiles around it)."""
        best = np.asarray(best_f1, np.float64)
        task = self.accuracy.apply({"f1_best": float(best.mean()), "log_classes": float(np.log(len(best)))})
        low, high = self.class_q
        return task, [Interval(float(f), float(np.clip(f + low, 0, 1)), float(np.clip(f + high, 0, 1))) for f in best]

    def vote(self, predicted: np.ndarray, k: int) -> list[list[int]]:
        """Per class, its models in the vote (positions, best first): the best by predicted F1, then
        up to k - 1 more whose prediction is within `margin` of the best's. predicted: (M, C)."""
        return vote_members(predicted, k, self.margin)

    def to_json(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "intercept": self.intercept, "linear": self.linear.tolist(), "quadratic": self.quadratic.tolist(),
                "margin": self.margin, "models": list(self.models), "model_labels": list(self.model_labels),
                "class_q": list(self.class_q), "strength": self.strength.tolist(),
                "strength_domain": {d: v.tolist() for d, v in self.strength_domain.items()},
                "accuracy": {"intercept": self.accuracy.intercept, "coef": self.accuracy.coef,
                             "q_low": self.accuracy.q_low, "q_high": self.accuracy.q_high,
                             "link": self.accuracy.link}}


def vote_members(predicted: np.ndarray, k: int, margin: float) -> list[list[int]]:
    """Per class, the best model by `predicted` ((M, C)), then up to k - 1 more within `margin` of it
    (ties go to the lower position, as `top_stable`)."""
    out = []
    for c in range(predicted.shape[1]):
        order = np.argsort(-predicted[:, c], kind="stable")[:k]
        best = predicted[order[0], c]
        out.append([int(m) for j, m in enumerate(order) if j == 0 or predicted[m, c] >= best - margin])
    return out


def model_label(store: LabelStore, model_id: str) -> str:
    """What a rule remembers of one model's label: its sample set and label checksum."""
    return f"{store.folders.get(model_id, '')}:{store.digests.get(model_id, '')}"


def label_digest(store: LabelStore) -> str:
    """A checksum of the labels a rule is fitted on: every model's id, sample set and label checksum."""
    rows = [[m, store.folders.get(m, ""), store.digests.get(m, "")] for m in sorted(store.model_ids)]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def has_rule(index_path: Path) -> bool:
    return (selection_rule_dir(index_path) / "manifest.json").is_file()


def missing_manifest(index_path: Path) -> str | None:
    """Why a selection_rule/ folder that holds files but no manifest cannot be used (one line), else None:
    such a rule is damaged, not absent, so `auto` must not fall back to the paper's rule unsaid."""
    folder = selection_rule_dir(index_path)
    if folder.is_dir() and not (folder / "manifest.json").is_file() and any(folder.iterdir()):
        return f"{folder / 'manifest.json'}: missing, so the calibrated rule in {folder} cannot be used; {REBUILD}"
    return None


def write_rule(index_path: Path, rule: CalibratedRule) -> Path:
    """Write the rule into the index (replacing any), atomically; returns its folder."""
    path = selection_rule_dir(index_path)
    with atomic_dir(path) as tmp:
        (tmp / FILE).write_text(json.dumps(rule.to_json()))
        manifest = new_manifest(KIND, VERSION, label_digest=rule.label_digest, models=len(rule.models),
                                features=list(rule.features), report=rule.report)
        seal_manifest(tmp, manifest, [FILE])
    return path


def _parse(data: Any, digest: str, report: dict[str, Any], where: Path) -> CalibratedRule:
    try:
        features = tuple(str(f) for f in data["features"])
        n = len(features)
        arrays = {name: np.asarray(data[name], np.float64) for name in ("mean", "scale", "linear", "quadratic",
                                                                         "strength")}
        acc = data["accuracy"]
        accuracy = Rule(float(acc["intercept"]), {str(k): float(v) for k, v in acc["coef"].items()},
                        float(acc["q_low"]), float(acc["q_high"]), acc.get("link", "logit"))
        rule = CalibratedRule(features, arrays["mean"], arrays["scale"], float(data["intercept"]), arrays["linear"],
                              arrays["quadratic"], float(data["margin"]), tuple(str(m) for m in data["models"]),
                              arrays["strength"],
                              {str(d): np.asarray(v, np.float64) for d, v in data["strength_domain"].items()},
                              accuracy, digest, report, tuple(str(m) for m in data["model_labels"]),
                              (float(data["class_q"][0]), float(data["class_q"][1])))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexFormatError(f"{where}: malformed selection rule ({exc}); {REBUILD}") from None
    shapes_ok = (arrays["mean"].shape == arrays["scale"].shape == arrays["linear"].shape == (n,)
                 and arrays["quadratic"].shape == (n, n) and arrays["strength"].shape == (len(rule.models),)
                 and all(v.shape == (len(rule.models),) for v in rule.strength_domain.values())
                 and len(rule.model_labels) == len(rule.models) and bool(np.all(arrays["scale"] > 0)))
    if not shapes_ok:
        raise IndexFormatError(f"{where}: the selection rule's arrays disagree in shape; {REBUILD}")
    if features != RULE_FEATURES:
        raise IndexFormatError(f"{where}: the selection rule reads features {list(features)}, this version computes "
                               f"{list(RULE_FEATURES)}; {REBUILD}")
    return rule


def read_rule(index_path: Path, store: LabelStore | None = None) -> CalibratedRule:
    """The index's calibrated rule, checked against its checksum (and, given `store`, its labels).

    Raises:
        IndexFormatError: no rule, a damaged one (manifest, checksum, shapes) or one fitted on other
            labels than `store`'s, naming the folder and `mll-index calibrate`.
    """
    path = selection_rule_dir(index_path)
    if not has_rule(index_path):
        raise IndexFormatError(f"{path}: no calibrated selection rule in this index; {REBUILD}")
    try:
        manifest = read_manifest(path, KIND, verify=True, versions=(VERSION,))
    except IndexFormatError as exc:
        raise IndexFormatError(f"{exc}; {REBUILD}") from None
    rule = _parse(read_json(path / FILE), str(manifest.get("label_digest", "")), dict(manifest.get("report", {})),
                  path / FILE)
    if store is not None:
        refuse_stale(rule, store, path)
    return rule


def refuse_stale(rule: CalibratedRule, store: LabelStore, where: Path) -> None:
    """Raise InputError (one line) when a model of `store` was not among those the rule was fitted on,
    or was labeled again since (a store of fewer models than the rule's is fine: `--models`)."""
    known = dict(zip(rule.models, rule.model_labels))
    added = [m for m in store.model_ids if m not in known]
    again = [m for m in store.model_ids if m in known and known[m] != model_label(store, m)]
    if not added and not again:
        return
    what = "; ".join(part for part in (f"model(s) {added[:3]} added" if added else "",
                                       f"model(s) {again[:3]} labeled again" if again else "") if part)
    raise InputError(f"{where}: the selection rule was calibrated before the labels changed ({what}); {REBUILD}")


def check_rule(index_path: Path, checksums: bool = False) -> list[str]:
    """Problems of the stored rule, one line each ([] when sound or when there is none), for `info --verify`."""
    if not has_rule(index_path):
        missing = missing_manifest(index_path)
        return [missing] if missing else []
    problems = check_then_open(selection_rule_dir(index_path), KIND, lambda: read_rule(index_path),
                               checksums=checksums, versions=(VERSION,))
    return [p if REBUILD in p else f"{p}; {REBUILD}" for p in problems]


def rule_summary(index_path: Path) -> dict[str, Any] | None:
    """The stored rule's manifest fields for `info` (None: no rule); never raises on a damaged one."""
    if not has_rule(index_path):
        return None
    try:
        manifest = read_json(selection_rule_dir(index_path) / "manifest.json")
        return {"models": manifest.get("models"), "report": manifest.get("report", {}),
                "created": manifest.get("created")}
    except (IndexFormatError, InputError, OSError):
        return {"damaged": True}
