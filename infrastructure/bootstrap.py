"""The composition root: settings decide SQLite or PostgreSQL, in-memory or Redis jobs,
sandbox or real Twilio. Each process (api, worker, dispatcher, projector, or all of
them in one for the embedded default) builds a Container and starts its parts."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from twilio.rest import Client

from application.assets import Assets, MediaSigner
from application.conversation import Conversation
from application.dialing import Dialer
from application.dictionaries import Dictionaries
from application.dispatcher import Dispatcher
from application.executions import ExecutionCache
from application.flow_effects import FlowEffects
from application.ports import Clock
from application.recordings import Recordings
from infrastructure.files import LocalFileStore
from infrastructure.flow_http import HttpxFlowHttp
from infrastructure.jobs import DramatiqDialQueue, build_broker, start_worker
from infrastructure.settings import Settings
from infrastructure.sms import LoggingSmsSender
from infrastructure.stores import open_stores, schema_lock
from infrastructure.telephony.twilio.media import TwilioRecordingMedia
from infrastructure.telephony.twilio.provider import TwilioTelephony
from projections.assets import AssetsView
from projections.call_history import CallHistoryView
from projections.client_webhooks import ClientWebhooksView
from projections.directory import DirectoryView
from projections.progress import ProgressView
from projections.reports import ReportsView
from projections.runner import ProjectionRunner
from projections.store import make_view

log = logging.getLogger("gomobile")
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)

PROJECTIONS = {"progress": ProgressView, "call_history": CallHistoryView, "directory": DirectoryView, "reports": ReportsView}
# The event logs each read model follows (an Execution's events come before its calls').
UPSTREAMS = {
    "progress": ("campaigns", "calls"),
    "call_history": ("campaigns", "calls"),
    "directory": ("campaigns",),
    "reports": ("campaigns", "calls"),
}

PROJECTIONS["assets"] = AssetsView  # flow assets (issue 4): audio files and dictionaries
UPSTREAMS["assets"] = ("campaigns",)
# Webhooks to client systems (issue 7): turns call and execution events into deliveries,
# each sent as a Dramatiq job (projections/client_webhooks.py).
PROJECTIONS["client_webhooks"] = ClientWebhooksView
UPSTREAMS["client_webhooks"] = ("campaigns", "calls")


def rebuild_spawner(name: str, env: dict[str, str]) -> Callable[[str, int], Any]:
    """What starts the processes of a rebuild of read model ``name`` in several
    processes (ProjectionRunner.catch_up_in_partitions), each applying one part."""

    def spawn(part: str, batch_size: int) -> Any:
        import multiprocessing

        process = multiprocessing.get_context("spawn").Process(
            target=_rebuild_part, args=(name, dict(env), _bound_topics(env), part, batch_size),
            name=f"rebuild {name} {part}",
        )  # fmt: skip
        process.start()
        return process

    return spawn


def _bound_topics(env: dict[str, str]) -> list[tuple[str, tuple[Any, ...]]]:
    """What makes the classes that ``env``'s topics name and that were made at run time (the
    audit recorder bound to its key, the mapper bound to its key table): another process
    must make them again (``_rebind``) before its factories resolve those topics."""
    from eventsourcing.utils import resolve_topic

    from infrastructure.audit import PostgresAuditRecorder

    out: list[tuple[str, tuple[Any, ...]]] = []
    recorder = resolve_topic(env["APPLICATION_RECORDER_TOPIC"]) if "APPLICATION_RECORDER_TOPIC" in env else None
    if recorder is not None and hasattr(recorder, "audit_key"):
        out.append(("audit", (issubclass(recorder, PostgresAuditRecorder), recorder.audit_key)))
    mapper = resolve_topic(env["MAPPER_TOPIC"]) if "MAPPER_TOPIC" in env else None
    if mapper is not None and hasattr(mapper, "keystore_env"):
        out.append(("mapper", (mapper.keystore_env, mapper.keystore_ttl)))
    return out


def _rebind(env: dict[str, str], bound: list[tuple[str, tuple[Any, ...]]]) -> None:
    from infrastructure.audit import recorder_topic
    from infrastructure.privacy import mapper_topic

    for kind, args in bound:
        topic = recorder_topic(*args) if kind == "audit" else mapper_topic(*args)
        key = "APPLICATION_RECORDER_TOPIC" if kind == "audit" else "MAPPER_TOPIC"
        assert env[key] == topic, (key, env[key], topic)


def _rebuild_part(name: str, env: dict[str, str], bound: list[tuple[str, tuple[Any, ...]]], part: str, batch_size: int) -> None:
    """One process of a rebuild: the stores and the read model opened again, the part applied."""
    from application.calls import CallsApp
    from application.campaigns import CampaignsApp
    from infrastructure.gc_tuning import tune_gc
    from infrastructure.privacy import bind

    tune_gc()
    _rebind(env, bound)
    env = {**env, "CREATE_TABLE": "no"}  # they exist: the process that started this one made them
    apps = {"campaigns": CampaignsApp(env=env), "calls": CallsApp(env=env)}
    for app in apps.values():
        bind(app)
    view = make_view(PROJECTIONS[name], name, env, create=False)
    try:
        ProjectionRunner(name, view, [apps[a] for a in UPSTREAMS[name]]).catch_up_partition(part, batch_size)
    finally:
        view.datastore.close()
        for app in apps.values():
            app.close()


class LazyViews(Mapping[str, Any]):
    """The registered read models, each constructed (tables and pool) on first access."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.built: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Any:
        view = self.built.get(name)
        if view is not None:
            return view
        if name not in PROJECTIONS:
            raise KeyError(name)
        with self._lock:
            if name not in self.built:
                with schema_lock(self.settings):
                    self.built[name] = make_view(PROJECTIONS[name], name, self.env)
            return self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(PROJECTIONS)

    def __len__(self) -> int:
        return len(PROJECTIONS)


