"""``t2r-convert SOFTMAX.pt OUT.pt``: write the swapped (not yet finetuned) T2R checkpoint.

With ``--transfer-data DATA --transfer-updates N`` it also runs stage one, attention transfer
(``stage_one.py``): fairseq-train with ``--criterion t2r_attention_transfer`` fits the new feature
maps to the softmax attention before OUT is written; everything else is unchanged.

Every tensor of the softmax checkpoint is kept as it is; the feature maps are added, freshly
initialised; the architecture becomes its ``t2r_`` twin. Reads checkpoints saved by current
fairseq (``cfg``) and the pre-hydra released format (``args`` Namespace). Never writes over its
input, refuses an existing output unless ``--force``, and writes atomically (temp file + rename),
so an interrupted run leaves no half-written checkpoint.
"""
import argparse
import logging
import os
import sys
from argparse import Namespace

import torch

# patches first: importing it hides fairseq's known-harmless notices before stage_one imports fairseq
from . import checkpoint, patches, stage_one  # noqa: F401
from .errors import RequiresUserDir, T2RUserError
from .interrupts import one_line_on_interrupt

T2R_FAMILIES = {"transformer_lm": "t2r_transformer_lm", "transformer": "t2r_transformer"}


def build_parser():
    from .config import ConvertConfig, add_options

    p = argparse.ArgumentParser(prog="t2r-convert", description=__doc__.split("\n\n")[0])
    # the two paths stay plain positionals: gen_parser_from_dataclass makes every field an --option
    # (a field without default becomes a required --option), and "t2r-convert IN OUT" is the interface
    p.add_argument("input", help="softmax fairseq checkpoint (transformer_lm or transformer family)")
    p.add_argument("output", help="where to write the T2R checkpoint")
    add_options(p, ConvertConfig)
    stage_one.add_options(p)
    return p


def twin_arch(arch):
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    family = ARCH_MODEL_NAME_REGISTRY.get(arch)
    if family in T2R_FAMILIES.values():
        raise T2RUserError(f"the checkpoint is already a T2R model (arch {arch}): finetune it directly")
    if family not in T2R_FAMILIES:
        raise T2RUserError(
            f"arch {arch!r} is not a fairseq transformer_lm or transformer architecture: "
            f"t2r-convert converts those two families only"
        )
    return "t2r_" + arch, family


def set_model_config(state, twin, t2r_options):
    """Point the checkpoint's saved config at the twin architecture and record the T2R options."""
    from omegaconf import OmegaConf

    if state.get("cfg") is not None and state["cfg"].get("model") is not None:
        cfg = state["cfg"]
        if OmegaConf.is_config(cfg):
            cfg = OmegaConf.to_container(cfg, resolve=False)
        model_cfg = cfg["model"]
        if isinstance(model_cfg, Namespace):
            model_cfg.arch = twin
            model_cfg._name = twin
            vars(model_cfg).update(t2r_options)
        else:
            model_cfg["_name"] = twin
            if "arch" in model_cfg:
                model_cfg["arch"] = twin
            model_cfg.update(t2r_options)
        state["cfg"] = cfg
    if state.get("args") is not None:
        state["args"].arch = twin
        vars(state["args"]).update(t2r_options)


