"""The feature-map interface (after fast-transformers' ``feature_maps/base.py``) and its registry.

A feature map phi turns queries and keys of one head (size ``head_dim``) into non-negative
features (size ``output_dim``) whose dot products stand in for exp(q . k): linear attention is
softmax attention with exp(q . k) replaced by phi(q) . phi(k). Maps with parameters keep one set
per head. The concrete maps live in ``feature_maps.py``.
"""
from typing import Dict, Optional, Tuple, Type

from torch import Tensor, nn

from .registry import registrar

FEATURE_MAPS: Dict[str, Type["FeatureMap"]] = {}  # name (--t2r-feature-map) -> class


# class decorator: make a FeatureMap subclass available as ``--t2r-feature-map name``
register_feature_map = registrar(FEATURE_MAPS, "feature map")


class FeatureMap(nn.Module):
    """Base of every feature map. Subclasses implement ``forward`` (or both ``forward_queries`` and
    ``forward_keys``); maps of the form phi(x) = act(W_h x + b_h) also implement ``linear_part``
    and ``activate``, which lets the attention fold W_h into its projections (``folding.py``)."""

    # whether the map draws random features: training redraws them at every forward
    is_random = False
    # whether phi = relu(linear_part): training may then run ops.causal_relu_from_input
    relu_of_linear = False

    def __init__(self, num_heads: int, head_dim: int, feature_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.feature_dim = feature_dim

    @property
    def output_dim(self) -> int:
        """Size of phi(x), the F of every state (F, D + 1) per head."""
        return self.feature_dim

    def new_feature_map(self) -> None:
        """Redraw random features (a no-op for deterministic maps)."""

    def forward_queries(self, q: Tensor) -> Tensor:
        """phi(q): (B, H, T, D) -> (B, H, T, output_dim); q arrives scaled by D**-0.5, as in softmax."""
        return self(q)

    def forward_keys(self, k: Tensor) -> Tensor:
        """phi(k): (B, H, T, D) -> (B, H, T, output_dim); k arrives unscaled."""
        return self(k)

    def linear_part(self) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
        """(W_h (H, F', D), b_h (H, F') or None) when phi(x) = activate(W_h x + b_h), else None."""
        return None

    def activate(self, y: Tensor, inplace: bool = False) -> Tensor:
        """activate(y): (..., F') pre-activations -> (..., output_dim) features. Only maps whose
        ``linear_part`` is not None define it; ``inplace`` is a hint (the map may overwrite y)."""
        raise NotImplementedError(f"{type(self).__name__} has no linear part to activate")
