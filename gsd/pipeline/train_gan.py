"""GAN stage: train StyleGAN2 (G, D and an EMA of G) data-parallel over every device, resumable.

The recipe is StyleGAN2-ADA's without augmentation: non-saturating logistic loss, lazy R1 on
reals every `r1_interval` steps, optional lazy path-length regularisation, style mixing,
minibatch-stddev, Adam(lr, 0, 0.99) whose lr and betas get the lazy-regularisation correction
c = interval / (interval + 1), an EMA generator with a half-life in kimg (optionally ramped up)
and the running mean of w for truncation. One difference: the discriminator step reuses the fakes
of the generator step (generated before the G update), saving one generator forward per step.

Parallelism: one `jax.jit` over a Mesh of all devices ('data' axis): real images and latents are
sharded along the batch, parameters and optimizer states replicated, so the step computes the
same losses on 1 or 8 devices. Multi-host: each process reads its own data shard, process 0
writes metrics, samples and the exported generator; orbax coordinates the checkpoint.

The loop, checkpoints, NaN guard, SIGTERM stop and metrics are the training scaffold's
(`gsd.training.loop`); this module holds the steps, their schedule (R1 every `r1_interval` steps,
path length every `pl_interval`, sample grids every `sample_every`) and the export.

Workdir: `checkpoints/` (orbax CheckpointManager: train state, data iterator and what the state was
trained on), `samples/` (PNG grids of the EMA generator), `tensorboard/` (events + metrics.jsonl),
`generator/` (the final EMA generator in gsd's StyleGAN2 format), `gan_config.json` (the
architecture). Rerunning the same command resumes from the last readable checkpoint; another
architecture (`gan_config.json`) or other training images, batch size or seed are refused.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gsd import stylegan2
from gsd.io import images as image_io
from gsd.training import loop, parallel


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    g_params: Any
    g_buffers: Any  # mapping/w_avg and the const noise buffers
    d_params: Any
    ema_params: Any
    g_opt: Any
    d_opt: Any
    pl_mean: jax.Array
    key: jax.Array  # raw uint32 PRNG key (checkpointable)


def build_models(cfg: ml_collections.ConfigDict):
    """(G, D) from a `gan` config block; G modulates activations (one shared kernel per batch)."""
    channels = stylegan2.channels_nvidia(cfg.resolution, cfg.channel_base, cfg.channel_max)
    g = stylegan2.Generator(
        cfg.resolution,
        channels,
        z_dim=cfg.z_dim,
        w_dim=cfg.w_dim,
        n_mlp=cfg.n_mlp,
        mapping_lr_mul=cfg.mapping_lr_mul,
        fused_modconv=False,
    )
    d = stylegan2.Discriminator(cfg.resolution, channels, mbstd_group_size=cfg.mbstd_group_size)
    return g, d


def models(config) -> dict:
    g, d = build_models(config.gan)
    r = config.gan.resolution
    return {'generator': (g, (jnp.zeros((1, g.z_dim)),)), 'discriminator': (d, (jnp.zeros((4, r, r, 3)),))}


def _lazy_adam(lr: float, interval: int, enabled: bool = True):
    # Lazy regularisation runs the regulariser's optimizer step 1/interval as often; NVIDIA scales
    # lr and the betas by c = interval / (interval + 1) so the combined schedule matches.
    c = interval / (interval + 1) if enabled and interval else 1.0
    return optax.adam(lr * c, b1=0.0**c, b2=0.99**c, eps=1e-8)


class GANTrainer:
    """Holds the models, mesh and jitted steps for one `gan` config block."""

    def __init__(self, cfg: ml_collections.ConfigDict, mesh: Mesh | None = None):
        self.cfg = cfg
        self.G, self.D = build_models(cfg)
        self.mesh = mesh or parallel.mesh()
        self.data_sharding = NamedSharding(self.mesh, P('data'))
        self.replicated = NamedSharding(self.mesh, P())
        parallel.local_batch_size(cfg.batch_size, 'gan.batch_size', self.mesh)
        self.g_tx = _lazy_adam(cfg.lr_g, cfg.pl_interval, cfg.pl_weight > 0)
        self.d_tx = _lazy_adam(cfg.lr_d, cfg.r1_interval, cfg.r1_gamma > 0)
        self.train_step = jax.jit(self._train_step, donate_argnums=0, out_shardings=(self.replicated, self.replicated))
        self.r1_step = jax.jit(self._r1_step, donate_argnums=0, out_shardings=(self.replicated, self.replicated))
        self.pl_step = jax.jit(self._pl_step, donate_argnums=0, out_shardings=(self.replicated, self.replicated))
        self.sample = jax.jit(self._sample)

    # -- state ----------------------------------------------------------------------------------
    def _init(self, key) -> TrainState:
        kg, kd, kstate = jax.random.split(key, 3)
        g_vars = self.G.init(kg, jnp.zeros((1, self.G.z_dim)))
        r = self.cfg.resolution
        d_vars = self.D.init(kd, jnp.zeros((self.cfg.mbstd_group_size or 1, r, r, 3)))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            g_params=g_vars['params'],
            g_buffers=g_vars['buffers'],
            d_params=d_vars['params'],
            ema_params=g_vars['params'],
            g_opt=self.g_tx.init(g_vars['params']),
            d_opt=self.d_tx.init(d_vars['params']),
            pl_mean=jnp.zeros((), jnp.float32),
            key=kstate,
        )

    def init_state(self, seed: int) -> TrainState:
        return jax.jit(self._init, out_shardings=self.replicated)(jax.random.PRNGKey(seed))

    # -- losses ---------------------------------------------------------------------------------
    def _shard(self, x):
        # A batch the devices cannot split evenly (the path-length batch, say) is left to XLA:
        # every device then computes it whole, which gives the same numbers.
        if x.shape[0] % self.mesh.size:
            return x
        return jax.lax.with_sharding_constraint(x, self.data_sharding)

    def _mapped_ws(self, g_params, buffers, key, batch: int):
        """ws with style mixing (NVIDIA: with prob p, rows >= a random cutoff come from a second z)."""
        kz, kz2, kp, kc = jax.random.split(key, 4)
        v = {'params': g_params, 'buffers': buffers}
        z = self._shard(jax.random.normal(kz, (batch, self.G.z_dim)))
        ws = self.G.apply(v, z, method='map')
        if self.cfg.style_mixing_prob > 0:
            num_ws = ws.shape[1]
            cutoff = jax.random.randint(kc, (), 1, num_ws)
            cutoff = jnp.where(jax.random.uniform(kp) < self.cfg.style_mixing_prob, cutoff, num_ws)
            z2 = self._shard(jax.random.normal(kz2, (batch, self.G.z_dim)))
            ws = self.G.apply(v, z, mix_z=z2, mix_index=cutoff, method='map')
        return ws

    def _synthesize(self, g_params, buffers, ws, key):
        return self.G.apply(
            {'params': g_params, 'buffers': buffers}, ws, noise_mode='random', method='synthesize', rngs={'noise': key}
        )

    def _d(self, d_params, img):
        return self.D.apply({'params': d_params}, img)

    def _train_step(self, state: TrainState, real):
        cfg = self.cfg
        key, k_ws, k_noise = jax.random.split(state.key, 3)
        batch = real.shape[0]
        real = self._shard(real.astype(jnp.float32) / 127.5 - 1.0)

        def g_loss(g_params):
            ws = self._mapped_ws(g_params, state.g_buffers, k_ws, batch)
            fake = self._synthesize(g_params, state.g_buffers, ws, k_noise)
            logits = self._d(state.d_params, fake)
            return jnp.mean(jax.nn.softplus(-logits)), (fake, ws)

        (loss_g, (fake, ws)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(state.g_params)
        updates, g_opt = self.g_tx.update(g_grads, state.g_opt, state.g_params)
        g_params = optax.apply_updates(state.g_params, updates)

        fake = jax.lax.stop_gradient(fake)

        def d_loss(d_params):
            lf, lr = self._d(d_params, fake), self._d(d_params, real)
            return jnp.mean(jax.nn.softplus(lf)) + jnp.mean(jax.nn.softplus(-lr)), (lf, lr)

        (loss_d, (logits_fake, logits_real)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(state.d_params)
        updates, d_opt = self.d_tx.update(d_grads, state.d_opt, state.d_params)
        d_params = optax.apply_updates(state.d_params, updates)

        # Running mean of w (truncation target); every row of ws is some z's mapping output.
        w_avg = state.g_buffers['mapping']['w_avg']
        w_mean = jnp.mean(jax.lax.stop_gradient(ws[:, -1]), axis=0)
        buffers = {**state.g_buffers, 'mapping': {'w_avg': w_mean + cfg.w_avg_beta * (w_avg - w_mean)}}

        ema_params = jax.tree.map(
            lambda e, p: p + self._ema_beta(state.step, batch) * (e - p), state.ema_params, g_params
        )
        new = state.replace(
            step=state.step + 1,
            g_params=g_params,
            g_buffers=buffers,
            d_params=d_params,
            ema_params=ema_params,
            g_opt=g_opt,
            d_opt=d_opt,
            key=key,
        )
        metrics = {
            'loss/G': loss_g,
            'loss/D': loss_d,
            'logits/real': jnp.mean(logits_real),
            'logits/fake': jnp.mean(logits_fake),
            'finite': jnp.isfinite(loss_g) & jnp.isfinite(loss_d),
        }
        return new, metrics

    def _ema_beta(self, step, batch):
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000.0
        if cfg.ema_rampup:
            ema_nimg = jnp.minimum(ema_nimg, (step + 1) * batch * cfg.ema_rampup)
        return 0.5 ** (batch / jnp.maximum(ema_nimg, 1e-8))

    def _r1_step(self, state: TrainState, real):
        cfg = self.cfg
        real = self._shard(real.astype(jnp.float32) / 127.5 - 1.0)

        def loss(d_params):
            grads = jax.grad(lambda x: jnp.sum(self._d(d_params, x)))(real)
            penalty = jnp.sum(jnp.square(grads), axis=(1, 2, 3))
            return jnp.mean(penalty) * (cfg.r1_gamma / 2) * cfg.r1_interval, jnp.mean(penalty)

        (_, penalty), grads = jax.value_and_grad(loss, has_aux=True)(state.d_params)
        updates, d_opt = self.d_tx.update(grads, state.d_opt, state.d_params)
        d_params = optax.apply_updates(state.d_params, updates)
        return state.replace(d_params=d_params, d_opt=d_opt), {
            'reg/r1_penalty': penalty,
            'finite': jnp.isfinite(penalty),
        }

    def _pl_step(self, state: TrainState):
        cfg = self.cfg
        key, k_ws, k_noise, k_pl = jax.random.split(state.key, 4)
        batch = max(cfg.batch_size // cfg.pl_batch_shrink, 1)

        def loss(g_params):
            ws = self._mapped_ws(g_params, state.g_buffers, k_ws, batch)
            r = cfg.resolution
            pl_noise = jax.random.normal(k_pl, (batch, r, r, 3)) / r
            grads = jax.grad(lambda w: jnp.sum(self._synthesize(g_params, state.g_buffers, w, k_noise) * pl_noise))(ws)
            lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))
            pl_mean = state.pl_mean + cfg.pl_decay * (jax.lax.stop_gradient(jnp.mean(lengths)) - state.pl_mean)
            penalty = jnp.square(lengths - pl_mean)
            return jnp.mean(penalty) * cfg.pl_weight * cfg.pl_interval, (pl_mean, jnp.mean(penalty))

        (_, (pl_mean, penalty)), grads = jax.value_and_grad(loss, has_aux=True)(state.g_params)
        updates, g_opt = self.g_tx.update(grads, state.g_opt, state.g_params)
        g_params = optax.apply_updates(state.g_params, updates)
        new = state.replace(g_params=g_params, g_opt=g_opt, pl_mean=pl_mean, key=key)
        return new, {'reg/pl_penalty': penalty, 'finite': jnp.isfinite(penalty)}

    def _sample(self, state: TrainState, z, psi):
        v = {'params': state.ema_params, 'buffers': state.g_buffers}
        return self.G.apply(v, z, truncation_psi=psi, noise_mode='const')

    def put_batch(self, local_batch: np.ndarray):
        """This process's part of the global batch -> one array sharded over all devices."""
        return jax.make_array_from_process_local_data(self.data_sharding, local_batch)


