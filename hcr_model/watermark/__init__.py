"""Watermark backends behind one interface (`base.WatermarkBackend`)."""

from hcr_model.watermark.base import Extraction, WatermarkBackend

__all__ = ["Extraction", "WatermarkBackend"]
