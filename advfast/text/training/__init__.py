"""Fine-tuning transformer classifiers on text with the embedding-space adversaries, on the shared run loop
(checkpoints, exact resume, torchrun DDP, reports)::

    trainer = TextTrainer(TextTrainConfig(data="rotten-tomatoes", model="minilm", method="freelb", epochs=2,
                                          out="runs/rt-freelb"))
    trainer.fit()                                 # metrics.jsonl, last.pt, report.json / report.md / plots
    trained = load_text_run("runs/rt-freelb")     # the model in eval mode, its tokenizer, config and record
"""

from advfast.text.training.config import METHOD_OPTIONS, METHODS, TextTrainConfig
from advfast.text.training.evaluation import TextEvaluation, evaluate_text_classifier
from advfast.text.training.report import write_text_report
from advfast.text.training.saved import TrainedTextClassifier, load_text_run
from advfast.text.training.schedule import LinearWarmupDecay
from advfast.text.training.standard import Standard
from advfast.text.training.trainer import ROLE, TextTrainer

__all__ = [
    "METHODS",
    "METHOD_OPTIONS",
    "ROLE",
    "LinearWarmupDecay",
    "Standard",
    "TextEvaluation",
    "TextTrainConfig",
    "TextTrainer",
    "TrainedTextClassifier",
    "evaluate_text_classifier",
    "load_text_run",
    "write_text_report",
]
