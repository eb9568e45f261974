"""The feature maps phi of linear attention, one small class each, chosen by name
(``--t2r-feature-map``); the interface they implement is ``FeatureMap`` in ``feature_map_base.py``.

``t2r`` and ``hedgehog`` are of the form phi(x) = activate(W_h x + b_h): their ``linear_part`` lets
the attention fold W_h into its query/key projections (REFERENCE §1, ``folding.py``), so that
queries and keys of size head_dim are never built, only the features.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from .feature_map_base import FEATURE_MAPS, FeatureMap, register_feature_map


def _per_head_linear(x: Tensor, weight: Tensor, bias=None) -> Tensor:
    # x (B, H, T, D), weight (H, F, D) -> (B, H, T, F)
    y = torch.matmul(x, weight.transpose(-1, -2))
    return y if bias is None else y + bias.unsqueeze(-2)


def _upcast(x: Tensor) -> Tensor:
    """fp32 for half-precision inputs (exp/softmax/sin of fp16 lose too much); others unchanged,
    so a float64 model stays float64 end to end."""
    return x.to(ops.compute_dtype(x.dtype))


def _linear_default_init(weight: Tensor, bias=None):
    # nn.Linear's default init, per head: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); what T2R used
    bound = 1.0 / math.sqrt(weight.size(-1))
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


@register_feature_map("t2r")
class T2RFeatureMap(FeatureMap):
    """phi(x) = relu(W_h x + b_h): the learned one-layer MLP of Kasai et al. (2021)."""

    relu_of_linear = True

    def __init__(self, num_heads, head_dim, feature_dim):
        super().__init__(num_heads, head_dim, feature_dim)
        self.weight = nn.Parameter(torch.empty(num_heads, feature_dim, head_dim))
        self.bias = nn.Parameter(torch.empty(num_heads, feature_dim))
        _linear_default_init(self.weight, self.bias)

    def linear_part(self):
        return self.weight, self.bias

    def activate(self, y, inplace=False):
        # inplace: y is a fresh projection output nobody else reads (saves one activation copy)
        return F.relu(y, inplace=inplace)

    def forward(self, x):
        return self.activate(_per_head_linear(x, self.weight, self.bias))


@register_feature_map("elu")
class EluFeatureMap(FeatureMap):
    """phi(x) = elu(x) + 1 (Katharopoulos et al. 2020); no parameters, output size = head size."""

    @property
    def output_dim(self):
        return self.head_dim

    def forward(self, x):
        return F.elu(x) + 1.0


@register_feature_map("hedgehog")
class HedgehogFeatureMap(FeatureMap):
    """phi(x) = [softmax(W_h x), softmax(-W_h x)] (Zhang et al. 2024); W_h has feature_dim/2 rows."""

    def __init__(self, num_heads, head_dim, feature_dim):
        if feature_dim % 2:
            raise ValueError(f"hedgehog needs an even feature size, got {feature_dim}: pass an even --t2r-feature-dim")
        super().__init__(num_heads, head_dim, feature_dim)
        self.weight = nn.Parameter(torch.empty(num_heads, feature_dim // 2, head_dim))
        _linear_default_init(self.weight)

    def linear_part(self):
        return self.weight, None

    def activate(self, y, inplace=False):
        yf = _upcast(y)
        return torch.cat([yf.softmax(-1), (-yf).softmax(-1)], dim=-1).to(y.dtype)

    def forward(self, x):
        return self.activate(_per_head_linear(x, self.weight))


class RandomFeatureMap(FeatureMap):
    """Random projections kept in a buffer, so a checkpoint evaluates with the draw it saved."""

    is_random = True
    num_projections = None  # set by subclasses from feature_dim

    def __init__(self, num_heads, head_dim, feature_dim):
        super().__init__(num_heads, head_dim, feature_dim)
        self.register_buffer("omega", torch.empty(num_heads, self._rows(feature_dim), head_dim))
        self.new_feature_map()

    @staticmethod
    def _rows(feature_dim):
        return feature_dim

    def new_feature_map(self):
        with torch.no_grad():
            self.omega.normal_()


@register_feature_map("rfa")
class RFAFeatureMap(RandomFeatureMap):
    """Random Fourier features of the L2-normalised input (Peng et al. 2021):
    phi(x) = sqrt(1/m) [sin(W x), cos(W x)], W ~ N(0, I) with m = feature_dim/2 rows."""

    def __init__(self, num_heads, head_dim, feature_dim):
        if feature_dim % 2:
            raise ValueError(f"rfa needs an even feature size, got {feature_dim}: pass an even --t2r-feature-dim")
        super().__init__(num_heads, head_dim, feature_dim)

    @staticmethod
    def _rows(feature_dim):
        return feature_dim // 2

    def forward(self, x):
        proj = _per_head_linear(F.normalize(_upcast(x), dim=-1), self.omega.to(_upcast(x).dtype))
        scale = 1.0 / math.sqrt(self.omega.size(1))
        return (scale * torch.cat([proj.sin(), proj.cos()], dim=-1)).to(x.dtype)


@register_feature_map("performer")
class PerformerFeatureMap(RandomFeatureMap):
    """Positive random features (Choromanski et al. 2021): phi(x) = exp(W x - |x|^2 / 2) / sqrt(m),
    an unbiased estimate of exp(q . k / sqrt(D)) when q and k are each scaled by D**-0.25."""

    # exp() of a key feature is capped here so that running sums stay finite in fp32; a
    # constant per query cancels in the normalisation, so queries are shifted by their max.
    MAX_KEY_EXPONENT = 30.0

    def _features(self, x, shift_rows: bool):
        x = _upcast(x)
        proj = _per_head_linear(x, self.omega.to(x.dtype)) - 0.5 * x.pow(2).sum(-1, keepdim=True)
        if shift_rows:
            proj = proj - proj.amax(-1, keepdim=True).detach()
        else:
            proj = proj.clamp(max=self.MAX_KEY_EXPONENT)
        return proj.exp() / math.sqrt(self.omega.size(1))

    def forward_queries(self, q):
        # q arrives scaled by D**-0.5; the symmetric split of the softmax scale is D**-0.25 each
        return self._features(q * self.head_dim ** 0.25, shift_rows=True).to(q.dtype)

    def forward_keys(self, k):
        return self._features(k * self.head_dim ** -0.25, shift_rows=False).to(k.dtype)

    def forward(self, x):
        return self.forward_keys(x)


def build_feature_map(name: str, num_heads: int, head_dim: int, feature_dim: int) -> FeatureMap:
    """The map registered as ``name``, for ``num_heads`` heads of size ``head_dim``; ValueError
    (with the fix in its message) for an unknown name or a feature size below 1."""
    if name not in FEATURE_MAPS:
        raise ValueError(f"unknown feature map {name!r}: choose one of {', '.join(sorted(FEATURE_MAPS))}")
    if feature_dim <= 0:
        raise ValueError(f"feature size must be positive, got {feature_dim}: pass --t2r-feature-dim N with N >= 1")
    return FEATURE_MAPS[name](num_heads, head_dim, feature_dim)
