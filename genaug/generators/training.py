"""The training loop shared by every family, on Hugging Face `accelerate`.

The same code runs on the CPU, one GPU, or `accelerate launch --num_processes N`. Batches are a
pure function of (seed, step): each epoch is a seeded permutation of the real images and
`batch_size` is the global batch, split between the processes (each takes batch_size / N), so
one process and N processes see the same images per step and the effective batch never depends
on the launch. All other randomness (noise, time steps, augmentation) comes from one
`torch.Generator` per process, seeded from (seed, rank) with rank 0 keeping `seed`, and every
process's generator state is written into the checkpoint with the model, EMA, optimizer and
scheduler states (`accelerator.save_state`, which also keeps every process's global RNG states).
Only the main process writes files; checkpoints go to a temporary folder renamed into place, so
a killed run keeps its last good checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.images import save_grid, to_model_range, to_uint8
from ..device import resolve_device
from ..errors import GenaugError
from ..io import atomic_dir, atomic_path, replace_dir, write_json
from .ddpm_pool import check_pool_size, check_share
from .base import GenerativeModel
from .registry import get_family

TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 2000,
    "batch_size": 32,
    "seed": 0,
    "log_every": 50,
    "checkpoint_every": "auto",  # every 10% of the steps (at least every step of very short runs)
    "sample_every": 1000,
    "grid_size": 16,
    "keep_checkpoints": 2,
    "mixed_precision": "auto",  # auto: bf16 (fp16 without bf16) on CUDA, full precision elsewhere; or no|bf16|fp16
    "channels_last": False,  # NHWC memory format for the networks and batches
    "compile": False,  # torch.compile through accelerate: true = inductor, or a dynamo backend's name (eager, ...)
    "select_by_fid": False,  # keep the kept checkpoint (and DCGAN raw/EMA weights) with the best FID
    "log_with": None,  # an accelerate tracker (tensorboard, ...): the logged losses go there too, under RUN/trackers
}
TRACKERS = "trackers"
CHECKPOINTS = "checkpoints"
LOG_NAME = "train_log.jsonl"
MODEL_DIR = "model"
RUN_INFO = "genaug.json"


class TrainingInterrupted(GenaugError):
    """Ctrl-C or SIGTERM during training; the message says where to resume."""


def check_tracker(name: str | None) -> str | None:
    """An accelerate tracker whose package is installed, or a one-line refusal naming what to install."""
    if name is None:
        return None
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    if name not in LOGGER_TYPE_TO_CLASS:
        raise GenaugError(f"unknown tracker {name!r} for log_with; accelerate knows {', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
    from accelerate.utils import is_tensorboard_available

    if name == "tensorboard" and not is_tensorboard_available():
        raise GenaugError("log_with tensorboard needs the tensorboard package: pip install tensorboard")
    return name


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process `rank`'s generator: rank 0 keeps `seed`, so one process is unchanged."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 7_919) % 2 ** 63


class TrainState:
    """Step counter and this process's random generator, checkpointed with the model.

    The main process writes the checkpoint, so before each save `gather` collects every process's
    generator state; on load each process takes its own.
    """

    def __init__(self, seed: int, device: torch.device, rank: int = 0, world: int = 1):
        self.step = 0
        self.rank, self.world = rank, world
        self.rng = torch.Generator(device=device).manual_seed(rank_seed(seed, rank))
        self.rng_by_rank: list[torch.Tensor] | None = None

    def gather(self) -> None:
        from accelerate.utils import gather_object

        own = self.rng.get_state()
        self.rng_by_rank = gather_object([own]) if self.world > 1 else [own]

    def state_dict(self) -> dict:
        return {"step": self.step, "rng_by_rank": self.rng_by_rank or [self.rng.get_state()]}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        states = state.get("rng_by_rank") or [state["rng"]]  # "rng": one process's state, genaug 0.1
        if len(states) != self.world:
            raise GenaugError(f"this checkpoint was written by {len(states)} training process(es), this run has "
                              f"{self.world}: resume with the same number of processes")
        own = states[self.rank]
        self.rng.set_state(own.cpu() if hasattr(own, "cpu") else own)


def check_global_batch(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise GenaugError(f"batch_size {batch_size} is the global batch and must divide among the {world} "
                          f"processes; choose a multiple of {world}")


def balanced_indices(step: int, groups: list[list[int]], k: int, seed: int) -> list[int]:
    """`k` positions at `step` with every group equally likely: `k // G` from each of the G groups (each
    its own endless stream of seeded permutations) and the remainder from groups chosen afresh each
    step, so no group's size sets its share of the batch."""
    rng = torch.Generator().manual_seed(seed * 100_003 + step)
    extra = torch.randperm(len(groups), generator=rng)[: k % len(groups)].tolist()
    out: list[int] = []
    for g, members in enumerate(groups):
        take = k // len(groups) + (g in extra)
        if take:
            out += [members[i] for i in batch_indices(step, len(members), take, seed * 31 + g + 1)]
    return out


