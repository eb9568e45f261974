"""What every form shares: the defaults, the state type, the precision rule, the padding rule.

Layout everywhere: head-major ``phi_q`` (B, H, T, F), ``phi_k`` (B, H, S, F), ``v`` (B, H, S, D),
where phi_q and phi_k are the feature-mapped queries and keys and F the feature dimension.
"""
import functools
from typing import Any, Optional, Protocol, Tuple

import torch
from torch import Tensor

DEFAULT_EPS = 0.01  # the original T2R code clamps the denominator at 0.01
DEFAULT_CHUNK_SIZE = 64

State = Tuple[Tensor, Tensor]  # (S: (B, H, F, D), z: (B, H, F)): sum of phi_k v^T and of phi_k


def empty_state(phi_k: Tensor, v: Tensor) -> State:
    """The state before the first token: zeros S (B, H, F, D), z (B, H, F) in the compute dtype,
    shaped from phi_k (B, H, *, F) and v (B, H, *, D)."""
    B, H, _, F = phi_k.shape
    ct = compute_dtype(v.dtype)
    return (
        v.new_zeros(B, H, F, v.size(-1), dtype=ct),
        v.new_zeros(B, H, F, dtype=ct),
    )


class Step(Protocol):
    """The one signature of every algorithm's one-token step (``ops.STEPS``; fla's convention: one
    signature for every form, per-token inputs after q, k, v in the order g, beta). A step also
    takes options of its own after these, keyword-only (e.g. ``normalize``);
    ``tests/ops/test_signature.py`` checks every step against this declaration.

    phi_q, phi_k (B, H, 1, F), v (B, H, 1, D): the token. Per-token inputs, None where unused:
    ``log_g`` the forget gate in log space, log g <= 0 (B, H, 1) per head or (B, H, 1, F) per
    feature (None: g = 1; 0 at a padded position), ``beta`` (B, H, 1) the write strength. A step
    refuses an input its algorithm has no use for (``refuse_inputs``) rather than ignoring it.
    ``state``: what the step returned for the previous token, as the same algorithm's chunked form
    takes it (``initial_state``) and returns it (``return_state``); None: the empty state.
    ``eps``: the algorithm's numerical floor (the sum normaliser's clamp, the feature norm's
    floor; its default is the algorithm's). ``inplace``: update the given state itself (decoding
    under no_grad: no new state per token); by default the given state is left unchanged.
    Returns (out (B, H, 1, D) in v's dtype, the new state)."""

    def __call__(self, phi_q: Tensor, phi_k: Tensor, v: Tensor, log_g: Optional[Tensor] = None,
                 beta: Optional[Tensor] = None, *, state: Any = None, eps: Optional[float] = None,
                 inplace: bool = False) -> Tuple[Tensor, Any]: ...


def refuse_inputs(form: str, **inputs: Optional[Tensor]) -> None:
    """One clear ValueError when a form is given a per-token input its algorithm does not take
    (``refuse_inputs("ops.recurrent_step", log_g=log_g)``): a silently ignored gate would be a
    wrong result, not an error."""
    given = [name for name, x in inputs.items() if x is not None]
    if given:
        raise ValueError(f"{form} takes no {' or '.join(given)}: pass None, or use the form of the algorithm "
                         "that has it (ops.gated_step / ops.causal_gated for log_g, ops.delta_step / "
                         "ops.delta_chunked for beta)")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the sums for inputs of ``dtype``: fp32 for half precision (a running sum of
    thousands of positive terms overflows / loses precision in fp16), the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def autocast_off(fn):
    """Runs ``fn`` with torch.autocast disabled on its first tensor argument's device. The forms
    pick their own precision (sums in fp32 for half inputs); under autocast (fairseq ``--amp``)
    each matmul would be re-cast on its own and the dtypes would no longer agree."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next(a for a in args if isinstance(a, Tensor)).device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device_type=device, enabled=False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def causal_mask(T: int, S: int, device) -> Tensor:
    """(T, S) bool, True where query i must not see key j (j > i); T == S for self-attention."""
    return torch.ones(T, S, dtype=torch.bool, device=device).triu_(1)


def mask_padded_keys(phi_k: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
    """phi_k (B, H, S, F) with the features of padded keys zeroed; key_padding_mask (B, S), True
    where padded. A zero feature vector adds nothing to the sums, so padding needs no other
    special case in any form."""
    if key_padding_mask is None:
        return phi_k
    return phi_k.masked_fill(key_padding_mask[:, None, :, None].to(torch.bool), 0.0)


def mask_padded_log_gates(log_g: Optional[Tensor], key_padding_mask: Optional[Tensor]) -> Optional[Tensor]:
    """log_g (B, H, T) or (B, H, T, F) with 0 (g = 1: no forgetting) at padded positions
    (key_padding_mask (B, >= T), True where padded; its last T columns): with zeroed features
    (``mask_padded_keys``) a padded position then leaves any gated state exactly as it was."""
    if log_g is None or key_padding_mask is None:
        return log_g
    m = key_padding_mask[:, None, -log_g.size(2):].to(torch.bool)
    return log_g.masked_fill(m if log_g.dim() == 3 else m[..., None], 0.0)
