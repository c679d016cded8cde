"""Downstream metrics, computed by the libraries the field reports them with: scikit-learn for classification,
sacrebleu for text-to-text (BLEU with a chosen tokenizer, e.g. 'zh' for Chinese, and chrF)."""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

CLASSIFICATION = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_micro", "recall_micro",
                  "f1_micro")
TEXT = ("bleu", "chrf")


def classification_metrics(true: Sequence[int], predicted: Sequence[int], num_classes: int) -> dict[str, float]:
    """Accuracy and macro / micro precision, recall and F1 over all `num_classes` classes (0 where undefined)."""
    classes = list(range(num_classes))
    metrics = {"accuracy": float(accuracy_score(true, predicted))}
    for average in ("macro", "micro"):
        precision, recall, f1, _ = precision_recall_fscore_support(true, predicted, labels=classes, average=average,
                                                                   zero_division=0)
        metrics.update({f"precision_{average}": float(precision), f"recall_{average}": float(recall),
                        f"f1_{average}": float(f1)})
    return metrics


def confusion(true: Sequence[int], predicted: Sequence[int], num_classes: int) -> list[list[int]]:
    """Counts [true class][predicted class]."""
    return confusion_matrix(true, predicted, labels=list(range(num_classes))).tolist()


def text_metrics(hypotheses: Sequence[str], references: Sequence[str], tokenize: str) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, tokenized by `tokenize`) and chrF of the hypotheses against one reference each."""
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize)
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


def bleu_tokenizers() -> list[str]:
    """The tokenizer names sacrebleu's BLEU accepts."""
    return sorted(sacrebleu.metrics.bleu._TOKENIZERS)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better (every task metric but a loss)."""
    return not metric.endswith("loss")


def metrics_table(metrics: dict[str, float]) -> str:
    """Metric names and values, one per line."""
    width = max(len(name) for name in metrics)
    return "\n".join(f"{name:<{width}}  {value:>10.4f}" for name, value in metrics.items())


def confusion_table(matrix: list[list[int]], names: Sequence[str]) -> str:
    """The confusion matrix with class names: rows are the true class, columns the predicted one."""
    corner = "true \\ predicted"
    width = max(len(corner), *(len(name) for name in names))
    cell = max(6, *(len(str(count)) for row in matrix for count in row), *(len(name) for name in names))
    lines = [f"{corner:<{width}}  " + "  ".join(f"{name:>{cell}}" for name in names)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{count:>{cell}}" for count in row) for name, row in zip(names, matrix)]
    return "\n".join(lines)