def export_generator(trainer: GANTrainer, state: TrainState, out_dir, provenance: dict):
    """Write the EMA generator as a gsd StyleGAN2 checkpoint (loadable by `gsd.stylegan2.load`)."""
    g = trainer.G.clone(fused_modconv=None)
    variables = jax.device_get({'params': state.ema_params, 'buffers': state.g_buffers})
    return stylegan2.save(out_dir, {'G_ema': (g, variables)}, provenance)


def check(config) -> None:
    """The global batch must split over every device of every process: said before any stage starts."""
    parallel.local_batch_size(config.gan.batch_size, 'gan.batch_size')


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    """Train (or resume) the GAN of `config.gan` in `workdir`; returns final metrics and the export path."""
    from gsd.io import sources as data_lib

    cfg = config.gan
    workdir = pathlib.Path(workdir).absolute()
    is_main = jax.process_index() == 0
    mesh = parallel.mesh()
    local_batch = parallel.local_batch_size(cfg.batch_size, 'gan.batch_size', mesh)
    loop.require_positive(
        {
            'gan.total_steps': cfg.total_steps,
            'gan.log_every': cfg.log_every,
            'gan.sample_every': cfg.sample_every,
            'gan.checkpoint_every': cfg.checkpoint_every,
            'gan.keep_checkpoints': cfg.keep_checkpoints,
            **({'gan.r1_interval': cfg.r1_interval} if cfg.r1_gamma > 0 else {}),
            **({'gan.pl_interval': cfg.pl_interval} if cfg.pl_weight > 0 else {}),
        }
    )
    _guard_architecture(workdir, cfg, is_main)
    trainer = GANTrainer(cfg, mesh)
    source = data_lib.source_from_config(cfg.data)
    loader = data_lib.make_loader(source, local_batch, seed=config.seed, worker_count=cfg.data_workers)
    sample_z = jax.random.normal(jax.random.PRNGKey(config.seed + 1), (cfg.sample_grid, trainer.G.z_dim))

    def step(state, real, index):
        state, m = trainer.train_step(state, real)
        metrics = [m]
        if cfg.r1_gamma > 0 and index % cfg.r1_interval == 0:
            state, m = trainer.r1_step(state, real)
            metrics.append(m)
        if cfg.pl_weight > 0 and index % cfg.pl_interval == 0:
            state, m = trainer.pl_step(state)
            metrics.append(m)
        return state, metrics

    def log(state, done, means):
        return state, means, {k.replace('loss/', '').replace('logits/', 'D(x) '): v for k, v in means.items()}

    def samples(state, done):
        if done % cfg.sample_every and done != cfg.total_steps:
            return None
        grid = image_io.grid(image_io.to_uint8(jax.device_get(trainer.sample(state, sample_z, 1.0))))
        if is_main:
            image_io.write_png(workdir / 'samples' / f'step_{done:07d}.png', grid)
        return {'samples/ema': grid}

    finished = loop.train(
        'gan',
        workdir,
        mesh=mesh,
        loader=loader,
        init=lambda: trainer.init_state(config.seed),
        step=step,
        total_steps=cfg.total_steps,
        batch_size=cfg.batch_size,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
        trained_on=_trained_on(cfg, source, config.seed),
        hparams=cfg.to_dict(),
        log=log,
        after_step=samples,
    )
    export = None
    if is_main:
        export = export_generator(
            trainer,
            finished.state,
            workdir / 'generator',
            {
                'source': str(workdir),
                'source_format': 'gsd-train_gan',
                'steps': cfg.total_steps,
                'images_seen': cfg.total_steps * cfg.batch_size,
            },
        )
    result = {
        'steps': cfg.total_steps,
        'seconds_this_run': finished.seconds,
        'metrics': finished.metrics,
        'generator': str(export) if export else None,
    }
    if is_main:
        (workdir / 'train_gan.json').write_text(json.dumps(result, indent=1))
    return result


