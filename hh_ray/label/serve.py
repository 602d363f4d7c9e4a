"""The labeling service on Ray Serve: one FastAPI ingress deployment, one model deployment per policy version.

Each model replica holds a vLLM async engine (CPU or GPU build) that batches the requests in flight at every
step (continuous batching) and can stream each answer as it grows; replicas of both kinds autoscale with load
through Serve's `autoscaling_config`. The ingress builds the web app of app.py at replica start and reaches the
models through DeploymentHandles.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ray import serve
from ray.serve.handle import DeploymentHandle

from hh_ray.config import ConfigError
from hh_ray.data.hh import ASSISTANT, HUMAN
from hh_ray.data.tokenize import truncate_prompt
from hh_ray.models.presets import resolve_model as preset_folder
from hh_ray.workers.group import actor_env
from hh_ray.workers.placement import engine_kwargs

from .app import create_app
from .auth import create_user
from .config import LabelConfig, SourceConfig
from .store import ADMIN, Sample, Store

log = logging.getLogger(__name__)


def resolve_model(path: str) -> str:
    """An hh-ray run folder serves its PPO policy (else its SFT model); a preset name its folder (`smollm2-135m`);
    anything else is used as given."""
    root = Path(path).expanduser()
    for sub in ("ppo/policy", "sft"):
        if (root / sub / "config.json").is_file():
            return str(root / sub)
    return preset_folder(path)


def check_models(cfg: LabelConfig) -> None:
    """A local model folder that is missing fails here, in one line, and not in a replica's log."""
    for name in sorted({n for c in cfg.campaigns for n in c.sources}):
        s = cfg.source(name)
        if s.echo_text is not None:
            continue
        model = resolve_model(s.model)
        looks_local = model.startswith((".", "/", "~")) or model.count("/") != 1
        if looks_local and not (Path(model).expanduser() / "config.json").is_file():
            raise ConfigError(f"sources.{name}.model: no model at {model} (an HF folder with config.json, or an "
                              "hh-ray run folder); for jobs/label.yaml run `hh-ray run --config jobs/quickstart.yaml`")


def clean_response(text: str) -> str:
    """The assistant turn alone: cut at any turn marker the engine let through, surrounding space removed."""
    for marker in (HUMAN, ASSISTANT):
        text = text.split(marker, 1)[0]
    return text.strip()


def engine_args(source: SourceConfig, model: str, on_gpu: bool) -> dict:
    """AsyncEngineArgs of one source: the settings every hh-ray engine shares (placement.engine_kwargs), and how
    many sequences it decodes at once."""
    return engine_kwargs(source, on_gpu, model, source.max_model_len, seed=0, dtype=source.dtype) | dict(
        max_num_seqs=source.max_batch_size, disable_log_stats=True)


@serve.deployment
class PolicyModel:
    """One policy version: a vLLM async engine (or a fixed `echo:` reply) answering HH contexts.

    Every request awaits its own stream from the one engine, which batches whatever is in flight at each step
    (continuous batching): a labeler's turn does not wait for the turns sent before it.
    """

    def __init__(self, source: SourceConfig):
        self.source = source
        self.engine = None
        if source.echo_text is None:  # Serve runs this on the replica's event loop: the engine's output task
            self._load_engine(resolve_model(source.model))  # starts on the loop the requests come in on

    def _load_engine(self, model: str) -> None:
        import torch
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        on_gpu = torch.cuda.is_available()
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args(self.source, model, on_gpu)))
        self.tokenizer = self.engine.tokenizer

    def version(self) -> int:
        return self.source.version

    async def generate(self, context: str, n: int, seed: int) -> list[str]:
        """`n` responses to `context` (an HH transcript ending in "\\n\\nAssistant:"), each one turn long."""
        texts: list[str] = []
        async for texts in self._responses(context, n, seed, stream=False):
            pass
        return texts

    async def stream(self, context: str, n: int, seed: int) -> AsyncIterator[list[str]]:
        """As `generate`, yielding the `n` texts so far each time the engine adds tokens; the last are final."""
        async for texts in self._responses(context, n, seed, stream=True):
            yield texts

    async def _responses(self, context: str, n: int, seed: int, stream: bool) -> AsyncIterator[list[str]]:
        if self.engine is None:
            yield [self.source.echo_text] * n
            return
        from vllm.inputs import TokensPrompt

        # the model's format; a long dialogue keeps its newest turns
        ids = truncate_prompt(self.tokenizer, context, self.source.max_model_len - self.source.max_new_tokens)
        texts = [""] * n
        params = sampling_params(self.source, n, seed, self.tokenizer.eos_token_id, stream)
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params, uuid.uuid4().hex):
            for c in out.outputs:  # a streamed step of n > 1 may carry only the samples that grew
                texts[c.index] = clean_response(c.text)
            yield list(texts)


