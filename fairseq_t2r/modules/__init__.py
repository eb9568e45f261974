from .feature_map_base import FEATURE_MAPS, FeatureMap, register_feature_map  # noqa: F401
from .feature_maps import build_feature_map  # noqa: F401
from .t2r_attention import T2RAttention  # noqa: F401
from .transfer import TransferRecord, recording  # noqa: F401