def _trained_on(cfg, source, seed: int) -> dict:
    """What a checkpoint's state depends on besides the architecture (`_guard_architecture`): the images
    (not where they are: a moved folder or TFDS data_dir still resumes), their order and the batch."""
    data = {k: v for k, v in cfg.data.to_dict().items() if k not in ('path', 'data_dir')}
    record = {'data': data, 'num_images': len(source), 'batch_size': cfg.batch_size, 'seed': seed}
    root = getattr(source, 'root', None)
    if root is not None:  # a folder: which files, by their paths under it
        record['files'] = loop.fingerprint([str(p.relative_to(root)) for p in source.paths])
    return record


def _guard_architecture(workdir: pathlib.Path, cfg, is_main: bool):
    """A workdir trains one architecture: resuming with a different one is refused, not mixed."""
    path = workdir / 'gan_config.json'
    current = cfg.to_dict()
    arch_keys = ('resolution', 'channel_base', 'channel_max', 'z_dim', 'w_dim', 'n_mlp', 'mbstd_group_size')
    if path.exists():
        saved = json.loads(path.read_text())
        diff = {k: (saved.get(k), current.get(k)) for k in arch_keys if saved.get(k) != current.get(k)}
        if diff:
            raise ValueError(
                f'{path}: this workdir holds a GAN with a different architecture {diff}; use a new --workdir'
            )
    elif is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=1, default=str))