def sampling_params(s: SourceConfig, n: int, seed: int, eos_id: int, stream: bool):
    """One turn of `n` samples; streamed requests report the whole text so far at every step."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kind = RequestOutputKind.CUMULATIVE if stream else RequestOutputKind.FINAL_ONLY
    return SamplingParams(n=n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens, seed=seed,
                          stop=[HUMAN, ASSISTANT], stop_token_ids=[eos_id], include_stop_str_in_output=False,
                          output_kind=kind)


class ServeSources:
    """The app's ResponseSource over the model deployments' handles."""

    def __init__(self, cfg: LabelConfig, models: dict[str, DeploymentHandle]):
        self.cfg, self.models = cfg, models

    async def generate(self, name: str, context: str, n: int, seed: int) -> list[Sample]:
        texts = await self.models[name].generate.remote(context, n, seed)
        return self._samples(name, texts)

    async def stream(self, name: str, context: str, n: int, seed: int) -> AsyncIterator[list[Sample]]:
        async for texts in self.models[name].options(stream=True).stream.remote(context, n, seed):
            yield self._samples(name, texts)

    def _samples(self, name: str, texts: list[str]) -> list[Sample]:
        version = self.cfg.source(name).version
        return [Sample(t, name, version) for t in texts]


@serve.deployment
@serve.ingress()
class LabelIngress:
    """The web app: pages and JSON API; its state lives in the database, so replicas can come and go."""

    def __init__(self, cfg: LabelConfig, models: dict[str, DeploymentHandle]):
        self.cfg, self.models = cfg, models

    def __serve_build_asgi_app__(self):
        store = Store(self.cfg.db_url)
        store.check_schema()
        return create_app(self.cfg, store, ServeSources(self.cfg, self.models))


def _autoscaling(min_replicas: int, max_replicas: int, target: float) -> dict:
    return {"min_replicas": min_replicas, "max_replicas": max_replicas, "target_ongoing_requests": target,
            "upscale_delay_s": 5.0, "downscale_delay_s": 60.0, "metrics_interval_s": 2.0, "look_back_period_s": 10.0}


def build_application(cfg: LabelConfig):
    """The Serve application: the ingress bound to one model deployment per source its campaigns use."""
    used = sorted({name for c in cfg.campaigns for name in c.sources})
    models = {}
    for name in used:
        s = cfg.source(name)
        actor = {"num_cpus": s.cpus_per_replica, "runtime_env": {"env_vars": actor_env(s.cpus_per_replica)}}
        if s.gpus_per_replica:
            actor["num_gpus"] = s.gpus_per_replica
        models[name] = PolicyModel.options(
            name=f"policy-{name}", autoscaling_config=_autoscaling(s.min_replicas, s.max_replicas,
                                                                   s.target_ongoing_requests),
            max_ongoing_requests=max(4, 2 * s.max_batch_size), ray_actor_options=actor,
        ).bind(s)
    srv = cfg.server
    return LabelIngress.options(
        name="label-ingress", autoscaling_config=_autoscaling(srv.ingress_min_replicas, srv.ingress_max_replicas, 8.0),
        max_ongoing_requests=64, ray_actor_options={"num_cpus": srv.ingress_cpus},
    ).bind(cfg, models)


def prepare_store(cfg: LabelConfig) -> Store:
    """Migrate the schema, record the campaigns and make the session secret, before any replica starts."""
    check_models(cfg)
    store = Store(cfg.db_url)
    store.migrate()
    store.sync_campaigns(cfg)
    store.session_secret()
    return store


def ensure_admin(store: Store, name: str = "admin") -> str | None:
    """Create the first admin when there is none; returns its one-time password (None when one exists)."""
    if store.has_admin():
        return None
    _, password = create_user(store, name, ADMIN)
    return password


@dataclass
class RunningService:
    url: str
    app_name: str
    store: Store


def start_service(cfg: LabelConfig) -> RunningService:
    """Deploy on the connected Ray cluster (Serve's HTTP proxy on server.host:port); returns once it is up."""
    store = prepare_store(cfg)
    serve.start(http_options={"host": cfg.server.host, "port": cfg.server.port})
    serve.run(build_application(cfg), name=cfg.name, route_prefix="/")
    return RunningService(f"http://{cfg.server.host}:{cfg.server.port}", cfg.name, store)


def stop_service(service: RunningService) -> None:
    serve.delete(service.app_name)
    service.store.dispose()
