"""Which input protocol a checkpoint's weights expect, recorded inside the checkpoint.

Weights are trained on inputs normalised one way (``metadata.EVAL_PROTOCOLS``: timm's published
IRv2 weights expect ``inception``, mean = std = 0.5; the zoo recipe trains on ``zoo``). Fed the
other protocol's mean/std they still give logits, just wrong ones, so the protocol travels with
the weights as timm's ``pretrained_cfg`` does: ``import-weights`` and a run's ``final.ckpt``
record it in the file, and export, evaluate, predict and fine-tuning default to it and refuse
an explicit protocol that disagrees (:func:`resolve_protocol`). A checkpoint without a record
(written before this existed) keeps each caller's old default.
"""

from __future__ import annotations

import os

from irv2_core.errors import Irv2Error
from irv2_core.models.ckpt_io import read_checkpoint_metadata
from irv2_core.models.metadata import EVAL_PROTOCOLS

__all__ = ["PROTOCOL_KEY", "protocol_metadata", "recorded_protocol", "resolve_protocol"]

PROTOCOL_KEY = "input_protocol"  # checkpoint metadata key


def protocol_metadata(protocol: str) -> dict[str, str]:
    """The checkpoint metadata that records *protocol* (for ``save_checkpoint_atomic``)."""
    if protocol not in EVAL_PROTOCOLS:
        raise Irv2Error(
            f"unknown eval protocol {protocol!r}; choose one of: {', '.join(EVAL_PROTOCOLS)}"
        )
    return {PROTOCOL_KEY: protocol}


def recorded_protocol(ckpt: str | os.PathLike[str]) -> str | None:
    """The protocol *ckpt* records its weights expect, or None (an older checkpoint)."""
    value = read_checkpoint_metadata(ckpt).get(PROTOCOL_KEY)
    if value is not None and value not in EVAL_PROTOCOLS:
        raise Irv2Error(
            f"{ckpt} records input protocol {value!r}, which this version does not know "
            f"({', '.join(EVAL_PROTOCOLS)}); use the irv2 version that wrote it"
        )
    return value


def resolve_protocol(
    ckpt: str | os.PathLike[str], asked: str | None, fallback: str, option: str
) -> str:
    """The protocol to feed *ckpt*'s weights: the recorded one, which *asked* (the caller's
    explicit choice, None if none, passed as *option*) must equal; without a record, *asked*,
    else *fallback* (the caller's behaviour before protocols were recorded)."""
    recorded = recorded_protocol(ckpt)
    if recorded is None:
        return asked or fallback
    if asked is not None and asked != recorded:
        want, got = EVAL_PROTOCOLS[recorded], EVAL_PROTOCOLS[asked]
        raise Irv2Error(
            f"the weights in {ckpt} were trained with the {recorded!r} input protocol "
            f"(mean {list(want.mean)}, std {list(want.std)}; recorded in the checkpoint), but "
            f"{option} {asked!r} (mean {list(got.mean)}, std {list(got.std)}) was asked for: "
            f"their outputs would be silently wrong. Omit {option} to use {recorded!r}, or set "
            f"it to {recorded!r}"
        )
    return recorded
