"""``t2r_transformer``: fairseq's translation transformer with T2R attention in the decoder,
plus a ``t2r_`` twin of every architecture registered for ``transformer``.

The encoder keeps softmax attention. In the decoder, every chosen layer (``--t2r-layers``,
default all) gets causal linear self-attention. Cross-attention (``--t2r-cross``):
- ``softmax`` (default): the teacher's, unchanged. Its keys and values are the encoder output,
  projected at the first step and cached (fairseq's ``static_kv``), so a decoding step costs
  O(source length) and stays constant in the number of generated tokens;
- ``linear``: T2R cross-attention (feature size ``--t2r-cross-feature-dim``, default
  ``--t2r-feature-dim``). Generation keeps one summary of the source per sentence (``Sz_src``),
  so a step costs the same whatever the source length; and when every cross-attention is
  linear, fairseq's per-step re-indexing of encoder_out (an O(source) copy) is skipped after
  the first step, since the decoder no longer reads it.

Swap a softmax checkpoint with any fairseq tool, e.g.::

    fairseq-train DATA --user-dir fairseq_t2r --arch t2r_transformer_wmt_en_de \\
        --finetune-from-model softmax.pt ...

``upgrade_state_dict_named`` copies every tensor of the checkpoint and initialises only the
feature maps; a checkpoint that does not fit stops with one line naming the first bad tensor.
"""
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model
from fairseq.models.transformer import TransformerModel

from .. import patches
from ..config import T2RCrossConfig, set_t2r_defaults
from ..modules.t2r_attention import T2RAttention
from . import positions, trainable
from .conversion import check_task, convert_decoder, fill_new_tensors
from .release_tasks import check_release_task
from .twins import register_twins


@register_model("t2r_transformer")
class T2RTransformerModel(TransformerModel):
    @classmethod
    def hub_models(cls):
        return {}  # no released T2R translation checkpoints

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # no defaults on the parser, as for fairseq's own options: the architecture functions
        # (the t2r_ twins) fill them in, so an old checkpoint's args get them too
        gen_parser_from_dataclass(parser, T2RCrossConfig(), delete_default=True, with_prefix="")

    @classmethod
    def build_model(cls, args, task):
        set_t2r_defaults(args)
        check_task(True, args, task)
        check_release_task(args, task)  # M2M-100 / mBART: their task and language tokens
        model = super().build_model(args, task)
        model = convert_decoder(model, args, with_cross=True)
        positions.extend(model.decoder)  # long outputs where the positions allow (models/positions.py)
        if all(isinstance(getattr(layer, "encoder_attn", None), T2RAttention) for layer in model.decoder.layers):
            patches.reorder_encoder_out_once(model.encoder)
        return trainable.prepare(model, args, task)  # --t2r-trainable; lets criteria find the model

    def set_beam_size(self, beam_size):
        """fairseq's SequenceGenerator calls this for beams > 1 (as for BART): the linear
        cross-attention then keeps one source summary per sentence instead of one per hypothesis.

        Only T2R modules get it. fairseq's MultiheadAttention (softmax cross-attention, the default)
        stays at beam size 1, as in the stock transformer, which has no set_beam_size: given one,
        it assumes every later batch holds whole beams (a stale size 4 then fails on a 7-row
        batch, e.g. rescoring or a beam-1 search after a beam-4 one)."""
        for module in self.decoder.modules():
            if isinstance(module, T2RAttention):
                module.set_beam_size(beam_size)

    def upgrade_state_dict_named(self, state_dict, name):
        super().upgrade_state_dict_named(state_dict, name)
        fill_new_tensors(self, state_dict, name)


register_twins("transformer", "t2r_transformer")
