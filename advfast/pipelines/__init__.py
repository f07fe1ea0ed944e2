"""Jobs that combine layers, as the command line runs them: ``augment`` trains a generator and judges its
samples with a classifier of the real data (:func:`run_augment`)."""

from advfast.pipelines.augment import judge_classifier, measure_generator, run_augment

__all__ = ["judge_classifier", "measure_generator", "run_augment"]
