"""Training: ``backmap train --config CONFIG -o RUN_DIR``.

Cluster-uniform batches from a corpus cache (:mod:`backmap_plugin.training`),
validation on held-out clusters, CSV logs of every loss term, checkpoints
that resume, seed control, CPU or CUDA. The best model (lowest validation
loss) is kept as ``RUN_DIR/model.pt`` + ``RUN_DIR/model.json``, the format
the package ships its weights in.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm import tqdm

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import martini3 as m3
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.mappings import COMMapping
from backmap_plugin.core.torch_import import seeded_generator
from backmap_plugin.io.atomic import atomic_path, atomic_write
from backmap_plugin.model import graph as G
from backmap_plugin.model.targets import measure
from backmap_plugin.model.vae import BackmapVAE, ModelConfig
from backmap_plugin.model.weights import save_model
from backmap_plugin.training.cache import INDEX_FILE, open_cache
from backmap_plugin.training.sampler import make_loader

#: Numeric keys of :class:`TrainConfig` and the interval each must lie in.
_RANGES = {
    "batch_size": "[1, inf)", "crop": "[2, inf)", "spatial_prob": "[0, 1]", "bead_noise": "[0, inf)",
    "lr": "(0, inf)", "steps": "[1, inf)", "max_minutes": "(0, inf)", "validate_every": "[1, inf)",
    "validation_batches": "[1, inf)", "checkpoint_every": "[1, inf)", "lr_factor": "(0, 1)", "lr_patience": "[0, inf)",
    "seed": "(-inf, inf)", "threads": "[1, inf)", "locator_warmup": "[0, inf)", "com_trace_noise": "[0, inf)",
    "mixed_fraction": "[0, 1]", "martini_bead_noise": "[0, inf)", "martini_trace_noise": "[0, inf)",
}
_WHOLE_NUMBERS = frozenset({"batch_size", "crop", "steps", "validate_every", "validation_batches", "checkpoint_every",
                            "lr_patience", "seed", "threads", "locator_warmup"})
#: Keys a resumed run may change (how long and where it runs, not what it trains).
RESUME_MAY_CHANGE = frozenset({"steps", "max_minutes", "device", "threads", "init"})


@dataclass
class TrainConfig:
    """What and how to train (JSON file keys; ``model`` holds ModelConfig keys)."""

    cache: str = "cache/train"
    batch_size: int = 8
    crop: int = 128
    spatial_prob: float = 0.5
    bead_noise: float = 0.05
    lr: float = 1e-3
    steps: int = 20000
    max_minutes: float = 120.0
    validate_every: int = 250
    validation_batches: int = 12
    checkpoint_every: int = 250
    lr_factor: float = 0.3
    lr_patience: int = 4
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    model: dict = field(default_factory=dict)
    #: Model file (``model.pt``) to start from: its parameters whose names
    #: and shapes match are copied, the others keep their fresh
    #: initialisation (a deeper network warm-starts from a shallower one).
    #: ``shipped:ca`` (``com``, ``martini3``): the package's own (:func:`init_path`).
    #: Ignored when resuming.
    init: str | None = None
    #: Models with a locator: steps during which the decoder reads the true
    #: C-alpha trace (plus noise of ``com_trace_noise`` or
    #: ``martini_trace_noise`` Angstrom) while the locator learns; afterwards
    #: it reads the located trace, as in use.
    locator_warmup: int = 500
    com_trace_noise: float = 0.3
    #: Fraction of crops with C-alpha beads in some regions (CALVADOS 3
    #: linkers), the others all centres of mass.
    mixed_fraction: float = 0.4
    #: Martini 3 models (``model.mapping`` = ``martini3``): Gaussian noise
    #: (Angstrom, per coordinate) on the beads and on the C-alpha trace the
    #: decoder reads (in use the trace comes from the BB beads and misses
    #: the C-alpha atoms by about 0.4 Angstrom rms).
    martini_bead_noise: float = 0.1
    martini_trace_noise: float = 0.25
    #: ``"locator"``: train a model's locator alone, on its C-alpha error (the
    #: ``locate`` term), every other parameter as ``init`` gives it (a
    #: smaller, faster locator for a trained decoder, or a locator for a
    #: trained Martini 3 decoder).
    train_only: str | None = None

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Refuse values training cannot use, naming the key (the CLI overrides some keys after loading).

        Raises
        ------
        ValueError
            A key of the wrong type or out of range.
        """
        for name, interval in _RANGES.items():
            value = getattr(self, name)
            whole = name in _WHOLE_NUMBERS
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or (
                    not whole and not math.isfinite(value)):
                raise ValueError(f"{name} must be a {'whole ' if whole else ''}number, got {value!r}")
            if not _in_interval(value, interval):
                raise ValueError(f"{name} must lie in {interval}, got {value!r}")
        for name in ("cache", "device"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be text, got {getattr(self, name)!r}")
        if self.init is not None and not isinstance(self.init, str):
            raise ValueError(f"init must be a model file's path, got {self.init!r}")
        if not isinstance(self.model, dict):
            raise ValueError(f"model must be a JSON object of model settings, got {self.model!r}")
        unknown = set(self.model) - set(ModelConfig.__dataclass_fields__)
        if unknown:
            known = sorted(ModelConfig.__dataclass_fields__)
            raise ValueError(f"model: unknown keys {sorted(unknown)} (known: {known})")
        try:
            ModelConfig(**self.model)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model: {exc}") from exc
        if self.train_only not in (None, "locator"):
            raise ValueError(f"train_only must be 'locator' or absent, got {self.train_only!r}")
        if self.train_only:
            mapping = self.model.get("mapping", ModelConfig.mapping)
            hidden = self.model.get("martini_locator_hidden", ModelConfig.martini_locator_hidden)
            if not (mapping == "com" or (mapping == "martini3" and hidden)):
                raise ValueError("train_only 'locator' needs a model with a locator: model.mapping 'com', "
                                 "or 'martini3' with martini_locator_hidden")


def _in_interval(value: float, interval: str) -> bool:
    """Whether ``value`` lies in an interval written as ``[a, b)``, ``(a, inf)`` ..."""
    low, high = (float(x) for x in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below


def load_config(path: str | None) -> TrainConfig:
    """Read a JSON training config (missing keys take defaults).

    Raises
    ------
    BackmapInputError
        Unreadable file, broken JSON, unknown keys or values training
        cannot use (:meth:`TrainConfig.check`), naming the file and the key.
    """
    if path is None:
        return TrainConfig()
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise BackmapInputError(f"{path}: cannot read the training config: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise BackmapInputError(f"{path}: the training config is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BackmapInputError(f"{path}: the training config must be a JSON object of settings")
    unknown = set(data) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise BackmapInputError(f"{path}: unknown config keys {sorted(unknown)}")
    try:
        return TrainConfig(**data)
    except ValueError as exc:
        raise BackmapInputError(f"{path}: {exc}") from exc


def com_training_beads(raw: dict, mixed_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre-of-mass beads of a collated batch, with C-alpha regions in some crops.

    In a fraction ``mixed_fraction`` of the crops 1-3 stretches of 4-30
    residues keep C-alpha beads (as CALVADOS 3 linkers do); every other
    bead is its residue's heavy-atom centre of mass
    (:class:`~backmap_plugin.core.mappings.COMMapping`, the mapping used in
    production). Gaussian noise of 0.05 Angstrom (centres of mass) and 0.15
    (C-alpha beads: CALVADOS bonds spread about 0.17) is added.

    Returns
    -------
    beads : torch.Tensor
        (B, L, 3) float32, zero on padding.
    is_com : torch.Tensor
        (B, L) bool.
    """
    xyz, present, mask = raw["xyz"].float(), raw["present"], raw["residue_mask"]
    n_crops, length = mask.shape
    is_com = mask.clone()
    for b in range(n_crops):
        if torch.rand((), generator=generator) >= mixed_fraction:
            continue
        n = int(mask[b].sum())
        for _ in range(int(torch.randint(1, 4, (), generator=generator))):
            size = int(torch.randint(4, 31, (), generator=generator))
            start = int(torch.randint(0, max(1, n - size + 1), (), generator=generator))
            is_com[b, start : start + size] = False
    safe_present = present | ~mask[..., None]  # padding: any weights, masked below
    com = COMMapping().bead_positions(xyz, safe_present.numpy(), raw["res_type"].numpy())
    ca = xyz[..., chem.SLOT_CA, :]
    sigma = torch.where(is_com, 0.05, 0.15)[..., None]
    noise = torch.randn(xyz.shape[:2] + (3,), generator=generator) * sigma
    beads = (torch.where(is_com[..., None], com, ca) + noise) * mask[..., None]
    return beads, is_com


def martini_training_beads(raw: dict, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Martini 3 beads of a collated batch, (B, L, 6, 3) float32, zero on padding and absent beads.

    Made from the atoms by :func:`backmap_plugin.core.martini3.martini3_bead_positions`
    (the mapping used in production; OXT in BB where the crop has it),
    plus Gaussian noise of ``noise`` Angstrom.
    """
    xyz, present, mask = raw["xyz"].float(), raw["present"], raw["residue_mask"]
    beads = m3.martini3_bead_positions(xyz, present | ~mask[..., None], raw["res_type"].numpy())
    exists = torch.from_numpy(m3.BEAD_EXISTS.copy())[raw["res_type"]] & mask[..., None]
    beads = beads + torch.randn(beads.shape, generator=generator) * noise
    return beads * exists[..., None]


def batch_terms(model: BackmapVAE, raw: dict, device: torch.device, located: bool = True,
                generator: torch.Generator | None = None, cfg: TrainConfig | None = None) -> dict:
    """Loss terms of one collated batch from the sampler.

    For a centre-of-mass model the beads are made from the atoms
    (:func:`com_training_beads`), the locator's C-alpha error is the
    ``locate`` term, and the decoder reads the located trace (``located``)
    or the true one plus noise. A Martini 3 model reads the true trace plus
    noise (``cfg.martini_trace_noise``), or, if it has a locator
    (:class:`~backmap_plugin.model.martini_locator.MartiniLocator`), the
    located trace where the locator places a residue (``located``) and the
    locator's error is the ``locate`` term. With ``cfg.train_only ==
    "locator"`` the locator's terms are all there is (the decoder is not run).
    """
    mask = raw["residue_mask"]
    xyz_dense = raw["xyz"].to(device)
    if model.config.mapping == "com":
        cfg = cfg or TrainConfig()
        generator = generator or seeded_generator(0)
        beads, is_com = com_training_beads(raw, cfg.mixed_fraction, generator)
        beads, is_com = beads.to(device), is_com.to(device)
        cg = G.make_batch(beads, raw["res_type"], mask, raw["segment"])
        located_ca = model.locator(cg, is_com)
        true_ca = xyz_dense[..., chem.SLOT_CA, :].float()
        err = ((located_ca - true_ca) ** 2).sum(-1)[is_com & mask.to(device)]
        if cfg.train_only == "locator":
            return _locate_terms(err, {"total": 0.0}, model.config.w_locate)
        if located:
            trace = located_ca.detach()
        else:
            noise = torch.randn(true_ca.shape, generator=generator).to(device) * cfg.com_trace_noise
            trace = torch.where(is_com[..., None], true_ca + noise, true_ca)
        batch = G.make_batch(trace, raw["res_type"], mask, raw["segment"])
        batch.bead_features = G.bead_features(batch, beads, is_com)
    elif model.config.mapping == "martini3":
        cfg = cfg or TrainConfig()
        generator = generator or seeded_generator(0)
        beads = martini_training_beads(raw, cfg.martini_bead_noise, generator).to(device)
        true_ca = xyz_dense[..., chem.SLOT_CA, :].float()
        trace = true_ca + torch.randn(true_ca.shape, generator=generator).to(device) * cfg.martini_trace_noise
        if hasattr(model, "locator"):
            located_ca, found = model.locator(G.make_batch(beads[..., 0, :], raw["res_type"], mask, raw["segment"]),
                                              beads)
            err = ((located_ca - true_ca) ** 2).sum(-1)[found]
            if cfg.train_only == "locator":
                return _locate_terms(err, {"total": 0.0}, model.config.w_locate)
            if located:
                trace = torch.where(found[..., None], located_ca.detach(), trace)
        batch = G.make_batch(trace, raw["res_type"], mask, raw["segment"])
        batch.bead_features = G.martini_bead_features(batch, beads)
    else:
        batch = G.make_batch(raw["beads"].float().to(device), raw["res_type"], mask, raw["segment"])
    xyz = batch.to_flat(xyz_dense.double())
    present = batch.to_flat(raw["present"].to(device))
    targets = measure(xyz, present, batch.flat_res_type, batch.layout)
    terms = model.loss(batch, targets)
    if hasattr(model, "locator"):
        terms = _locate_terms(err, terms, model.config.w_locate)
    return terms


def _locate_terms(err: torch.Tensor, terms: dict, weight: float) -> dict:
    """``terms`` with the locator's: ``locate`` (mean squared C-alpha error), ``locate_rmsd``, added to ``total``."""
    locate = err.mean() if err.numel() else err.new_zeros(())
    return {**terms, "locate": locate, "locate_rmsd": locate.sqrt().detach(), "total": terms["total"] + weight * locate}


def _batches(cache, cfg: TrainConfig, split: str, seed: int, epoch_size: int):
    return make_loader(cache, split=split, batch_size=cfg.batch_size, crop=cfg.crop, spatial_prob=cfg.spatial_prob,
                       bead_noise=cfg.bead_noise if split == "train" else 0.0, epoch_size=epoch_size, seed=seed)


def validate(model: BackmapVAE, cache, cfg: TrainConfig, device) -> dict:
    """Mean loss terms over fixed validation batches (held-out clusters)."""
    model.eval()
    sums: dict = {}
    n = 0
    generator = seeded_generator(12345)
    with torch.no_grad():
        for raw in _batches(cache, cfg, "val", seed=12345, epoch_size=cfg.validation_batches * cfg.batch_size):
            for k, v in batch_terms(model, raw, device, generator=generator, cfg=cfg).items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
    model.train()
    return {k: v / max(1, n) for k, v in sums.items()}


#: What a run folder holds; a run that starts over removes them first.
RUN_FILES = ("checkpoint.pt", "train.csv", "val.csv", "model.pt", "model.json", "config.json")


def train(cfg: TrainConfig, run_dir: str, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> dict:
    """Train (or resume) a model; returns the last validation terms.

    Everything is checked before the run folder is touched (the config,
    the cache, the model settings, a resumed run's settings), so a mistake
    never removes an earlier run. A checkpoint is saved every
    ``cfg.checkpoint_every`` steps, at the end, and when the run is
    interrupted (Ctrl-C). ``model.pt`` is saved at every validation (every
    ``cfg.validate_every`` steps) that improves on the best so far (every
    validation without a validation split) and at the end, after the
    steps since the last one are validated. One run writes a folder at a
    time (:class:`~backmap_plugin.io.lock.OutputLock`).

    Parameters
    ----------
    cfg : TrainConfig
        Relative ``cache`` and ``init`` paths are taken from the current
        directory; the run folder's ``config.json`` records them absolute.
    run_dir : str
        Output folder: ``checkpoint.pt``, ``train.csv``, ``val.csv``,
        ``model.pt`` / ``model.json`` (best so far), ``config.json``.
    resume : bool
        Continue from ``run_dir/checkpoint.pt`` (the logs keep the rows up
        to its step) with the settings the run was started with; only
        :data:`RESUME_MAY_CHANGE` may differ. A resumed run trains what the
        uninterrupted run would have trained.
    progress : bool
        Progress bar and a first line on stderr.
    overwrite : bool
        Start over in a folder that holds a run (its files are removed once
        everything is checked).

    Raises
    ------
    ValueError
        ``run_dir`` holds a run and neither ``resume`` nor ``overwrite`` is
        given; a resumed run given other settings; a C-alpha model given a
        cache of other beads; a setting training cannot use; a loss that is
        not finite (the training diverged: the checkpoint of the last step
        before stays).
    FileNotFoundError
        ``resume`` without a checkpoint.
    """
    from backmap_plugin.core.device import select_device
    from backmap_plugin.io.lock import OutputLock

    cfg.check()
    data_name = cfg.cache  # (as given, for model.json)
    cfg = replace(cfg, cache=os.path.abspath(cfg.cache), init=init_path(cfg.init))
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    found = [name for name in RUN_FILES if os.path.exists(os.path.join(run_dir, name))]
    if resume:
        if not os.path.exists(ckpt_path):
            raise FileNotFoundError(f"{ckpt_path}: no checkpoint to resume from")
        _check_resumed_settings(cfg, run_dir)
    elif found and not overwrite:
        raise ValueError(f"{run_dir} holds a training run ({', '.join(found)}): pass resume=True to continue "
                         "it or overwrite=True to start over")
    cache = open_cache(cfg.cache)
    model_config = ModelConfig(**cfg.model)
    beads = cache.settings.get("mapping", "ca")
    if model_config.mapping == "ca" and beads != "ca":  # (the other models map the cache's atoms themselves)
        raise ValueError(f"{cfg.cache} holds {beads} beads; a C-alpha model (model.mapping 'ca') trains on a cache "
                         "of C-alpha beads (backmap data build --mapping ca), or set model.mapping")
    summary = {
        "cache": data_name, "entries": len(cache.entries),
        "train_entries": len(cache.select("train")), "val_entries": len(cache.select("val")),
    }
    if not summary["train_entries"]:
        raise ValueError(f"{cfg.cache}: no entries in split 'train'")
    if cfg.init and not resume and not os.path.isfile(cfg.init):
        raise ValueError(f"init: no model file {cfg.init} (relative paths are taken from the current directory)")
    device = select_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = BackmapVAE(model_config).to(device)
    os.makedirs(run_dir, exist_ok=True)
    with OutputLock(run_dir, who="backmap train"):
        if not resume:
            for name in found:
                os.remove(os.path.join(run_dir, name))
        return _train(cfg, run_dir, cache, model, device, summary, resume, progress)


#: ``init`` values that name the package's own weights, wherever it is installed: ``shipped:<beads>``.
SHIPPED_INIT = "shipped:"


def init_path(init: str | None) -> str | None:
    """The model file of a config's ``init``: ``shipped:ca`` (``com``, ``martini3``) is the package's model
    for those beads (:func:`~backmap_plugin.model.weights.shipped_model_path`), a relative path is taken from
    the current directory.

    Raises
    ------
    ValueError
        ``shipped:`` with beads the package has no model for.
    """
    if init is None:
        return None
    if init.startswith(SHIPPED_INIT):
        from backmap_plugin.model.weights import SHIPPED_MODELS, shipped_model_path

        path = shipped_model_path(init[len(SHIPPED_INIT):])
        if path is None:
            raise ValueError(f"init: the package ships no model {init!r} (known: "
                             f"{', '.join(SHIPPED_INIT + beads for beads in SHIPPED_MODELS)})")
        return path
    return os.path.abspath(init)


def _check_resumed_settings(cfg: TrainConfig, run_dir: str) -> None:
    """Refuse to resume a run with other settings than it was started with (but :data:`RESUME_MAY_CHANGE`)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    started = load_config(path)
    started = replace(started, cache=os.path.abspath(started.cache))

    def same(key):  # (model settings spelt out at their defaults are the same settings)
        was, now = getattr(started, key), getattr(cfg, key)
        return ModelConfig(**was) == ModelConfig(**now) if key == "model" else was == now

    changed = [key for key in asdict(cfg) if key not in RESUME_MAY_CHANGE and not same(key)]
    if changed:
        was = ", ".join(f"{key} {getattr(started, key)!r} (now {getattr(cfg, key)!r})" for key in changed)
        raise ValueError(f"{run_dir}: cannot resume with other settings than the run started with: {was}; resume "
                         f"without --config, change only {', '.join(sorted(RESUME_MAY_CHANGE - {'init'}))}, or start "
                         "over with overwrite=True")


def _train(cfg: TrainConfig, run_dir: str, cache, model: BackmapVAE, device, summary: dict, resume: bool,
           progress: bool) -> dict:
    """The training loop of :func:`train`, once everything is checked and the folder is locked."""
    opt = torch.optim.Adam((model.locator if cfg.train_only else model).parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience)
    step, best = 0, math.inf
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    model_path = os.path.join(run_dir, "model.pt")
    digest = cache_digest(cfg.cache)
    if resume:
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ValueError(f"{ckpt_path}: the checkpoint does not fit the model settings of {run_dir}/config.json "
                             f"({str(exc).splitlines()[0]}); start over with overwrite=True") from exc
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, best = state["step"], state["best"]
        if state.get("cache_index_sha256", digest) != digest:
            raise ValueError(f"{cfg.cache} changed since {ckpt_path} was saved (rebuilt with other files or "
                             "settings): the resumed run would go on with other data; start over with overwrite=True, or "
                             f"start a new run with init {model_path}")
        torch.set_rng_state(state["rng"])
        for name in ("train.csv", "val.csv"):  # rows logged after the checkpoint are logged again
            _keep_log_rows(os.path.join(run_dir, name), step)
    elif cfg.init:
        copied = warm_start(model, cfg.init)
        print(f"init: {len(copied)} of {len(model.state_dict())} tensors from {cfg.init}", file=sys.stderr)
    with atomic_write(os.path.join(run_dir, "config.json")) as f:
        json.dump(asdict(cfg), f, indent=1)
    if progress:
        print(f"train: {model.config.mapping} model, {summary['train_entries']} train / {summary['val_entries']} "
              f"validation entries of {cfg.cache}, {device.type}, {torch.get_num_threads()} thread(s), steps {step} -> "
              f"{cfg.steps}", file=sys.stderr)
    if not summary["val_entries"]:
        print(f"warning: {cfg.cache} has no validation entries (see backmap data build --help, --val-fraction): no "
              "validation figures, and model.pt is the latest model, not the best", file=sys.stderr)
    last_val: dict = {}

    def save_model_if_better():
        nonlocal best, last_val
        if summary["val_entries"]:
            with torch.random.fork_rng(devices=[]):  # (a run resumed after it draws what one that went on does)
                last_val = validate(model, cache, cfg, device)
            _log(run_dir, "val.csv", step, last_val, opt.param_groups[0]["lr"])
            if not math.isfinite(last_val["total"]):
                raise ValueError(f"training diverged: the validation loss at step {step} is not finite; "
                                 "lower lr and start over")
            sched.step(last_val["total"])
            rmsd = last_val.get("rmsd", last_val.get("locate_rmsd"))
            bar.set_postfix(val=f"{last_val['total']:.3f}", rmsd=f"{rmsd:.2f}")
        # without a validation split the latest model is kept
        if not summary["val_entries"] or last_val["total"] < best or not os.path.exists(model_path):
            best = min(best, last_val.get("total", best))
            save_model(model, model_path, {"step": step, "validation": last_val, "data": summary})

    t0 = time.time()
    # each block of batches has its own sampler seed, so a resumed run draws
    # what the uninterrupted run would have drawn from there on
    block = cfg.validate_every
    bar = tqdm(total=cfg.steps, initial=step, unit="step", disable=not progress, desc="train")
    rng = torch.get_rng_state()  # (at the end of the last whole step: what a checkpoint keeps)
    try:
        while step < cfg.steps and (time.time() - t0) / 60 < cfg.max_minutes:
            loader = _batches(cache, cfg, "train", seed=cfg.seed * 100003 + step // block,
                              epoch_size=block * cfg.batch_size)
            for i, raw in enumerate(loader):
                if i < step % block:
                    continue
                generator = seeded_generator(cfg.seed * 1000003 + step)
                terms = batch_terms(model, raw, device, located=step >= cfg.locator_warmup, generator=generator,
                                    cfg=cfg)
                if not torch.isfinite(terms["total"]):
                    _save_checkpoint(ckpt_path, model, opt, sched, step, best, rng, digest)
                    losses = ", ".join(f"{k} {float(v.detach()):.3g}" for k, v in terms.items())
                    raise ValueError(f"training diverged at step {step + 1}: the loss is not finite ({losses}); the "
                                     f"checkpoint of step {step} is kept; lower lr and start over")
                opt.zero_grad()
                terms["total"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                step += 1
                rng = torch.get_rng_state()
                bar.update(1)
                _log(run_dir, "train.csv", step, terms, opt.param_groups[0]["lr"])
                if step % cfg.validate_every == 0:
                    save_model_if_better()
                if step % cfg.checkpoint_every == 0 or step >= cfg.steps:
                    _save_checkpoint(ckpt_path, model, opt, sched, step, best, rng, digest)
                if step >= cfg.steps or (time.time() - t0) / 60 >= cfg.max_minutes:
                    break
        if step == 0:
            raise ValueError(f"no step was trained in max_minutes = {cfg.max_minutes:g}")
        if step % cfg.validate_every or not os.path.exists(model_path):  # the steps since the last validation
            save_model_if_better()
    except KeyboardInterrupt:  # keep what was trained: the checkpoint of the last whole step
        _save_checkpoint(ckpt_path, model, opt, sched, step, best, rng, digest)
        raise
    finally:
        bar.close()
    _save_checkpoint(ckpt_path, model, opt, sched, step, best, rng, digest)
    return last_val


def _save_checkpoint(path: str, model, opt, sched, step: int, best: float, rng: torch.Tensor, digest: str) -> None:
    """Everything :func:`train` needs to resume (``resume=True``), written atomically.

    ``rng`` is torch's global random state at the end of step ``step`` (a
    step stopped half-way has drawn some of its noise); ``digest`` the
    cache's :func:`cache_digest`.
    """
    # torch.save names the archive inside after the file: "<stem>.tmp" keeps the name "<stem>"
    with atomic_path(path, temporary=os.path.splitext(path)[0] + ".tmp") as tmp:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "step": step, "best": best, "rng": rng, "cache_index_sha256": digest}, tmp)


def cache_digest(cache_dir: str) -> str:
    """SHA-256 of a cache's index (its entries, clusters and splits): a rebuilt cache gets another."""
    with open(os.path.join(cache_dir, INDEX_FILE), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def warm_start(model: BackmapVAE, path: str) -> list[str]:
    """Copy the parameters of the model file ``path`` whose names and shapes match ``model``'s.

    Returns the names copied.
    """
    source = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    match = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(match, strict=False)
    return sorted(match)


def _keep_log_rows(path: str, step: int) -> None:
    """Keep the rows of a CSV log up to ``step`` (a resumed run logs the later steps again)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [row for row in rows[1:] if row and int(float(row[0])) <= step]
    if len(kept) < len(rows):
        with atomic_write(path, newline="") as f:  # as _log writes them
            csv.writer(f).writerows(kept)


def _log(run_dir: str, name: str, step: int, terms: dict, lr: float) -> None:
    path = os.path.join(run_dir, name)
    row = {"step": step, "lr": lr, **{k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}}
    if os.path.exists(path):
        with open(path) as f:
            header = f.readline().strip().split(",")
        if header != list(row):  # terms changed (a resumed run with other code): keep the old log aside
            os.replace(path, path.replace(".csv", f".before-{step}.csv"))
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
