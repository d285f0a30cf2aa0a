"""Evaluation: models from checkpoints, test-time augmentation, metrics, predictions."""

from .checkpoint_eval import evaluate_checkpoint
from .inference import Inference, load_inference
from .metrics import compute_metrics, expected_calibration_error, format_metrics, predict_split
from .predict import Prediction, expand_inputs, predict_files
from .tta import TTA_MODES, dense_head, dense_logits, tta_probs

__all__ = [
    "Inference",
    "load_inference",
    "compute_metrics",
    "expected_calibration_error",
    "format_metrics",
    "predict_split",
    "Prediction",
    "expand_inputs",
    "predict_files",
    "TTA_MODES",
    "dense_head",
    "dense_logits",
    "tta_probs",
    "evaluate_checkpoint",
]
