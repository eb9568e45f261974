"""T2RAttention: a drop-in replacement for fairseq's MultiheadAttention with linear attention.

Same parameter names and shapes as MultiheadAttention (q_proj, k_proj, v_proj, out_proj), so a
softmax checkpoint's tensors load unchanged; the only new tensors live in ``feature_map`` and
``state_update``.
The math is in ``fairseq_t2r.ops``; the module's jobs live in these files:

- this file: construction and the parallel forward (training and scoring): projections, heads,
  features, dropout. Self-attention with the ``t2r`` (relu) map, at lengths where the chunked
  form runs, goes from the layer input in one op (``ops.causal_relu_from_input``: projection,
  relu and attention with the memory of one projection); other maps and short sequences project
  first and call ``ops.causal_parallel``; cross-attention calls ``ops.noncausal``.
- ``states/``: the state update of causal self-attention (``--t2r-state``, one registered class
  per state: its new tensors, its parallel form, its one-token step, its incremental-state
  layout) and its normaliser (``--t2r-norm``); this module never asks which state it holds.
- ``decoding.py``: every call with an incremental state (one-token inference step, the [S | z]
  state layout per head, ``reorder_incremental_state``, ``set_beam_size``);
  ``beam_groups.py``: one cross-attention source summary per sentence under beam search.
- ``folding.py``: the feature map's linear part folded into q_proj / k_proj (``self.folded``).
- ``feature_map_base.py`` / ``feature_maps.py``: the feature maps phi.
- ``transfer.py``: attention transfer (``self.transfer``, set only by ``transfer.recording``).
"""
from typing import Dict, Optional, Tuple

from fairseq.incremental_decoding_utils import with_incremental_state
from fairseq.modules import MultiheadAttention
from fairseq.modules.fairseq_dropout import FairseqDropout
from torch import Tensor, nn

from .. import ops
from . import transfer
from .decoding import IncrementalDecoding
from .feature_maps import build_feature_map
from .folding import FoldedProjections
from .states import build_state_update
from .window import build_window


