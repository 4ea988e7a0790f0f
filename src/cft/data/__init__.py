"""Reading images and preparing them for a model."""

from cft.data.images import Preprocessor, load_image, preprocessor, sample_image_path

__all__ = ["Preprocessor", "load_image", "preprocessor", "sample_image_path"]
