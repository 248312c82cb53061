"""``make run``: the whole funnel on one machine, for development.

Starts the embedded broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` is set), creates the
topics and the databases (SQLite under ``var/`` unless ``<SERVICE>_DATABASE_URL`` is set),
then the three APIs under gunicorn and the relay, consumers, campaign scheduler and
dispatcher as their own processes, and — unless ``RETARGETING_SMTP_HOST`` points at a real
server — a local mail sink (:mod:`deploy.mailsink`) that catches every e-mail campaigns
send, with a page that lists them.
Prints the URLs and dev credentials. A process that dies is restarted after a pause.
Ctrl-C / SIGTERM stops every process (SIGTERM, then a grace period) and then the broker.

Credentials: ``FUNNEL_WRITE_KEY``, ``FUNNEL_SALES_TOKEN``, ``FUNNEL_MARKETING_TOKEN``,
``FUNNEL_ADMIN_TOKEN`` when set; otherwise random ones made once and kept in
``var/dev-credentials.json`` so a restart keeps them.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from deploy.init import initialise
from shared import processes
from shared.broker import EmbeddedBroker, port_open
from shared.config import Env
from shared.logs import configure_logging

log = logging.getLogger("funnel.run")
CREDENTIALS = (
    "FUNNEL_WRITE_KEY",
    "FUNNEL_SALES_TOKEN",
    "FUNNEL_MARKETING_TOKEN",
    "FUNNEL_ADMIN_TOKEN",
)
GUNICORN_CONF = Path(__file__).with_name("gunicorn.conf.py")


@dataclass(frozen=True)
class DevConfig:
    var_dir: Path
    bootstrap_servers: str | None
    broker_port: int = 9092
    intake_port: int = 8001
    scoring_port: int = 8002
    retargeting_port: int = 8003
    mail_smtp_port: int = 1025
    mail_web_port: int = 8025
    # Unset: the local mail sink catches campaign e-mails.
    smtp_host: str | None = None
    host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, env: Env) -> DevConfig:
        return cls(
            var_dir=Path(env.text("FUNNEL_VAR_DIR", "var")).resolve(),
            bootstrap_servers=env.optional("KAFKA_BOOTSTRAP_SERVERS"),
            broker_port=env.integer("FUNNEL_BROKER_PORT", 9092),
            intake_port=env.integer("FUNNEL_INTAKE_PORT", 8001),
            scoring_port=env.integer("FUNNEL_SCORING_PORT", 8002),
            retargeting_port=env.integer("FUNNEL_RETARGETING_PORT", 8003),
            mail_smtp_port=env.integer("RETARGETING_SMTP_PORT", 1025),
            mail_web_port=env.integer("FUNNEL_MAIL_PAGE_PORT", 8025),
            smtp_host=env.optional("RETARGETING_SMTP_HOST"),
        )


def base_url(config: DevConfig) -> str:
    return f"http://{config.host}"


def dev_credentials(env: Env, var_dir: Path) -> dict[str, str]:
    """The four credentials: from the environment, else kept random ones."""
    path = var_dir / "dev-credentials.json"
    kept: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    creds = {}
    for name in CREDENTIALS:
        creds[name] = env.optional(name) or kept.get(name) or secrets.token_urlsafe(24)
    if not all(env.optional(n) for n in CREDENTIALS):
        path.write_text(json.dumps({n: v for n, v in creds.items() if not env.optional(n)}))
        path.chmod(0o600)
    return creds


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Supervisor:
    children: list[Child]
    env: dict[str, str]
    log_dir: Path
    stopping: bool = False
    broker: EmbeddedBroker | None = None
    _logs: list = field(default_factory=list)

    def request_stop(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        self.stopping = True

    def start(self, child: Child) -> None:
        child.log_path = self.log_dir / f"{child.name}.log"
        out = child.log_path.open("ab")
        self._logs.append(out)
        child.process = subprocess.Popen(
            child.argv, env={**self.env, **child.env}, stdout=out, stderr=subprocess.STDOUT
        )

    def watch(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    code = child.process.returncode
                    child.restarts += 1
                    delay = min(2 ** min(child.restarts, 5), 30)
                    log.warning(
                        "%s exited with %s; restart in %ss (log: %s)",
                        child.name,
                        code,
                        delay,
                        child.log_path,
                    )
                    child.process = None
                    child.next_start = now + delay
                if child.process is None and now >= child.next_start:
                    self.start(child)
            time.sleep(0.2)

    def stop(self) -> None:
        running = {child.process: child.name for child in self.children if child.process}
        processes.stop(
            list(running),
            25,
            on_kill=lambda process: log.warning(
                "%s did not stop in time; killing", running[process]
            ),
        )
        if self.broker is not None:
            self.broker.stop()
        for f in self._logs:
            f.close()


def main() -> int:
    env = Env()
    configure_logging(env.text("FUNNEL_LOG_LEVEL", "INFO"))
    config = DevConfig.from_env(env)
    config.var_dir.mkdir(parents=True, exist_ok=True)
    log_dir = config.var_dir / "log"
    log_dir.mkdir(exist_ok=True)

    child_env = env.as_dict()
    child_env.update(dev_credentials(env, config.var_dir))
    child_env["FUNNEL_VAR_DIR"] = str(config.var_dir)

    broker = None
    if config.bootstrap_servers is None:
        if port_open("127.0.0.1", config.broker_port):
            log.error(
                "port %d is taken: stop what runs there or set FUNNEL_BROKER_PORT",
                config.broker_port,
            )
            return 2
        broker = EmbeddedBroker(config.broker_port, log_dir / "broker.log").start()
        child_env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    child_env.pop("PYTHONPATH", None)
    child_env.setdefault("PYTHONUNBUFFERED", "1")

    initialise(Env(child_env))

    py = sys.executable

    def api(name: str, module: str, port: int) -> Child:
        return Child(
            name,
            [
                py,
                "-m",
                "gunicorn",
                "-c",
                str(GUNICORN_CONF),
                "-b",
                f"{config.host}:{port}",
                f"{module}.wsgi:app",
            ],
        )

    # Links in e-mails point at this machine's member-retargeting.
    child_env.setdefault(
        "RETARGETING_PUBLIC_URL", f"http://{config.host}:{config.retargeting_port}"
    )
    mail_sink = []
    if config.smtp_host is None:
        mail_sink.append(
            Child(
                "mail-sink",
                [
                    py,
                    "-m",
                    "deploy.mailsink",
                    "--host",
                    config.host,
                    "--smtp-port",
                    str(config.mail_smtp_port),
                    "--web-port",
                    str(config.mail_web_port),
                ],
            )
        )
    mail_page = (
        f"{base_url(config)}:{config.mail_web_port}   (SMTP {config.host}:{config.mail_smtp_port})"
        if config.smtp_host is None
        else f"campaign e-mail goes to {config.smtp_host}"
    )

    # Each service's processes (API workers, consumer, relay, scheduler, dispatcher) write
    # their metrics to one directory; the API's /metrics adds them up (shared.metrics).
    metrics_dir = config.var_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # a previous run's files would count
    for service in ("traffic_intake", "lead_scoring", "member_retargeting"):
        (metrics_dir / service).mkdir(parents=True)

    def metrics_of(service: str) -> dict[str, str]:
        return {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / service)}

    supervisor = Supervisor(
        children=[
            api("traffic-intake-api", "services.traffic_intake", config.intake_port),
            api("lead-scoring-api", "services.lead_scoring", config.scoring_port),
            api("member-retargeting-api", "services.member_retargeting", config.retargeting_port),
            Child("traffic-intake-relay", [py, "-m", "services.traffic_intake", "relay"]),
            Child("traffic-intake-consumer", [py, "-m", "services.traffic_intake", "consume"]),
            Child("lead-scoring-consumer", [py, "-m", "services.lead_scoring", "consume"]),
            Child(
                "member-retargeting-consumer", [py, "-m", "services.member_retargeting", "consume"]
            ),
            Child(
                "member-retargeting-scheduler",
                [py, "-m", "services.member_retargeting", "schedule"],
            ),
            Child(
                "member-retargeting-dispatcher",
                [py, "-m", "services.member_retargeting", "dispatch"],
            ),
            *mail_sink,
        ],
        env=child_env,
        log_dir=log_dir,
        broker=broker,
    )
    for child in supervisor.children:
        for service in ("traffic_intake", "lead_scoring", "member_retargeting"):
            if any(arg.startswith(f"services.{service}") for arg in child.argv):
                child.env.update(metrics_of(service))
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    for child in supervisor.children:
        supervisor.start(child)

    base = base_url(config)
    print(
        f"""
