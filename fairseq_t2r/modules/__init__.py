from .feature_maps import FEATURE_MAPS, FeatureMap, build_feature_map, register_feature_map  # noqa: F401
from .t2r_attention import T2RAttention  # noqa: F401
