"""The per-object rows of the table in ``patches/__init__.py``: each patches one object the
models hand it (a decoder, an encoder, a task)."""
import types
import weakref


def skip_future_mask(decoder):
    """An all-T2R decoder builds no (T, T) future mask (linear attention is causal by construction)."""
    decoder.buffered_future_mask = types.MethodType(_no_future_mask, decoder)


def _no_future_mask(decoder, tensor):
    return None


def reorder_encoder_out_once(encoder):
    """``encoder.reorder_encoder_out`` runs for the first call only (see ``_reorder_once``)."""
    encoder.reorder_encoder_out = types.MethodType(_reorder_once, encoder)


def _reorder_once(encoder, encoder_out, new_order):
    """SequenceGenerator re-indexes encoder_out before every decoding step (an O(source length)
    copy), but when every cross-attention is linear the decoder reads encoder_out only at its
    first step, to build the per-sentence source summaries it then reorders itself. So the first
    call (the expansion to beam hypotheses) happens; later calls return encoder_out as it is."""
    if "t2r_expanded" in encoder_out:
        return encoder_out
    out = type(encoder).reorder_encoder_out(encoder, encoder_out, new_order)
    out["t2r_expanded"] = []
    return out


class _ModelRefs(list):
    """Weak references to models; a copy or pickle of the task gets none (weakrefs cannot be
    pickled, and a copied task did not build those models)."""

    def __reduce__(self):
        return (_ModelRefs, ())

    def __deepcopy__(self, memo):
        return _ModelRefs()


def remember(task, model):
    """Note on ``task`` that it built ``model`` (weakly): fairseq builds the criterion with the same
    task right after the model, so a criterion can prepare the model before the optimizer exists."""
    if task is None:
        return
    refs = _ModelRefs(r for r in getattr(task, "_t2r_models", []) if r() is not None)
    refs.append(weakref.ref(model))
    try:
        task._t2r_models = refs
    except AttributeError:  # a task object that takes no attributes: nothing to remember
        pass


def built_models(task):
    """The T2R models ``task`` built that are still alive, oldest first."""
    return [m for m in (r() for r in getattr(task, "_t2r_models", [])) if m is not None]


def sinusoidal_table_doubles(embed_positions):
    """A T2R decoder's sinusoidal position table grows to twice the length asked for whenever it is
    too short (``models/positions.py``): fairseq's rebuilds it one row longer at each decoding step
    past its size, O(T) work per generated token."""
    embed_positions.__class__ = _doubling_class(type(embed_positions))


_CLASSES = {}


def _doubling_class(base):
    """A subclass of fairseq's sinusoidal embedding whose table grows to twice the length asked for
    whenever it is too short (fairseq's rebuilds it one row longer at each step past its size: O(T)
    work per generated token)."""
    if getattr(base, "_t2r_doubling", False):
        return base
    if base not in _CLASSES:
        def forward(self, input, incremental_state=None, timestep=None, positions=None):
            needed = self.padding_idx + 1 + input.size(1) + 1
            if needed > self.weights.size(0):
                size = max(2 * self.weights.size(0), needed)
                self.weights = base.get_embedding(size, self.embedding_dim, self.padding_idx).to(self.weights)
            return base.forward(self, input, incremental_state, timestep, positions)

        _CLASSES[base] = type(f"Doubling{base.__name__}", (base,), {"forward": forward, "_t2r_doubling": True})
    return _CLASSES[base]
