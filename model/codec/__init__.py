"""Stage 1: the multi-scale BSQ motion codec (normalised motion windows <-> binary codes).

- `bsq`: the multi-scale binary spherical quantiser and the helpers the AR model builds
  its inputs with (`codes_to_latent`, `scale_inputs`);
- `codec`: the transformer encoder/decoder around it (`MotionCodec`, `CodecConfig`);
- `normalise`: per-channel statistics mapping real units to the codec's space;
- `losses`: the training loss (motion, head vertices, lip vertices, BSQ terms).
"""
from .bsq import BSQConfig, MultiScaleBSQ
from .codec import CodecConfig, CodecOutput, MotionCodec
from .losses import CodecLoss, CodecLossConfig
from .normalise import ChannelStats

__all__ = ["BSQConfig", "ChannelStats", "CodecConfig", "CodecLoss", "CodecLossConfig", "CodecOutput",
           "MotionCodec", "MultiScaleBSQ"]
