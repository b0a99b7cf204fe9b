"""Predicted accuracy from published results, on small synthetic tables built here (fixed seeds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mll_index.published.accuracy import (
    MIN_DATASETS, AccuracyModel, fit_accuracy_model, predict_accuracy, predict_published_accuracy,
)
from mll_index.published.rule import dataset_similarity


def _synthetic(seed: int = 0, n_models: int = 14, n_datasets: int = 9, groups: int = 3, d: int = 24) -> dict:
    """A table whose datasets come in groups: alike class names, alike levels, alike model strengths.

    Column 0 is "ImageNet 1k" (general strength). Each dataset has 4-8 classes, its vectors near its
    group's centre; the models' z-scores mix a general strength and a per-group skill.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, d))
    group = np.arange(n_datasets) % groups
    vectors, owner = [], []
    for j in range(n_datasets):
        k = int(rng.integers(4, 9))
        vectors.append(centres[group[j]] + 0.35 * rng.normal(size=(k, d)))
        owner += [j] * k
    class_vectors = np.concatenate(vectors)
    class_vectors /= np.linalg.norm(class_vectors, axis=1, keepdims=True)
    strength, skill = rng.normal(size=n_models), rng.normal(size=(n_models, groups))
    level = np.array([0.75, 0.45, 0.3])[group] + rng.normal(0, 0.03, n_datasets)
    spread = np.array([0.08, 0.12, 0.05])[group]
    z = 0.7 * strength[:, None] + 0.5 * skill[:, group] + 0.2 * rng.normal(size=(n_models, n_datasets))
    accuracy = np.clip(level + spread * z, 0.0, 1.0).astype(np.float32)
    datasets = ["ImageNet 1k"] + [f"d{j}" for j in range(1, n_datasets)]
    return {"accuracy": accuracy, "datasets": datasets, "families": list(datasets),
            "class_vectors": class_vectors.astype(np.float32), "class_dataset": np.array(owner, np.int64)}


def _similarity(table: dict, j: int) -> np.ndarray:
    """Dataset j's classes as a task: (n_classes, n_datasets) their similarity to every dataset."""
    vectors, owner = table["class_vectors"], table["class_dataset"]
    return dataset_similarity(vectors[owner == j] @ vectors.T, owner, len(table["datasets"]))


def _predict(table: dict, similarity: np.ndarray, model: AccuracyModel, task: int | None = None, **kw):  # type: ignore[no-untyped-def]
    """predict_accuracy on the synthetic table; the task's class vectors are dataset `task`'s (None: not given)."""
    vectors = table["class_vectors"][table["class_dataset"] == task] if task is not None else None
    return predict_accuracy(table["accuracy"], table["datasets"], table["families"], table["class_dataset"],
                            similarity, vectors, model, **kw)


def test_the_hidden_column_never_reaches_the_fit() -> None:
    table = _synthetic()
    model = fit_accuracy_model(**table, hidden=["d4"])
    changed = dict(table, accuracy=table["accuracy"].copy())
    changed["accuracy"][:, 4] = np.random.default_rng(1).uniform(0, 1, len(changed["accuracy"]))
    assert model.usable and fit_accuracy_model(**changed, hidden=["d4"]).to_dict() == model.to_dict()
    # Not hidden, the same change moves it: the column counts when visible.
    assert fit_accuracy_model(**changed).to_dict() != fit_accuracy_model(**table).to_dict()


def test_estimates_lie_inside_their_intervals_and_follow_the_neighbours() -> None:
    table = _synthetic()
    model = fit_accuracy_model(**table, hidden=["d4"])
    pred = _predict(table, _similarity(table, 4), model, 4, hidden=["d4"])
    assert pred is not None and not pred.low_confidence
    assert (0 <= pred.low).all() and (pred.low <= pred.estimate).all() and (pred.estimate <= pred.high).all()
    assert (pred.high <= 1).all() and pred.estimate.shape == (len(table["accuracy"]),)
    truth = table["accuracy"][:, 4]
    # d4 is in group 1 (level ~0.45); the neighbours' level must beat the table-wide guess.
    assert abs(pred.level - truth.mean()) < abs(np.mean(table["accuracy"][:, 1:]) - truth.mean())
    assert np.mean((truth >= pred.low) & (truth <= pred.high)) >= 0.5
    assert "calibrated by leaving out each of the table's 8 datasets" in pred.about
    assert set(pred.of(0)) == {"estimate", "low", "high"}


