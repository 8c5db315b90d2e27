"""The generated quick-start dataset (pure numpy/cv2: importing it needs no mmdet)."""

from .errors import MissingDataError
from .synthetic import (
    CLASSES,
    SyntheticSpec,
    class_probabilities,
    generate,
    render_image,
)

__all__ = ['CLASSES', 'MissingDataError', 'SyntheticSpec', 'class_probabilities', 'generate',
           'render_image']