@with_incremental_state
class T2RAttention(IncrementalDecoding, transfer.Recordable, nn.Module):
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        q_proj: nn.Module,
        k_proj: nn.Module,
        v_proj: nn.Module,
        out_proj: nn.Module,
        feature_map: str = "t2r",
        feature_dim: int = 32,
        dropout: float = 0.0,
        encoder_decoder_attention: bool = False,
        eps: float = ops.DEFAULT_EPS,
        state_options: Optional[dict] = None,
        window_options: Optional[dict] = None,
    ):
        """``state_options``: ``build_state_update``'s keyword arguments (state, norm, decay_init, ...)
        for causal self-attention; cross-attention keeps the additive source summary.
        ``window_options``: ``build_window``'s (window, window_branch), self-attention only."""
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.scaling = self.head_dim ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = q_proj, k_proj, v_proj, out_proj
        self.feature_map = build_feature_map(feature_map, num_heads, self.head_dim, feature_dim)
        if encoder_decoder_attention and state_options and str(state_options.get("state", "additive")) != "additive":
            raise ValueError("cross-attention keeps its source summary: --t2r-state applies to self-attention only")
        self.state_update = build_state_update(num_heads, self.head_dim, self.feature_map.output_dim,
                                               **(state_options or {}))
        if encoder_decoder_attention and window_options and window_options.get("window"):
            raise ValueError("--t2r-window applies to causal self-attention, not to cross-attention")
        # --t2r-window: softmax over the last W tokens beside the state (window.py); None without
        self.window = build_window(num_heads, self.state_update, **(window_options or {}))
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)
        self.encoder_decoder_attention = encoder_decoder_attention
        self.self_attention = not encoder_decoder_attention
        self.eps = eps
        self.beam_size = 1
        # fold the feature map's linear part into q_proj / k_proj (maps act(W x + b) only); False
        # keeps them apart
        self.merge_projections = True
        self.folded = FoldedProjections(self)
        # attention transfer: a record while transfer.recording runs a forward, else None
        self.transfer: Optional[transfer.TransferRecord] = None
        self.init_incremental_state()

    @classmethod
    def from_softmax(cls, mha: MultiheadAttention, feature_map: str, feature_dim: int, eps=ops.DEFAULT_EPS,
                     state_options: Optional[dict] = None, window_options: Optional[dict] = None):
        """Build from a MultiheadAttention, taking over its projection modules as they are."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("attention with --add-bias-kv / --add-zero-attn cannot be converted to T2R")
        return cls(
            mha.embed_dim,
            mha.num_heads,
            mha.q_proj,
            mha.k_proj,
            mha.v_proj,
            mha.out_proj,
            feature_map=feature_map,
            feature_dim=feature_dim,
            dropout=mha.dropout_module.p,
            encoder_decoder_attention=mha.encoder_decoder_attention,
            eps=eps,
            state_options=state_options,
            window_options=window_options,
        )

    def upgrade_state_dict_named(self, state_dict, name):
        # old checkpoints stored q, k, v stacked as in_proj_weight: split them as fairseq does
        MultiheadAttention.upgrade_state_dict_named(self, state_dict, name)

    # -- shapes -----------------------------------------------------------------------------
    def _heads(self, x: Tensor) -> Tensor:
        # (T, B, C) -> (B, H, T, D)
        T, B, _ = x.shape
        return x.view(T, B, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def _unheads(self, x: Tensor) -> Tensor:
        # (B, H, T, D) -> (T, B, C)
        B, H, T, D = x.shape
        return x.permute(2, 0, 1, 3).reshape(T, B, H * D)

    # -- features ---------------------------------------------------------------------------
    def _phi_queries(self, query: Tensor) -> Tensor:
        """query (T, B, C) -> phi(q) (B, H, T, F)."""
        folded = self.folded.query()
        if folded is not None:
            return self._folded_features(query, *folded)
        return self.feature_map.forward_queries(self._heads(self.q_proj(query) * self.scaling))

    def _phi_keys(self, key: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
        """key (S, B, C) -> phi(k) (B, H, S, F), zero at padded keys."""
        folded = self.folded.key()
        if folded is not None:
            phi_k = self._folded_features(key, *folded)
        else:
            phi_k = self.feature_map.forward_keys(self._heads(self.k_proj(key)))
        return ops.mask_padded_keys(phi_k, key_padding_mask)

    def _phi_queries_keys(self, query: Tensor, key: Tensor, key_padding_mask: Optional[Tensor]):
        """phi(q), phi(k); self-attention with folded projections makes both in one matmul."""
        if key is query and self.folded.active:
            w, b = self.folded.query_key()
            T, B, _ = query.shape
            y = nn.functional.linear(query, w, b).view(T, B, 2 * self.num_heads, -1)
            phi = self.feature_map.activate(y, inplace=True).permute(1, 2, 0, 3)  # (B, 2H, T, F)
            phi_q, phi_k = phi.split(self.num_heads, 1)
            return phi_q, ops.mask_padded_keys(phi_k, key_padding_mask)
        return self._phi_queries(query), self._phi_keys(key, key_padding_mask)

    def _folded_features(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        """x (T, B, C) through a folded projection (H*F', C) and the activation: (B, H, T, F)."""
        T, B, _ = x.shape
        y = nn.functional.linear(x, weight, bias).view(T, B, self.num_heads, -1).permute(1, 2, 0, 3)
        return self.feature_map.activate(y)

    def _weight_dropout(self):
        # attention transfer fits the maps to the deterministic softmax weights: no dropout then
        if self.training and self.dropout_module.p > 0 and self.transfer is None:
            return self.dropout_module
        return None

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        # Linear attention never materialises attention weights outside the quadratic
        # training form, so none are returned (fairseq treats None as "not available").
        # attn_mask is the causal mask fairseq passes in training; causality is built in.
        if incremental_state is not None:
            return self._decode(query, key, value, key_padding_mask, incremental_state), None
        if self.training and self.feature_map.is_random:
            self.feature_map.new_feature_map()
        if self.self_attention and self._fused_from_input(query, key, value):
            weight, bias = self.folded.query_key_value()
            out = ops.causal_relu_from_input(
                query, weight, bias, self.num_heads, self.feature_map.output_dim, key_padding_mask, self.eps
            )
            return self.out_proj(out), None
        if self.encoder_decoder_attention:
            phi_q, phi_k = self._phi_queries(query), self._phi_keys(key, key_padding_mask)
            out = ops.noncausal(phi_q, phi_k, self._heads(self.v_proj(value)), self.eps, self._weight_dropout())
        elif self.windowed and not self.window.dropped(self.training):
            if key is query and value is query:  # q, k, v and the features from one projection
                q, k, v, phi_q, phi_k = self.window.project(self, query, key_padding_mask)
                out = self.window.parallel(self, query, key_padding_mask, phi_q, phi_k, v, q=q, k=k)
            else:
                phi_q, phi_k = self._phi_queries_keys(query, key, key_padding_mask)
                out = self.window.parallel(self, query, key_padding_mask, phi_q, phi_k, self._heads(self.v_proj(value)))
        else:
            phi_q, phi_k = self._phi_queries_keys(query, key, key_padding_mask)
            v = self._heads(self.v_proj(value))
            out = self.state_update.parallel(phi_q, phi_k, v, query, self.k_proj, key_padding_mask, self.eps,
                                             weight_dropout=self._weight_dropout())
        if self.transfer is not None:
            out = transfer.teacher_force(self, out, query, key, value, key_padding_mask)
        return self.out_proj(self._unheads(out)), None

    @property
    def windowed(self) -> bool:
        """Whether a sliding window runs beside the state (``--t2r-window``, its branch not ``linear``)."""
        return self.window is not None and self.window.active

    def _fused_from_input(self, query, key, value) -> bool:
        """Whether this parallel (training or scoring) call of self-attention runs
        ``ops.causal_relu_from_input``: relu features, long enough for the chunked form (or for the
        Triton kernels, which that op then runs itself), and the paper's additive state (the fused
        op knows no other)."""
        return (
            self.state_update.is_paper
            and not self.windowed
            and key is query
            and value is query
            and self.feature_map.relu_of_linear
            and self.folded.active
            and self.transfer is None
            and ops.parallel_form(query.size(0), query.is_cuda, self._weight_dropout() is not None, dtype=query.dtype)
            in ("chunked", "triton")
        )