def test_too_small_a_table_gives_no_prediction_and_says_why() -> None:
    few_datasets = _synthetic(n_datasets=MIN_DATASETS - 1)
    model = fit_accuracy_model(**few_datasets)
    assert not model.usable and "4 datasets" in model.about and model.about.startswith("no predicted accuracy")
    assert _predict(few_datasets, _similarity(few_datasets, 1), model, 1) is None
    few_models = _synthetic(n_models=4)
    assert "4 models" in fit_accuracy_model(**few_models).about
    # Hiding a dataset of a 5-dataset table leaves 4 to calibrate on: none either.
    assert not fit_accuracy_model(**_synthetic(n_datasets=5), hidden=["d1"]).usable


def test_classes_like_no_dataset_fall_back_with_low_confidence() -> None:
    table = _synthetic()
    model = fit_accuracy_model(**table)
    unlike = np.full((3, len(table["datasets"])), 0.2)
    pred = _predict(table, unlike, model)
    assert pred is not None and pred.low_confidence and pred.about.startswith("low confidence")
    # The fallback ranks by general strength: ImageNet's order.
    assert list(np.argsort(pred.estimate)) == list(np.argsort(table["accuracy"][:, 0]))
    # A name with no WordNet lemma matches nothing, however similar its embedding.
    known = _predict(table, _similarity(table, 4), model, 4, unknown=[True] * int((table["class_dataset"] == 4).sum()))
    assert known is not None and known.low_confidence


def test_the_model_round_trips_through_json() -> None:
    model = fit_accuracy_model(**_synthetic())
    again = AccuracyModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model and again.summary()["usable"]
    small = fit_accuracy_model(**_synthetic(n_models=3))
    assert AccuracyModel.from_dict(json.loads(json.dumps(small.to_dict()))) == small


def test_import_records_the_model_and_labels_read_it_back(tmp_path: Path, index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.published.store import import_published, open_published, published_evidence

    names = {"dogs": ["golden retriever", "pomeranian", "beagle"], "cats": ["siamese cat", "persian cat"],
             "food": ["pizza", "apple pie", "bagel"], "cars": ["sedan", "convertible", "pickup truck"],
             "birds": ["robin", "sparrow", "eagle"], "flowers": ["rose", "tulip", "daisy"]}
    rng = np.random.default_rng(3)
    header = "name,pretrained,ImageNet 1k," + ",".join(names) + "\n"
    rows = "".join(f"M{i},t,{0.5 + 0.04 * i:.3f}," + ",".join(f"{rng.uniform(0.2, 0.9):.3f}" for _ in names) + "\n"
                   for i in range(6))
    (tmp_path / "results.csv").write_text(header + rows)
    (tmp_path / "names.json").write_text(json.dumps({**names, "imagenet1k": ["tench", "goldfish", "laptop"]}))
    summary = import_published(index_copy, tmp_path / "results.csv", [tmp_path / "names.json"], embedder=embedder)
    assert summary["accuracy_model"]["usable"] and summary["accuracy_model"]["datasets"] == 7
    pub = open_published(index_copy)
    assert pub.accuracy_model is not None and pub.accuracy_model.to_dict() == \
        json.loads(json.dumps(pub.manifest["accuracy_model"]))
    evidence = published_evidence(pub, pub.class_vectors[:2])
    pred = predict_published_accuracy(pub, evidence.similarity, pub.class_vectors[:2])
    assert pred is not None and pred.estimate.shape == (6,)
    pub.manifest.pop("accuracy_model")   # labels imported before there was a model
    assert pub.accuracy_model is None and predict_published_accuracy(pub, evidence.similarity, None) is None