def batch_indices(step: int, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Process `rank`'s share of the global batch at `step` in an endless stream of seeded per-epoch
    permutations: the global batch is `batch_size` images, each of `world` processes takes a
    contiguous `batch_size / world` of them."""
    check_global_batch(batch_size, world)
    pos = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        take = min(batch_size - len(out), n - offset)
        out += perm[offset: offset + take].tolist()
        pos += take
    share = batch_size // world
    return out[rank * share: (rank + 1) * share]


def checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / CHECKPOINTS
    return sorted(folder.glob("step-*")) if folder.is_dir() else []


def mixed_precision_for(setting: str, device: torch.device) -> str:
    """`auto`: bf16 (fp16 where bf16 is missing) on a CUDA device, full precision elsewhere; the
    choice follows the device the run trains on, not whether the machine has a GPU."""
    if setting not in ("auto", "no", "fp16", "bf16"):
        raise GenaugError(f"mixed_precision must be auto, no, fp16 or bf16 (got {setting!r})")
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def dynamo_backend(setting: bool | str) -> str:
    """accelerate's dynamo backend for the `compile` setting."""
    if setting is True:
        return "inductor"
    if setting in (False, None, "no"):
        return "no"
    from accelerate.utils import DynamoBackend

    names = [b.value.lower() for b in DynamoBackend]
    if str(setting).lower() not in names:
        raise GenaugError(f"compile must be true, false or a dynamo backend ({', '.join(names)}); got {setting!r}")
    return str(setting).lower()


def fresh_accelerator_state() -> None:
    """accelerate keeps one AcceleratorState per process: a second run in the same process would
    silently keep the first run's dynamo backend and refuse another mixed precision. A single
    process (several classes or families in a row) starts each run from a fresh state; under
    `accelerate launch` the launched state is kept."""
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()


class Trainer:
    """Trains one family on one class of real images inside a run folder."""

    def __init__(self, family: str, real_uint8: torch.Tensor, run_dir: Path, config: dict[str, Any],
                 device: str = "auto", progress: bool = True, labels: torch.Tensor | None = None,
                 classes: list[str] | None = None, pool: torch.Tensor | None = None,
                 pool_labels: torch.Tensor | None = None, init_from: Path | None = None):
        """`labels` (each image's class, 0..K-1) and `classes` (their names) for conditional families;
        `pool` (unlabelled images) and `pool_labels` (-1: none) for the pool families (ddpm_pool.py);
        `init_from`: a model folder whose weights the network starts from (ddpm-finetune)."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.config = {**TRAIN_DEFAULTS, **config}
        self.run_dir = Path(run_dir)
        target = resolve_device(device)
        fresh_accelerator_state()
        family_cls = get_family(family)
        self.accelerator = Accelerator(
            cpu=target.type == "cpu", mixed_precision=mixed_precision_for(self.config["mixed_precision"], target),
            kwargs_handlers=[DistributedDataParallelKwargs(**family_cls.ddp_kwargs)],
            dynamo_backend=dynamo_backend(self.config["compile"]), log_with=check_tracker(self.config["log_with"]),
            project_dir=str(self.run_dir / TRACKERS))
        acc = self.accelerator
        check_global_batch(self.config["batch_size"], acc.num_processes)
        self.progress = progress
        _, channels, size, _ = real_uint8.shape
        self.labels, self.classes = None, None
        model_config = dict(self.config.get("model") or {})
        if family_cls.conditional:
            if labels is None or not classes:
                raise GenaugError(f"{family} is class-conditional: train it on labelled images of every class "
                                  "(--class all)")
            self.labels, self.classes = torch.as_tensor(labels, dtype=torch.long).cpu(), list(classes)
            model_config["num_classes"] = len(self.classes)
        torch.manual_seed(self.config["seed"])  # the same initial weights on every process
        self.model: GenerativeModel = family_cls(model_config, channels, size)
        if init_from is not None:
            self.model.load_weights(init_from)
        self.n_labelled, self.pool_share, self.pool_groups = len(real_uint8), None, None
        if pool is not None:
            check_pool_size(len(pool), self.config["batch_size"])
            share = self.model.config.get("pool_share")
            self.pool_share = None if share is None else check_share(share)
            real_uint8 = torch.cat([real_uint8.cpu(), pool.cpu()])
            if self.labels is not None:
                extra = (torch.full((len(pool),), -1, dtype=torch.long) if pool_labels is None
                         else torch.as_tensor(pool_labels, dtype=torch.long).cpu())
                if pool_labels is not None and self.model.config.get("pool_balance"):
                    # the pool's class prior no longer sets what the model learns: each teacher label (and
                    # the null label) an equal share of the pool's part of every batch
                    self.pool_groups = [torch.nonzero(extra == v).flatten().tolist() for v in extra.unique().tolist()]
                self.labels = torch.cat([self.labels, extra])
        self.memory_format = torch.channels_last if self.config["channels_last"] else torch.contiguous_format
        for network in vars(self.model).values():
            if isinstance(network, torch.nn.Module):
                network.to(memory_format=self.memory_format)
        self.model.prepare(acc, len(real_uint8))
        self.state = TrainState(self.config["seed"], acc.device, acc.process_index, acc.num_processes)
        acc.register_for_checkpointing(self.state)
        for extra in self.model.late_checkpoint_state():
            acc.register_for_checkpointing(extra)
        self.real = real_uint8.cpu()  # uint8 on the host; each batch goes to the device as floats
        self.device = self.accelerator.device
        self.family, self.channels, self.size = family, channels, size

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Every process writes its share (its RNG states) into one temporary folder, which the main
        process then renames into place."""
        acc = self.accelerator
        target = self.run_dir / CHECKPOINTS / f"step-{self.state.step:07d}"
        partial = target.with_name(f".{target.name}.partial")
        self.state.gather()
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(partial), safe_serialization=True)
        acc.wait_for_everyone()
        if acc.is_main_process:
            replace_dir(partial, target)
            for old in checkpoints(self.run_dir)[: -self.config["keep_checkpoints"]]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return target

    def resume(self) -> int:
        found = checkpoints(self.run_dir)
        if not found:
            return 0
        self.load_checkpoint(found[-1])
        if self.accelerator.is_main_process:
            self._truncate_log(self.state.step)
        return self.state.step

    def load_checkpoint(self, folder: Path) -> None:
        """Model, EMA, optimizer, scheduler, step and RNG states of one checkpoint."""
        expected = len(self.accelerator._custom_objects)
        if not (folder / f"custom_checkpoint_{expected - 1}.pkl").exists():
            raise GenaugError(f"{folder} was written by an older genaug, without state this {self.family} now keeps "
                              "(e.g. the DCGAN's generator EMA): train this run again in a new folder")
        self.accelerator.load_state(str(folder))

    def checkpoint_interval(self) -> int:
        every = self.config["checkpoint_every"]
        if every == "auto":
            return max(1, math.ceil(int(self.config["steps"]) / 10))
        if not isinstance(every, int) or every < 1:
            raise GenaugError(f"checkpoint_every must be a positive number of steps or auto (got {every!r})")
        return every

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after `step` (the checkpoint we continue from), so no step is logged twice."""
        log = self.run_dir / LOG_NAME
        if log.exists():
            kept = [ln for ln in log.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
            with atomic_path(log) as tmp:
                tmp.write_text("".join(ln + "\n" for ln in kept))

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        c = self.config
        total = int(c["steps"])
        start = self.state.step
        if start > total:
            raise GenaugError(f"the checkpoint is at step {start}, beyond --steps {total}")
        every = self.checkpoint_interval()
        previous = signal.signal(signal.SIGTERM, raise_interrupt) if main_thread() else None
        bar = tqdm(total=total, initial=start, desc=f"train {self.family}", unit="step",
                   disable=not (self.progress and self.accelerator.is_local_main_process))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:
            self._truncate_log(start)
        log = (self.run_dir / LOG_NAME).open("a") if self.accelerator.is_main_process else None
        if c["log_with"]:
            self.accelerator.init_trackers(self.family, config={k: v for k, v in c.items()
                                                                if isinstance(v, (int, float, str, bool))})
        last_ckpt = start
        t0, seen = time.perf_counter(), 0
        estimate = _Estimate(start, total, self)
        try:
            while self.state.step < total:
                idx = self.batch_at(self.state.step)
                batch = to_model_range(self.real[idx]).to(self.device, non_blocking=True,
                                                          memory_format=self.memory_format)
                condition = {"labels": self.labels[idx]} if self.labels is not None else {}
                losses = self.model.train_step(batch, self.state.rng, self.state.step, self.accelerator, **condition)
                self.state.step += 1
                seen += c["batch_size"]
                bar.update(1)
                step = self.state.step
                estimate.after_step(step, bar)
                if step == total:
                    bar.set_postfix_str("saving the last sample grid, checkpoint and model")
                if step % c["log_every"] == 0 or step == total:
                    rate = seen / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix({**{k: f"{v:.4g}" for k, v in losses.items()}, "img/s": f"{rate:.0f}"})
                    if self.accelerator.is_main_process:
                        log.write(json.dumps({"step": step, **losses, "images_per_s": round(rate, 2),
                                              "time": round(time.time(), 3)}) + "\n")
                        log.flush()
                    if c["log_with"]:
                        self.accelerator.log({**losses, "images_per_s": rate}, step=step)
                    t0, seen = time.perf_counter(), 0
                if step % c["sample_every"] == 0 or step == total:
                    self.save_grid(self.run_dir / "samples" / f"step-{step:07d}.png")
                if step % every == 0 or step == total:
                    self.save_checkpoint()
                    last_ckpt = step
        except KeyboardInterrupt:
            bar.close()
            # The signal may land after a checkpoint was renamed into place but before `last_ckpt`
            # was updated: what is on disk is what --resume will use, so report that.
            found = checkpoints(self.run_dir)
            last_ckpt = max(last_ckpt, int(found[-1].name.split("-")[1]) if found else 0)
            if not last_ckpt:
                raise TrainingInterrupted(
                    f"interrupted at step {self.state.step}, before the first checkpoint (every {every} steps): "
                    f"nothing was saved to resume from; --resume starts {self.run_dir} again from step 0") from None
            raise TrainingInterrupted(f"interrupted at step {self.state.step}; last checkpoint: step {last_ckpt} in "
                                      f"{self.run_dir}; run again with --resume to continue from there") from None
        finally:
            if log is not None:
                log.close()
            if c["log_with"]:
                self.accelerator.end_training()
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self.save_model()
        return {"steps": total, "run_dir": str(self.run_dir)}

    def batch_at(self, step: int) -> list[int]:
        """This process's images of the global batch at `step`: uniform over every image, or with a
        pool and a `pool_share`, that share from the pool (positions after the labelled images) and
        the rest from the labelled images, each from its own seeded stream."""
        acc, c = self.accelerator, self.config
        if self.pool_share is None:
            return batch_indices(step, len(self.real), c["batch_size"], c["seed"], acc.process_index,
                                 acc.num_processes)
        n_pool = round(self.pool_share * c["batch_size"])
        labelled = batch_indices(step, self.n_labelled, c["batch_size"] - n_pool, c["seed"])
        if self.pool_groups is None:
            pool = batch_indices(step, len(self.real) - self.n_labelled, n_pool, c["seed"] + 1)
        else:
            pool = balanced_indices(step, self.pool_groups, n_pool, c["seed"] + 1)
        both = labelled + [self.n_labelled + i for i in pool]
        share = c["batch_size"] // acc.num_processes
        return both[acc.process_index * share: (acc.process_index + 1) * share]

    def save_grid(self, path: Path) -> None:
        if not self.accelerator.is_main_process:
            return
        n = self.config["grid_size"]
        gens = [torch.Generator().manual_seed(i) for i in range(n)]
        condition = ({} if not self.classes else self.model.grid_condition(n) if self.model.multilabel
                     else {"labels": torch.arange(n) % len(self.classes)})  # classes (or labels) in turn
        with self.model.sampling_mode():
            images = self.model.sample(gens, **condition)
        save_grid(to_uint8(images), path)

    def save_model(self, extra: dict[str, Any] | None = None) -> None:
        """The final model for sampling, in its library's format, plus what genaug needs to load it
        (and `extra`, e.g. how a checkpoint was selected)."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        with atomic_dir(self.run_dir / MODEL_DIR) as tmp:
            self.model.save_pretrained(tmp, self.accelerator)
            info = {"family": self.family, "channels": self.channels, "image_size": self.size,
                    "step": self.state.step, "trained_steps": int(self.config["steps"]),
                    "model_config": self.model.config, **(extra or {})}
            if self.classes:
                info["classes"] = self.classes
            write_json(tmp / RUN_INFO, info)


