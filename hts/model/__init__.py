"""The Instance-U-Net model: encoder/decoder, RPN, anchors and box utilities."""

from hts.model.network import InstanceUNet, ModelConfig

__all__ = ["InstanceUNet", "ModelConfig"]
