"""``t2r_bart``: fairseq's BART / mBART model with T2R attention in the decoder, plus a ``t2r_``
twin of every architecture registered for ``bart`` (``t2r_bart_base``, ``t2r_bart_large``,
``t2r_mbart_large``, ``t2r_mbart_base``, ``t2r_mbart_base_wmt20``).

BART is fairseq's translation transformer with ``layernorm_embedding``, shared embeddings, BERT
initialisation and classification heads, so the swap is the translation model's, unchanged
(``T2RTransformerModel``: the same ``build_model``, ``set_beam_size`` and checkpoint hook, by
inheritance): the decoder's self-attention becomes T2R, its cross-attention stays softmax unless
``--t2r-cross linear``, the encoder is untouched. Everything else is BART's own: its
``upgrade_state_dict_named`` runs first (classification heads registered or dropped, the
``<mask>`` row trimmed when a denoising checkpoint is finetuned for translation), so the heads and
``layernorm_embedding`` are carried over as the checkpoint holds them; ``BARTModel.from_pretrained``
(``user_dir=``) returns fairseq's ``BARTHubInterface`` on a T2R checkpoint, ``sample()`` included.

BART's own ``set_beam_size`` makes the softmax cross-attention "beamable" (keys projected once per
sentence) and turns the encoder's reordering into a no-op for good; the twin keeps the translation
model's instead (only T2R modules get the beam size): a stale beam size then cannot break a later
beam-1 search or a rescoring batch, and the softmax cross-attention computes what the teacher's does.
"""
from fairseq.models import register_model
from fairseq.models.bart import BARTModel

from .t2r_transformer import T2RTransformerModel
from .twins import register_twins


@register_model("t2r_bart")
class T2RBARTModel(T2RTransformerModel, BARTModel):
    """T2RTransformerModel's swap on BARTModel (method order: the T2R model's, then BART's)."""

    @classmethod
    def hub_models(cls):
        return {}  # no released T2R BART checkpoints


register_twins("bart", "t2r_bart")