class _Estimate:
    """Announces, once, the expected time of a long run after its first steps were measured."""

    ANNOUNCE_ABOVE_S = 120.0

    def __init__(self, start: int, total: int, trainer: "Trainer"):
        self.start, self.total, self.trainer = start, total, trainer
        self.t0 = time.perf_counter()
        self.done = False

    def after_step(self, step: int, bar) -> None:
        elapsed = time.perf_counter() - self.t0
        measured = step - self.start
        if self.done or (measured < 20 and elapsed < 10) or step == self.total:
            return
        self.done = True
        per_step = elapsed / measured
        remaining = per_step * (self.total - step)
        if remaining < self.ANNOUNCE_ABOVE_S or not self.trainer.accelerator.is_main_process:
            return
        t = self.trainer
        message = (f"{t.family} at {t.size} px: {per_step:.2f} s/step measured, about {_duration(remaining)} for the "
                   f"remaining {self.total - step} of {self.total} steps (fewer --steps or a GPU shorten it)")
        if bar.disable:
            print(message, file=sys.stderr)
        else:
            tqdm.write(message, file=sys.stderr)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def load_trained(run_dir: str | Path, device: str = "auto") -> GenerativeModel:
    """The final model of a run folder, ready to sample."""
    folder = Path(run_dir) / MODEL_DIR
    info_path = folder / RUN_INFO
    if not info_path.exists():
        raise GenaugError(f"{run_dir} has no trained model ({MODEL_DIR}/{RUN_INFO}); train it first")
    info = json.loads(info_path.read_text())
    dev = resolve_device(device)
    model = get_family(info["family"]).from_pretrained(folder, info["model_config"], info["channels"],
                                                       info["image_size"], dev)
    model.classes = info.get("classes")  # the class names of a conditional model, in label order
    return model
