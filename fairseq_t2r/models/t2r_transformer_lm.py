"""``t2r_transformer_lm``: fairseq's transformer_lm with T2R attention in the decoder,
plus a ``t2r_`` twin of every architecture registered for ``transformer_lm``."""
from dataclasses import dataclass

from fairseq.models import register_model
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig

from ..config import T2RConfig
from . import positions, trainable
from .conversion import check_task, convert_decoder, fill_new_tensors
from .twins import register_twins


@dataclass
class T2RTransformerLanguageModelConfig(TransformerLanguageModelConfig, T2RConfig):
    pass


@register_model("t2r_transformer_lm", dataclass=T2RTransformerLanguageModelConfig)
class T2RTransformerLanguageModel(TransformerLanguageModel):
    @classmethod
    def build_model(cls, args, task):
        check_task(False, args, task)
        model = super().build_model(args, task)
        convert_decoder(model, args, with_cross=False)
        # past the trained length where the positions allow; learned ones refuse a longer --tokens-per-sample
        positions.extend(model.decoder, requested=getattr(getattr(task, "args", None), "tokens_per_sample", None))
        return trainable.prepare(model, args, task)  # --t2r-trainable; lets criteria find the model

    def upgrade_state_dict_named(self, state_dict, name):
        super().upgrade_state_dict_named(state_dict, name)
        fill_new_tensors(self, state_dict, name)


register_twins("transformer_lm", "t2r_transformer_lm")
