"""The labeling service on Ray Serve: one FastAPI ingress deployment, one model deployment per policy version.

Each model replica holds a vLLM engine (CPU or GPU build) and folds concurrent requests into one engine call
(`serve.batch`); replicas of both kinds autoscale with load through Serve's `autoscaling_config`. The ingress
builds the web app of app.py at replica start and reaches the models through DeploymentHandles.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from ray import serve
from ray.serve.handle import DeploymentHandle

from hh_ray.config import ConfigError
from hh_ray.data.hh import ASSISTANT, HUMAN
from hh_ray.data.tokenize import truncate_prompt
from hh_ray.models.presets import resolve_model as preset_folder
from hh_ray.workers.group import actor_env

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


@serve.deployment
class PolicyModel:
    """One policy version: a vLLM engine (or a fixed `echo:` reply) answering HH contexts."""

    def __init__(self, source: SourceConfig):
        self.source = source
        self.llm = None
        if source.echo_text is None:
            self._load_engine(resolve_model(source.model))
        self.generate_batch.set_max_batch_size(source.max_batch_size)

    def _load_engine(self, model: str) -> None:
        import torch
        from vllm import LLM

        s = self.source
        on_gpu = torch.cuda.is_available()
        kwargs = dict(model=model, tokenizer=model, enforce_eager=True, max_model_len=s.max_model_len, seed=0,
                      dtype="bfloat16" if on_gpu else "float32")
        if on_gpu:
            kwargs["gpu_memory_utilization"] = s.gpu_memory_utilization
        else:  # as hh_ray.workers.rollout: whole prefills (seeded requests on CPU), a fixed KV budget
            kwargs.update(kv_cache_memory_bytes=int(s.kv_cache_gb * 2**30), enable_chunked_prefill=False,
                          max_num_batched_tokens=max(8192, s.max_model_len))
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def version(self) -> int:
        return self.source.version

    async def generate(self, context: str, n: int, seed: int) -> list[str]:
        """`n` responses to `context` (an HH transcript ending in "\\n\\nAssistant:"), each one turn long."""
        return await self.generate_batch((context, n, seed))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def generate_batch(self, requests: list[tuple[str, int, int]]) -> list[list[str]]:
        if self.llm is None:
            return [[self.source.echo_text] * n for _, n, _ in requests]
        return await asyncio.to_thread(self._generate, requests)

    def _generate(self, requests: list[tuple[str, int, int]]) -> list[list[str]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        s = self.source
        keep = s.max_model_len - s.max_new_tokens
        prompts, params = [], []
        for context, n, seed in requests:
            ids = truncate_prompt(self.tokenizer, context, keep)  # the model's format; long dialogues: newest turns
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(SamplingParams(n=n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
                                         seed=seed, stop=[HUMAN, ASSISTANT],
                                         stop_token_ids=[self.tokenizer.eos_token_id],
                                         include_stop_str_in_output=False))
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[clean_response(c.text) for c in out.outputs] for out in outs]


class ServeSources:
    """The app's ResponseSource over the model deployments' handles."""

    def __init__(self, cfg: LabelConfig, models: dict[str, DeploymentHandle]):
        self.cfg, self.models = cfg, models

    async def generate(self, name: str, context: str, n: int, seed: int) -> list[Sample]:
        texts = await self.models[name].generate.remote(context, n, seed)
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