class LazyView:
    """Stands for a read model until it is first used."""

    def __init__(self, views: LazyViews, name: str) -> None:
        self._views = views
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._views[self._name], attr)


class Container:
    def __init__(self, settings: Settings | None = None, clock: Clock | None = None) -> None:
        stores = open_stores(settings, clock)
        self.settings = s = stores.settings
        self.clock: Clock = stores.clock
        self.env = env = stores.env
        self.campaigns = stores.campaigns
        self.calls = stores.calls
        # Read models open on first use: a worker needs one, the API and projector all of
        # them; each costs a PostgreSQL pool per process.
        self.views = LazyViews(s, env)
        self.progress: ProgressView = LazyView(self.views, "progress")  # type: ignore[assignment]
        self.history: CallHistoryView = LazyView(self.views, "call_history")  # type: ignore[assignment]
        self.directory: DirectoryView = LazyView(self.views, "directory")  # type: ignore[assignment]
        self.campaigns.live_audience_members = lambda audience_id: self.directory.audience_member_ids(audience_id)
        self.executions = ExecutionCache(self.campaigns)
        self.files = LocalFileStore(s.data_dir / "files")
        signing_key = s.media_signing_key.encode() or hmac.new(s.twilio_auth_token.encode(), b"gomobile-media-urls", hashlib.sha256).digest()
        self.signer = MediaSigner(signing_key, s.public_base_url, self.clock)
        from infrastructure.audio_conversion import PyAvAudioConverter

        self.assets = Assets(self.campaigns, self.files, self.signer, PyAvAudioConverter())
        self.dictionaries = Dictionaries(self.campaigns, self.assets, LazyView(self.views, "assets"))
        self.recordings = Recordings(
            self.campaigns, self.history, LazyView(self.views, "assets"), self.files,
            TwilioRecordingMedia(s.twilio_account_sid, s.twilio_auth_token),
        )
        self.conversation = Conversation(self.calls, self.executions, self.clock, HttpxFlowHttp(), voice=self.dictionaries)
        self.broker = build_broker(s.redis_url, s.redis_namespace)
        self.queue = DramatiqDialQueue(self.broker, batch=self.settings.dial_batch)
        # A flow turn's effects (opt-out, contact updates, SMS): sent from the calls log by
        # an outbox in the projector, run by workers (infrastructure/flow_effects_jobs).
        from infrastructure.flow_effects_jobs import FlowEffectsQueue

        self.flow_effects = FlowEffects(self.campaigns, self.calls, LoggingSmsSender())
        self.conversation.opt_out_now = self.flow_effects.opt_out_now  # before the next dial
        self.effects_queue = FlowEffectsQueue(self.broker)
        from application.client_webhooks import WebhookConfig
        from infrastructure.jobs import ClientWebhookQueue

        hooks = WebhookConfig.from_env()
        self.webhook_queue = ClientWebhookQueue(self.broker, hooks.max_retries, hooks.min_backoff_ms, hooks.max_backoff_ms)
        self._telephony: TwilioTelephony | None = None
        self._dialer: Dialer | None = None
        self.runners: list[ProjectionRunner] = []
        self._outbox_views: list[Any] = []
        self.dispatcher: Dispatcher | None = None
        self.worker: Any = None

    # -- parts --------------------------------------------------------------------------

    @property
    def telephony(self) -> TwilioTelephony:
        if self._telephony is None:
            s = self.settings
            from twilio.http import HttpClient

            from infrastructure.telephony.twilio.http import PROXY_ENV, PooledHttpClient

            # A request to Twilio gives up after 10 s (the SDK's default waits for ever): a
            # dial batch's other calls are not held behind one that hangs. The SDK's own
            # client (requests) when the environment names a proxy: it honours NO_PROXY
            # and netrc too.
            http_client: HttpClient
            if s.telephony == "sandbox":
                from infrastructure.telephony.sandbox.http_client import SandboxHttpClient

                http_client = SandboxHttpClient(s.sandbox_url, timeout=10)
            elif any(os.environ.get(name) for name in PROXY_ENV):
                from twilio.http.http_client import TwilioHttpClient

                http_client = TwilioHttpClient(timeout=10)
            else:
                http_client = PooledHttpClient(timeout=10)
            client = Client(s.twilio_account_sid, s.twilio_auth_token, http_client=http_client)
            self._telephony = TwilioTelephony(client, s.public_base_url)
        return self._telephony

    @property
    def dialer(self) -> Dialer:
        if self._dialer is None:
            from application.consent import Consents
            from application.suppression import Suppressions
            from infrastructure.pacing import DramatiqPacer

            self._dialer = Dialer(
                self.campaigns,
                self.calls,
                self.executions,
                self.telephony,
                self.clock,
                f"{os.getpid()}",
                suppressions=Suppressions(self.campaigns),
                pacer=DramatiqPacer(self.settings.redis_url, self.settings.redis_namespace),
                declined=self.progress.forget_dispatch,
                dials_since=self.progress.dials_since,
                consents=Consents(self.campaigns),
            )
        return self._dialer

    @property
    def erasure(self) -> Any:
        """Erasing a contact (issue 7): its keys, its pending calls, its recordings' audio."""
        from application.erasure import Erasure

        def recordings_of(org: Any, jobs: Any) -> list[str]:
            attempts = [a["call_id"] for job in jobs for a in self.history.job_attempts(job)]
            return [self.recordings.file_key(r) for a in attempts for r in self.history.recordings(str(org), 1000, 0, a)]

        return Erasure(
            self.campaigns, self.calls, getattr(self.campaigns.mapper, "keystore", None), self.clock,
            lambda org: [x["id"] for x in self.progress.executions(str(org))], recordings_of, self.files,
        )  # fmt: skip

    def runner(self, name: str) -> ProjectionRunner:
        apps = {"campaigns": self.campaigns, "calls": self.calls}
        upstreams = [apps[a] for a in UPSTREAMS[name]]
        view = self.views[name]
        if name == "client_webhooks":
            view.send = self.webhook_queue.send  # the follower sends a job per delivery
        runner = ProjectionRunner(name, view, upstreams, poll_interval=self.settings.projection_interval)
        if self.settings.uses_postgres:
            runner.spawn_partition = rebuild_spawner(name, self.env)
        return runner

    # -- processes ------------------------------------------------------------------

    def start_projections(self) -> None:
        for name in self.views:
            self.runners.append(self.runner(name).start())
        self.runners.append(self.effects_outbox().start())

    def effects_outbox(self) -> ProjectionRunner:
        from infrastructure.flow_effects_jobs import effects_outbox

        with schema_lock(self.settings):
            runner = effects_outbox(self.env, self.calls, self.effects_queue.send, self.settings.projection_interval)
        self._outbox_views.append(runner.view)
        return runner

    def start_dispatcher(self) -> None:
        from datetime import timedelta

        from application.reconciler import Reconciler

        reconciler = Reconciler(
            self.calls, self.conversation, self.telephony, self.progress, self.clock,
            stale_after=timedelta(seconds=self.settings.reconcile_after),
            unplaced_after=timedelta(seconds=self.settings.reconcile_after * 5),
        )
        self.dispatcher = Dispatcher(
            self.campaigns, self.calls, self.progress, self.queue, self.clock,
            reconciler=reconciler, live_members=self.directory.audience_member_ids,
        )
        self.dispatcher.start(self.settings.dispatch_interval)

    def start_worker(self) -> None:
        self.queue.set_handler(self.dialer.dial, self.dialer.dial_many)
        self.effects_queue.set_handler(self.flow_effects.run)
        from application.client_webhooks import ClientWebhooks

        self.webhook_queue.set_handler(ClientWebhooks.for_container(self).deliver)
        self.worker = start_worker(self.broker, self.settings.worker_threads, self.settings.worker_poll_ms)

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.worker is not None:
            self.worker.stop(timeout=5000)
        for r in self.runners:
            r.stop()
        self.broker.close()
        self.campaigns.close()
        self.calls.close()
        keys = getattr(self.campaigns.mapper, "keystore", None)
        if keys is not None:
            keys.close()  # its pool; opened again if this process uses the table again
        for v in [*self.views.built.values(), *self._outbox_views]:
            v.datastore.close()