Funnel is running (logs in {log_dir}).
  traffic-intake      {base}:{config.intake_port}   docs {base}:{config.intake_port}/docs
  lead-scoring        {base}:{config.scoring_port}   docs {base}:{config.scoring_port}/docs
                      sales pages {base}:{config.scoring_port}/app/ (sign in: sales token)
  member-retargeting  {base}:{config.retargeting_port}   docs {base}:{config.retargeting_port}/docs
                      marketing pages {base}:{config.retargeting_port}/app/ (marketing token)
  caught e-mails      {mail_page}
  Kafka               {child_env["KAFKA_BOOTSTRAP_SERVERS"]}{" (embedded)" if broker else ""}

Dev credentials:
  write key        {child_env["FUNNEL_WRITE_KEY"]}   (HTTP Basic user name, empty password)
  sales token      {child_env["FUNNEL_SALES_TOKEN"]}
  marketing token  {child_env["FUNNEL_MARKETING_TOKEN"]}
  admin token      {child_env["FUNNEL_ADMIN_TOKEN"]}

Try:
  curl -u {child_env["FUNNEL_WRITE_KEY"]}: {base}:{config.intake_port}/v1/track \\
       -H 'Content-Type: application/json' -d '{{"anonymousId":"a1","event":"Signed Up"}}'
  curl -H 'Authorization: Bearer {child_env["FUNNEL_SALES_TOKEN"]}' \\
       {base}:{config.scoring_port}/leads
Ctrl-C stops everything.""",
        flush=True,
    )
    try:
        supervisor.watch()
    finally:
        log.info("stopping")
        supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
