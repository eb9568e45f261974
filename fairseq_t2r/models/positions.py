"""Running a converted decoder past the length it was trained on.

A T2R decoder's attention has no length limit (a fixed-size state, constant memory per token);
what can limit it is its positions:
- sinusoidal positions (fairseq's default) and no positions extend to any length: the decoder's
  ``max_target_positions`` (which fairseq's tools read through ``max_positions()`` to skip
  longer samples in ``fairseq-eval-lm`` and to cap ``fairseq-generate`` / ``-interactive``
  outputs) is raised to ``EXTENDED``, and the sinusoidal table grows by doubling, once per
  doubling, instead of being rebuilt one row longer at every decoding step past its first size;
- learned positions have one embedding per trained position: asked for more (an LM task whose
  ``--tokens-per-sample`` exceeds them), the model is refused in one line that says why.

The softmax teacher is not changed here; ``fairseq_t2r.compare`` scores it past its trained
length the same way where its positions allow (its memory then grows with the context).
"""
from typing import Optional

from ..errors import T2RUserError
from ..patches import objects

# fairseq's sinusoidal table's own limit (SinusoidalPositionalEmbedding.max_positions)
EXTENDED = 100_000


def kind(decoder) -> str:
    """"learned", "sinusoidal" or "none": the positions of a fairseq transformer decoder."""
    from fairseq.modules import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding

    pos = getattr(decoder, "embed_positions", None)
    if pos is None:
        return "none"
    if isinstance(pos, LearnedPositionalEmbedding):
        return "learned"
    if isinstance(pos, SinusoidalPositionalEmbedding):
        return "sinusoidal"
    return "learned"  # an unknown module: assume a table of fixed size


def learned_limit(decoder) -> int:
    """Positions a learned table covers (fairseq's ``max_positions()`` of the decoder)."""
    return int(decoder.max_positions())


def refuse_past_learned(decoder, requested: Optional[int], what: str = "--tokens-per-sample"):
    """One line when ``requested`` tokens exceed a learned position table (nothing otherwise)."""
    if requested and kind(decoder) == "learned" and requested > learned_limit(decoder):
        n = learned_limit(decoder)
        raise T2RUserError(
            f"{what} {requested} is longer than this model's {n} learned positions: a learned position table "
            f"has one embedding per trained position and none past them, so the model cannot run past {n} tokens "
            f"(the T2R attention could; sinusoidal positions, or none, extend): pass {what} {n} or less")


def extend(decoder, requested: Optional[int] = None):
    """Let ``decoder`` run past its trained length where its positions allow (module docstring);
    refuse ``requested`` tokens past a learned table."""
    refuse_past_learned(decoder, requested)
    k = kind(decoder)
    if k == "learned":
        return decoder
    decoder.max_target_positions = EXTENDED
    if k == "sinusoidal":
        objects.sinusoidal_table_doubles(decoder.embed_positions)
    return decoder