def check_output(input_path, output_path, force):
    if os.path.exists(input_path) and os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise T2RUserError(f"output {output_path} is the input checkpoint: choose another output path")
    if os.path.exists(output_path) and not force:
        raise T2RUserError(f"output {output_path} already exists: choose another path or pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(parent):
        raise T2RUserError(f"the directory of output {output_path} does not exist: create {parent} first")


def convert(input_path, output_path, t2r_options, seed=1, force=False, extra=None):
    """Returns (twin arch, number of copied tensors, names of new tensors). ``extra``: more
    top-level entries for the checkpoint (e.g. ``t2r_select``, layer_select.py)."""
    from . import models  # noqa: F401  registers the t2r_ architectures
    from .models.conversion import attention_specs, new_tensors, summarize_names

    check_output(input_path, output_path, force)
    state = checkpoint.load(input_path)
    args, arch = checkpoint.model_config(state)
    twin, family = twin_arch(arch)
    if family == "transformer_lm":  # cross-attention options exist for translation models only
        t2r_options = {k: v for k, v in t2r_options.items() if "cross" not in k}
    vars(args).update(t2r_options)
    torch.manual_seed(seed)
    added = new_tensors(args, with_cross=(family == "transformer"))
    sd = state["model"]
    for spec in attention_specs(args, with_cross=(family == "transformer")):
        if not any(k.startswith(spec.path + ".") for k in sd):
            raise T2RUserError(
                f"checkpoint has no attention module {spec.path} although its config says "
                f"{args.decoder_layers} decoder layers: the file is inconsistent"
            )
    copied = len(sd)
    sd.update(added)
    set_model_config(state, twin, t2r_options)
    state.pop("last_optimizer_state", None)  # belongs to the softmax model's parameter list
    state["t2r_converted_from"] = os.path.abspath(input_path)
    state[checkpoint.MARKER_KEY] = RequiresUserDir  # fairseq without --user-dir then names the plugin
    state.update(extra or {})
    checkpoint.atomic_write(output_path, state)
    logging.getLogger("fairseq_t2r").info(
        f"wrote {output_path}: arch {twin}, copied {copied} tensors unchanged, "
        f"initialised {len(added)} new tensors: {summarize_names(list(added))}"
    )
    return twin, copied, list(added)


def convert_with_transfer(input_path, output_path, t2r_options, transfer_options, seed=1, force=False, extra=None):
    """Swap, then attention transfer (stage one); writes OUT only when both succeeded."""
    check_output(input_path, output_path, force)  # before training, not after
    with stage_one.work_dir_beside(output_path) as work:
        swapped = os.path.join(work, "swapped.pt")
        twin, _, _ = convert(input_path, swapped, t2r_options, seed=seed, force=True, extra=extra)
        trained = stage_one.run(swapped, work, transfer_options, seed)
        state = checkpoint.load(swapped)
        names = stage_one.merge_feature_maps(state, trained)
        state["t2r_attention_transfer"] = {
            "data": os.path.abspath(transfer_options.transfer_data),
            "updates": transfer_options.transfer_updates,
            "lr": transfer_options.transfer_lr or stage_one.DEFAULTS["lr"],
            "xent_weight": transfer_options.transfer_xent_weight or 0.0,
            "fairseq_train_options": list(transfer_options.train_options),
        }
        check_output(input_path, output_path, force)  # still free after the training
        checkpoint.atomic_write(output_path, state)
    from .models.conversion import summarize_names

    logging.getLogger("fairseq_t2r").info(
        f"wrote {output_path}: arch {twin}, feature maps fitted by attention transfer "
        f"({transfer_options.transfer_updates} updates): {summarize_names(names)}; every other tensor unchanged"
    )


def convert_selecting(args, t2r_options):
    """--t2r-keep-softmax N --t2r-select RULE (layer_select.py): choose the layers kept softmax, convert
    the others, write OUT; returns the kept layers. A positional rule is plain conversion (with stage
    one if asked) with --t2r-layers set; a measured one converts every layer with stage one, scores
    each layer on the result, and drops the kept layers' new tensors."""
    from . import layer_select as sel

    num_layers = int(checkpoint.model_config(checkpoint.load(args.input))[0].decoder_layers)
    rule, keep, transfer = args.t2r_select or "last", args.t2r_keep_softmax, stage_one.requested(args)
    sel.check_request(keep, rule, t2r_options.get("t2r_layers"), num_layers, transfer)
    if args.t2r_select_batches <= 0:
        raise T2RUserError(f"--t2r-select-batches must be positive, got {args.t2r_select_batches}")
    if rule not in sel.MEASURED:
        kept = sel.by_position(rule, keep, num_layers)
        options = {**t2r_options, "t2r_layers": ",".join(map(str, sel.converted(kept, num_layers)))}
        extra = {"t2r_select": {"rule": rule, "keep_softmax": keep, "kept": kept, "scores": None}}
        if transfer:
            convert_with_transfer(args.input, args.output, options, args, seed=args.seed, force=args.force, extra=extra)
        else:
            convert(args.input, args.output, options, seed=args.seed, force=args.force, extra=extra)
        logging.getLogger("fairseq_t2r").info(sel.log_line(rule, kept, num_layers))
        return kept
    check_output(args.input, args.output, args.force)
    with stage_one.work_dir_beside(args.output) as work:
        every = os.path.join(work, "every_layer.pt")
        convert_with_transfer(args.input, every, {**t2r_options, "t2r_layers": None}, args, seed=args.seed, force=True)
        from fairseq import checkpoint_utils

        ms, _, task = checkpoint_utils.load_model_ensemble_and_task([every], arg_overrides={"data": args.transfer_data})
        batches = sel.first_batches(task, ms[0], args.t2r_select_batches, args.transfer_max_tokens)
        scores = sel.layer_scores(ms[0], batches, rule, task.target_dictionary.pad())
        kept = sel.by_score(scores, keep)
        state = checkpoint.load(every)
        for name in [n for n in state["model"] if checkpoint.is_new_tensor(n)]:
            if any(name.startswith(f"decoder.layers.{i}.") for i in kept):
                del state["model"][name]
        twin = checkpoint.model_config(state)[1]
        set_model_config(state, twin, {"t2r_layers": ",".join(map(str, sel.converted(kept, num_layers)))})
        state["t2r_select"] = {"rule": rule, "keep_softmax": keep, "kept": kept, "scores": scores,
                               "batches": args.t2r_select_batches}
        check_output(args.input, args.output, args.force)  # still free after the training
        checkpoint.atomic_write(args.output, state)
    where = f"after {args.transfer_updates} updates of attention transfer, on {args.t2r_select_batches} train batches"
    logging.getLogger("fairseq_t2r").info(sel.log_line(rule, kept, num_layers, scores, where))
    return kept


def check_swap_options(args):
    if args.t2r_feature_dim <= 0 or (args.t2r_cross_feature_dim is not None and args.t2r_cross_feature_dim <= 0):
        raise T2RUserError("feature sizes must be positive: pass --t2r-feature-dim N with N >= 1")


@one_line_on_interrupt("t2r-convert", "the output was not written and no partial file is left: rerun the same "
                                      "command to start over")
def cli_main(argv=None):
    from .config import TransferConfig, fill_defaults, swap_options

    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO, stream=sys.stdout)
    own, train_options = stage_one.split_argv(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(own)
    args.train_options = train_options
    check_swap_options(args)
    if args.t2r_keep_softmax is not None or args.t2r_select is not None:
        if stage_one.requested(args):
            stage_one.check_options(args)
            fill_defaults(args, TransferConfig)
        convert_selecting(args, swap_options(args))
    elif stage_one.requested(args):
        stage_one.check_options(args)
        fill_defaults(args, TransferConfig)  # the options not given get their defaults only now
        convert_with_transfer(args.input, args.output, swap_options(args), args, seed=args.seed, force=args.force)
    else:
        convert(args.input, args.output, swap_options(args), seed=args.seed, force=args.force)


if __name__ == "__main__":
    cli_main()
